//! abrid: the supervisor of an Abri backup box.
//!
//! It boots the box's identity and state (`boot`), then serves the console and the API over
//! HTTPS, redirects plain HTTP, announces the box over mDNS and follows address changes.

mod accounts;
mod app;
mod backups;
mod boot;
mod boxinfo;
mod cli;
mod datadisk;
mod errors;
mod firmware;
mod http;
mod identity;
mod image_browse;
mod installers;
mod jobs;
mod machines;
mod mailer;
mod maintenance;
mod schedule;
mod secrets;
mod service;
mod settings;
mod snapshot_files;
mod snapshot_images;
mod state;
mod throttle;
mod tls;
mod ui;

use anyhow::{Context, Result};
use app::App;
use axum_server::tls_rustls::RustlsConfig;
use clap::Parser;
use cli::{Cli, Command, ResetArgs, ServeArgs};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ABRI_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::ResetPassword(args)) => reset_password(args),
        None => serve(cli.serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("abrid: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn reset_password(args: ResetArgs) -> Result<()> {
    let factory = boot::factory_for_reset(&args.state_dir, args.factory.as_deref())?;
    let db_dir = boot::db_dir(&args.state_dir);
    if !db_dir.exists() {
        anyhow::bail!(
            "no box state in {}: is this the right --state-dir?",
            args.state_dir.display()
        );
    }
    let db = state::Db::open(&db_dir)?;
    eprint!("claim code: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the claim code from stdin")?;
    let password = accounts::reset_password(&db, &factory, line.trim())?;
    println!("user: admin");
    println!("password: {password}");
    Ok(())
}

/// Addresses the certificate and the console show: the primary interface's on the
/// appliance, every interface's in dev mode.
fn current_addresses(app_interface: Option<&str>, dev: bool) -> Vec<IpAddr> {
    abri_host::lan_addresses(if dev { None } else { app_interface })
}

fn serve(args: ServeArgs) -> Result<()> {
    let factory = boot::load_factory(&args.state_dir, args.factory.as_deref(), args.dev)?;
    let booted = boot::boot(
        &args.state_dir,
        &factory.data,
        args.mac.as_deref(),
        args.interface.as_deref(),
        args.dev,
        // A development box never formats a disk.
        args.adopt_disks && !args.dev,
    )?;
    let addresses = current_addresses(booted.identity.interface.as_deref(), args.dev);
    let names = tls::ServerNames::for_box(
        &booted.identity.hostname,
        booted.identity.fqdn.as_deref(),
        &addresses,
    );
    let tls_config = booted.ca.server_config(&names)?;
    let mut app = App::new(
        booted,
        factory.data,
        args.state_dir.clone(),
        args.dev,
        addresses,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    app.installers_dir = args.installers.clone();
    let app = Arc::new(app);
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(run(app, args, tls_config, factory.dev_claim_code))
}

async fn run(
    app: Arc<App>,
    args: ServeArgs,
    tls_config: Arc<rustls::ServerConfig>,
    dev_claim_code: Option<String>,
) -> Result<()> {
    let rustls_config = RustlsConfig::from_config(tls_config);
    let handle = axum_server::Handle::new();
    let https = http::listener::https_server(args.https, rustls_config.clone())
        .handle(handle.clone())
        .serve(http::router(app.clone()).into_make_service_with_connect_info::<SocketAddr>());
    let redirect_handle = axum_server::Handle::new();
    let plain = axum_server::bind(args.http)
        .handle(redirect_handle.clone())
        .serve(
            http::redirector(
                args.https.port(),
                format!("{}.local", app.identity.hostname),
            )
            .into_make_service(),
        );
    let https_task = tokio::spawn(https);
    let plain_task = tokio::spawn(plain);

    let listening = tokio::time::timeout(Duration::from_secs(10), handle.listening()).await;
    let Ok(Some(bound)) = listening else {
        let why = match https_task.await {
            Ok(Err(e)) => e.to_string(),
            _ => "it did not start listening".into(),
        };
        anyhow::bail!("cannot serve HTTPS on {}: {why}", args.https);
    };

    if !args.no_mdns {
        let config = abri_host::AnnounceConfig {
            hostname: app.identity.hostname.clone(),
            port: bound.port(),
            version: app::VERSION.to_string(),
            activated: app.is_activated()?,
            fingerprint: app.ca.fingerprint().to_string(),
            interface: if args.dev {
                None
            } else {
                app.identity.interface.clone()
            },
            listen: Some(bound.ip()),
        };
        match abri_host::Announcer::start(config) {
            Ok(announcer) => {
                if let Ok(mut slot) = app.announcer.lock() {
                    *slot = Some(announcer);
                }
            }
            Err(e) => tracing::warn!(
                "mDNS announcement failed, the box is reachable by address only: {e}"
            ),
        }
    }

    print_banner(&app, bound, dev_claim_code.as_deref());
    service::notify_ready(&format!("serving {}", app.identity.hostname));
    tokio::spawn(service::watchdog(app.clone()));
    if args.adopt_disks && !args.dev {
        tokio::spawn(datadisk::watch(app.db.clone()));
    }
    tokio::spawn(watch_addresses(app.clone(), rustls_config, args.dev));
    tokio::spawn(backups::scheduler(app.clone()));
    tokio::spawn(maintenance::daily(app.clone()));

    tokio::select! {
        r = https_task => r.context("HTTPS server task")?.with_context(|| format!("HTTPS server on {}", args.https))?,
        r = plain_task => r.context("HTTP server task")?.with_context(|| format!("cannot serve HTTP on {}", args.http))?,
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    service::notify_stopping();
    handle.graceful_shutdown(Some(Duration::from_secs(5)));
    redirect_handle.graceful_shutdown(Some(Duration::from_secs(1)));
    let announcer = app.announcer.lock().ok().and_then(|mut a| a.take());
    if let Some(announcer) = announcer {
        let _ = tokio::task::spawn_blocking(move || announcer.shutdown()).await;
    }
    Ok(())
}

fn print_banner(app: &App, bound: SocketAddr, dev_claim_code: Option<&str>) {
    let host = if bound.ip().is_unspecified() {
        format!("{}.local", app.identity.hostname)
    } else {
        match bound.ip() {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        }
    };
    let port = if bound.port() == 443 {
        String::new()
    } else {
        format!(":{}", bound.port())
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "box: {}", app.identity.hostname);
    if let Some(fqdn) = &app.identity.fqdn {
        let _ = writeln!(out, "fqdn: {fqdn}");
    }
    let _ = writeln!(out, "console: https://{host}{port}/");
    let _ = writeln!(out, "fingerprint: {}", app.ca.fingerprint());
    if let Some(code) = dev_claim_code
        && !app.is_activated().unwrap_or(false)
    {
        let _ = writeln!(out, "claim code: {code}");
    }
    let _ = out.flush();
}

/// Re-issues the certificate when the box's addresses change.
async fn watch_addresses(app: Arc<App>, rustls_config: RustlsConfig, dev: bool) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    tick.tick().await;
    loop {
        tick.tick().await;
        let interface = app.identity.interface.clone();
        let now = current_addresses(interface.as_deref(), dev);
        if now == app.addresses() {
            continue;
        }
        tracing::info!(addresses = ?now, "the box's addresses changed");
        let names =
            tls::ServerNames::for_box(&app.identity.hostname, app.identity.fqdn.as_deref(), &now);
        match app.ca.server_config(&names) {
            Ok(config) => rustls_config.reload_from_config(config),
            Err(e) => tracing::warn!("cannot re-issue the server certificate: {e:#}"),
        }
        if let Ok(mut a) = app.addresses.write() {
            *a = now;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
