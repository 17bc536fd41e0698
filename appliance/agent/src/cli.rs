//! The command line: parsing, running each command, printing text or `--json`.

use abri_proto::agent::{JobEnd, StartJob};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::backup::BackupError;
use crate::client::BoxClient;
use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH};
use crate::enroll::{EnrollOptions, enroll};
use crate::image::restore::ImageRestoreOptions;
use crate::progress::{Counters, Display, human_bytes};
use crate::remote::{JobError, backup_job, image_restore_job, restore_job};
use crate::restore::{RestoreOptions, selection_paths};
use crate::state::{JobLock, LastJob, load_last_job, save_last_job};

#[derive(Parser)]
#[command(
    name = "abri-agent",
    version,
    about = "Back up this machine to its Abri box"
)]
struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "ABRI_AGENT_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Print JSON (for scripts) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enrol this machine with a box (once).
    #[command(alias = "enrol")]
    Enroll {
        /// `auto` (find the box over mDNS) or the box's URL.
        #[arg(long = "box")]
        box_arg: String,
        /// The enrolment token from the console.
        #[arg(long)]
        token: String,
        /// The box CA fingerprint (needed unless --box auto finds it).
        #[arg(long)]
        fingerprint: Option<String>,
        /// Local state directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Enrol again even if this machine already is.
        #[arg(long)]
        force: bool,
    },
    /// Run as a service: carry out what the box asks (backups on its schedule, restores).
    Run,
    /// Back up now.
    Backup {
        /// Start the backup now (the box otherwise schedules backups itself).
        #[arg(long, required = true)]
        now: bool,
        /// The plan to run.
        #[arg(long, default_value = "files")]
        plan: String,
        /// Re-read every file instead of trusting unchanged metadata.
        #[arg(long)]
        full: bool,
    },
    /// Restore a snapshot (or some paths of it) to a directory or to the original place.
    Restore {
        /// Snapshot id, or `latest`.
        snapshot: String,
        /// Paths to restore (all when none), e.g. /home/ann/notes.
        paths: Vec<String>,
        /// Directory to restore into (`/` for the original place).
        #[arg(
            long,
            required_unless_present = "in_place",
            conflicts_with = "in_place"
        )]
        to: Option<PathBuf>,
        /// Restore to the original place (same as --to /).
        #[arg(long)]
        in_place: bool,
        /// Replace existing files (otherwise they are left alone and counted).
        #[arg(long)]
        overwrite: bool,
        /// From an image snapshot: the image holding the volume (paths are then paths of
        /// that volume's file system, e.g. /home/ann).
        #[arg(long, requires = "volume")]
        image: Option<String>,
        /// From an image snapshot: the volume (partition number; 0 without partitions).
        #[arg(long, requires = "image")]
        volume: Option<u32>,
    },
    /// Restore a disk or volume image to a block device or an image file (Windows: a file).
    RestoreImage {
        /// Image snapshot id, or `latest`.
        snapshot: String,
        /// Which image of the snapshot (needed when it holds several).
        #[arg(long)]
        image: Option<String>,
        /// Target block device (not mounted, large enough) or image file.
        #[arg(long)]
        to: PathBuf,
        /// Replace an existing image file.
        #[arg(long)]
        overwrite: bool,
    },
    /// List this machine's snapshots.
    Snapshots,
    /// Show enrolment, the box's reachability and the last job.
    Status,
    /// Run as the Windows service (the service manager starts this; see docs/windows.md).
    #[cfg(windows)]
    #[command(hide = true)]
    Service,
}

/// Parses the command line, runs it, prints errors; the process's exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    #[cfg(windows)]
    if matches!(cli.command, Cmd::Service) {
        return crate::platform::windows::service::main(cli.config);
    }
    let default_level = if matches!(cli.command, Cmd::Run) {
        "info"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("abri-agent: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json {
                let body = serde_json::json!({ "error": e.to_string() });
                println!("{body}");
            } else {
                eprintln!("abri-agent: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn load(path: &std::path::Path) -> Result<(AgentConfig, BoxClient)> {
    let config = AgentConfig::load(path)?;
    let client = BoxClient::from_config(&config)?;
    Ok((config, client))
}

/// Sets the cancel flag on Ctrl-C (the job then stops cleanly and tells the box).
fn cancel_on_ctrl_c(counters: Arc<Counters>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("abri-agent: cancelling…");
            counters.cancel.store(true, Ordering::Relaxed);
        }
    });
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Enroll {
            box_arg,
            token,
            fingerprint,
            state_dir,
            force,
        } => {
            let done = enroll(&EnrollOptions {
                box_arg,
                token,
                fingerprint,
                config_path: cli.config,
                state_dir,
                force,
            })
            .await?;
            if cli.json {
                print_json(&done)?;
            } else {
                println!(
                    "Enrolled as machine {} with {} ({}).\nBox fingerprint {} is pinned in {}.\n\
                     Start the service: abri-agent run",
                    done.machine_id,
                    done.box_hostname,
                    done.box_url,
                    abri_proto::pin::display_fingerprint(&done.fingerprint),
                    done.config.display()
                );
            }
            Ok(())
        }
        Cmd::Run => {
            let config = AgentConfig::load(&cli.config)?;
            crate::service::run(config).await?;
            Ok(())
        }
        Cmd::Backup { now, plan, full } => {
            if !now {
                bail!("the box schedules backups; use --now to start one yourself");
            }
            backup_now(&cli.config, plan, full, cli.json).await
        }
        Cmd::Restore {
            snapshot,
            paths,
            to,
            in_place,
            overwrite,
            image,
            volume,
        } => {
            let target = if in_place {
                PathBuf::from("/")
            } else {
                to.context("give --to DIR or --in-place")?
            };
            if let (Some(image), Some(volume)) = (image, volume) {
                if overwrite {
                    bail!("--overwrite is not supported for files from an image yet");
                }
                return restore_from_image(
                    &cli.config,
                    snapshot,
                    image,
                    volume,
                    paths,
                    target,
                    cli.json,
                )
                .await;
            }
            restore(&cli.config, snapshot, paths, target, overwrite, cli.json).await
        }
        Cmd::RestoreImage {
            snapshot,
            image,
            to,
            overwrite,
        } => restore_image(&cli.config, snapshot, image, to, overwrite, cli.json).await,
        Cmd::Snapshots => {
            let (_, client) = load(&cli.config)?;
            let mut list = client.snapshots().await?;
            list.sort_by_key(|s| s.started);
            if cli.json {
                return print_json(&list);
            }
            if list.is_empty() {
                println!("No snapshots yet.");
            }
            for s in list {
                println!(
                    "{}  {:<6} {:<8} {:>8} files  {:>10}  {}",
                    s.id,
                    s.kind,
                    s.plan,
                    s.stats.files,
                    human_bytes(s.stats.bytes),
                    if s.full { "full" } else { "incremental" }
                );
            }
            Ok(())
        }
        Cmd::Status => status(&cli.config, cli.json).await,
        #[cfg(windows)]
        Cmd::Service => bail!("the service is started by the Windows service manager"),
    }
}

async fn backup_now(
    config_path: &std::path::Path,
    plan: String,
    full: bool,
    json: bool,
) -> Result<()> {
    let (config, client) = load(config_path)?;
    let _lock = JobLock::acquire(&config.state_dir)?;
    let started = client
        .start_job(&StartJob {
            plan: plan.clone(),
            full,
        })
        .await?;
    let mut spec = started.spec;
    spec.full |= full;
    let counters = Arc::new(Counters::default());
    cancel_on_ctrl_c(counters.clone());
    let display = Display::start(counters.clone(), "backup", json);
    let result = backup_job(&client, &config, &started.job_id, spec, counters).await;
    drop(display);
    let (status, error, snapshot) = match &result {
        Ok(r) => ("succeeded", None, Some(r.snapshot.id.clone())),
        Err(JobError::Backup(BackupError::Cancelled)) => ("cancelled", None, None),
        Err(e) => ("failed", Some(e.to_string()), None),
    };
    if result.is_err() {
        let end = JobEnd {
            status: status.into(),
            error: error.clone(),
        };
        if let Err(e) = client.finish(&started.job_id, &end).await {
            tracing::warn!("cannot report the end of the job to the box: {e}");
        }
    }
    save_last_job(
        &config.state_dir,
        &LastJob {
            job_id: started.job_id.clone(),
            kind: "backup".into(),
            status: status.into(),
            finished: unix_now(),
            snapshot,
            error,
        },
    );
    let report = result?;
    if json {
        return print_json(&report);
    }
    let s = &report.stats;
    if report.snapshot.kind == "image" {
        let images: Vec<String> = report
            .snapshot
            .images
            .iter()
            .map(|i| format!("{} ({}, read: {})", i.name, human_bytes(i.size), i.read))
            .collect();
        println!(
            "Image snapshot {} committed: {}; {} read, {} new in {} chunks{}",
            report.snapshot.id,
            images.join(", "),
            human_bytes(report.bytes_read),
            human_bytes(s.new_bytes),
            s.new_chunks,
            if report.warnings > 0 {
                format!(", {} warnings (see the job log)", report.warnings)
            } else {
                String::new()
            }
        );
        return Ok(());
    }
    println!(
        "Snapshot {} committed: {} files, {} dirs, {} ({} unchanged files not read), \
         {} new in {} chunks{}",
        report.snapshot.id,
        s.files,
        s.dirs,
        human_bytes(s.bytes),
        s.reused_files,
        human_bytes(s.new_bytes),
        s.new_chunks,
        if report.warnings > 0 {
            format!(", {} warnings (see the job log)", report.warnings)
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn restore(
    config_path: &std::path::Path,
    snapshot: String,
    paths: Vec<String>,
    target: PathBuf,
    overwrite: bool,
    json: bool,
) -> Result<()> {
    let (config, client) = load(config_path)?;
    let snapshot = if snapshot == "latest" {
        client
            .snapshots()
            .await?
            .into_iter()
            .filter(|s| s.kind == "files")
            .max_by_key(|s| s.started)
            .map(|s| s.id)
            .context("this machine has no snapshot yet")?
    } else {
        snapshot
    };
    let opts = RestoreOptions {
        target: target.clone(),
        paths: selection_paths(&paths)?,
        overwrite,
        as_root: crate::platform::is_root(),
    };
    let _lock = JobLock::acquire(&config.state_dir)?;
    let counters = Arc::new(Counters::default());
    cancel_on_ctrl_c(counters.clone());
    let display = Display::start(counters.clone(), "restore", json);
    let result = restore_job(&client, &config, None, &snapshot, opts, counters).await;
    drop(display);
    let report = result?;
    if json {
        return print_json(&serde_json::json!({
            "snapshot": snapshot,
            "target": target,
            "report": report,
        }));
    }
    println!(
        "Restored {} entries ({} files, {}) of snapshot {} to {}{}{}",
        report.entries,
        report.files,
        human_bytes(report.bytes),
        snapshot,
        target.display(),
        if report.skipped_existing > 0 {
            format!(
                "; {} existing files left alone (use --overwrite to replace them)",
                report.skipped_existing
            )
        } else {
            String::new()
        },
        if report.warnings > 0 {
            format!("; {} warnings", report.warnings)
        } else {
            String::new()
        }
    );
    Ok(())
}

async fn restore_from_image(
    config_path: &std::path::Path,
    snapshot: String,
    image: String,
    volume: u32,
    paths: Vec<String>,
    target: PathBuf,
    json: bool,
) -> Result<()> {
    let (config, client) = load(config_path)?;
    let _lock = JobLock::acquire(&config.state_dir)?;
    let counters = Arc::new(Counters::default());
    cancel_on_ctrl_c(counters.clone());
    let display = Display::start(counters.clone(), "restore", json);
    let volume_ref = abri_proto::agent::ImageVolumeRef { image, volume };
    let result = crate::remote::image_files_restore_job(
        &client,
        &config,
        None,
        &snapshot,
        &volume_ref,
        paths,
        target.clone(),
        counters,
    )
    .await;
    drop(display);
    let report = result?;
    if json {
        return print_json(&serde_json::json!({
            "snapshot": snapshot,
            "target": target,
            "report": report,
        }));
    }
    println!(
        "Restored {} entries ({} files, {}) from {} #{} of snapshot {} to {}",
        report.entries,
        report.files,
        human_bytes(report.bytes),
        volume_ref.image,
        volume_ref.volume,
        snapshot,
        target.display()
    );
    Ok(())
}

async fn restore_image(
    config_path: &std::path::Path,
    snapshot: String,
    image: Option<String>,
    target: PathBuf,
    overwrite: bool,
    json: bool,
) -> Result<()> {
    let (config, client) = load(config_path)?;
    let snapshot = if snapshot == "latest" {
        client
            .snapshots()
            .await?
            .into_iter()
            .filter(|s| s.kind == "image")
            .max_by_key(|s| s.started)
            .map(|s| s.id)
            .context("this machine has no image snapshot yet")?
    } else {
        snapshot
    };
    let _lock = JobLock::acquire(&config.state_dir)?;
    let counters = Arc::new(Counters::default());
    cancel_on_ctrl_c(counters.clone());
    let display = Display::start(counters.clone(), "restore", json);
    let opts = ImageRestoreOptions {
        target: target.clone(),
        overwrite,
    };
    let result = image_restore_job(
        &client,
        &config,
        &snapshot,
        image.as_deref(),
        opts,
        counters,
    )
    .await;
    drop(display);
    let report = result?;
    if json {
        return print_json(&serde_json::json!({ "snapshot": snapshot, "report": report }));
    }
    println!(
        "Restored image {} ({}) of snapshot {} to {}{}: {} written in {} verified chunks, {} \
         of holes",
        report.image,
        human_bytes(report.size),
        snapshot,
        target.display(),
        if report.device { " (device)" } else { "" },
        human_bytes(report.bytes_written),
        report.chunks,
        human_bytes(report.hole_bytes),
    );
    Ok(())
}

async fn status(config_path: &std::path::Path, json: bool) -> Result<()> {
    let config = AgentConfig::load(config_path)?;
    let client = BoxClient::from_config(&config)?;
    let snapshots = client.snapshots().await;
    let last_job = load_last_job(&config.state_dir);
    let (reachable, error, latest, count) = match &snapshots {
        Ok(list) => (
            true,
            None,
            list.iter().max_by_key(|s| s.started).cloned(),
            list.len(),
        ),
        Err(e) => (false, Some(e.to_string()), None, 0),
    };
    if json {
        return print_json(&serde_json::json!({
            "machine_id": config.machine_id,
            "box_url": config.box_url,
            "fingerprint": config.fingerprint,
            "box_reachable": reachable,
            "box_error": error,
            "snapshots": count,
            "latest_snapshot": latest,
            "last_job": last_job,
        }));
    }
    println!("Machine:     {}", config.machine_id);
    println!("Box:         {}", config.box_url);
    println!(
        "Fingerprint: {}",
        abri_proto::pin::display_fingerprint(&config.fingerprint)
    );
    match error {
        None => println!("Box status:  reachable, {count} snapshots"),
        Some(e) => println!("Box status:  NOT reachable: {e}"),
    }
    if let Some(s) = latest {
        println!(
            "Latest:      {} ({} files, {})",
            s.id,
            s.stats.files,
            human_bytes(s.stats.bytes)
        );
    }
    if let Some(j) = last_job {
        println!(
            "Last job:    {} {} {}{}",
            j.kind,
            j.job_id,
            j.status,
            j.error.map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    if !reachable {
        bail!("the box is not reachable");
    }
    Ok(())
}
