//! `abri-provision factory`: one box's factory file (and label) with a fresh claim code.
//!
//! The claim code exists in clear only in this command's output and on the label: the file
//! holds its Argon2id hash. Nothing is written unless every input is valid and no output
//! would be overwritten (without `--force`); the label is written first so that a failure
//! never leaves a factory file whose code nobody saw.

use crate::label;
use crate::mac::MacAddress;
use abri_factory::{ClaimCode, FACTORY_FORMAT_VERSION, FactoryData, Partner, SmtpRelay};
use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct FactoryArgs {
    /// Factory file to write (TOML, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// Partner's company name.
    #[arg(long, value_name = "NAME")]
    pub partner_name: Option<String>,
    /// Receives the admin password at activation (needs a mail relay).
    #[arg(long, value_name = "EMAIL")]
    pub partner_email: Option<String>,
    /// Partner's DNS domain: the box also answers as backup.xxxx.<DOMAIN>.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Default console language.
    #[arg(long, value_enum)]
    pub language: Option<Language>,
    /// Time zone, e.g. Europe/Paris.
    #[arg(long, value_name = "TZ")]
    pub timezone: Option<String>,
    /// Mail relay host.
    #[arg(long, value_name = "HOST", requires = "smtp_sender")]
    pub smtp_host: Option<String>,
    /// Mail relay port [default: 587 for starttls, 465 for tls, 25 for none].
    #[arg(long, value_name = "PORT", requires = "smtp_host")]
    pub smtp_port: Option<u16>,
    /// Mail relay transport security [default: starttls].
    #[arg(long, value_enum, value_name = "MODE", requires = "smtp_host")]
    pub smtp_security: Option<Security>,
    /// Mail relay user name.
    #[arg(long, value_name = "USER", requires = "smtp_host")]
    pub smtp_user: Option<String>,
    /// File holding the mail relay password (kept off the command line).
    #[arg(long, value_name = "FILE", requires = "smtp_host")]
    pub smtp_password_file: Option<PathBuf>,
    /// From address of the box's mail.
    #[arg(long, value_name = "ADDRESS", requires = "smtp_host")]
    pub smtp_sender: Option<String>,
    /// The box's MAC address, to print its name (backup-xxxx) on the label.
    #[arg(long, value_name = "MAC")]
    pub mac: Option<MacAddress>,
    /// Also write the box label (SVG) to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub label: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Language {
    Fr,
    En,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Security {
    Starttls,
    Tls,
    None,
}

impl Security {
    fn to_factory(self) -> abri_factory::SmtpSecurity {
        match self {
            Security::Starttls => abri_factory::SmtpSecurity::Starttls,
            Security::Tls => abri_factory::SmtpSecurity::Tls,
            Security::None => abri_factory::SmtpSecurity::None,
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Security::Starttls => 587,
            Security::Tls => 465,
            Security::None => 25,
        }
    }
}

/// What the command made; printed once, then the claim code exists only on the label.
#[derive(Debug, Serialize)]
pub struct FactoryOutcome {
    pub claim_code: String,
    pub factory: String,
    pub label: Option<String>,
    pub box_name: Option<String>,
}

/// Generates a claim code and writes the factory file and the label.
pub fn run(args: &FactoryArgs) -> Result<FactoryOutcome> {
    refuse_overwrite(&args.out, args.force, "factory file")?;
    if let Some(label) = &args.label {
        if label == &args.out {
            bail!(
                "--label and --out both name {}; give two files",
                label.display()
            );
        }
        refuse_overwrite(label, args.force, "label")?;
    }
    let code = ClaimCode::generate();
    let data = FactoryData {
        format: FACTORY_FORMAT_VERSION,
        claim_code_hash: code
            .hash()
            .map_err(|e| anyhow::anyhow!("cannot hash the claim code with Argon2id: {e}"))?,
        partner: Partner {
            name: args.partner_name.clone(),
            email: args.partner_email.clone(),
            domain: args.domain.clone(),
            language: args.language.map(|l| match l {
                Language::Fr => "fr".to_string(),
                Language::En => "en".to_string(),
            }),
            timezone: args.timezone.clone(),
        },
        smtp: smtp_relay(args)?,
    };
    data.validate().map_err(|message| {
        anyhow::anyhow!(
            "the factory data for {} is not valid: {message}",
            args.out.display()
        )
    })?;
    let box_name = args.mac.map(|mac| mac.box_name());
    if let Some(path) = &args.label {
        let svg = label::render_label(&code, box_name.as_deref())?;
        write_new_file(path, svg.as_bytes(), args.force)
            .with_context(|| format!("cannot write the label {}", path.display()))?;
    }
    if let Err(e) = data.write(&args.out) {
        if let Some(path) = &args.label {
            // The label would name a code no box knows.
            let _ = std::fs::remove_file(path);
        }
        return Err(e.into());
    }
    Ok(FactoryOutcome {
        claim_code: code.as_str().to_string(),
        factory: args.out.display().to_string(),
        label: args.label.as_ref().map(|p| p.display().to_string()),
        box_name,
    })
}

pub fn render(o: &FactoryOutcome) -> String {
    let mut text = format!("Claim code:    {}\n", o.claim_code);
    if let Some(name) = &o.box_name {
        text.push_str(&format!("Box:           {name}\n"));
    }
    text.push_str(&format!("Factory file:  {}\n", o.factory));
    if let Some(label) = &o.label {
        text.push_str(&format!("Label:         {label}\n"));
    }
    text.push_str(
        "\nPrint the claim code on this box's label: the factory file holds only its hash, \
         so this output and the label are the only places it exists.\n",
    );
    text
}

fn smtp_relay(args: &FactoryArgs) -> Result<Option<SmtpRelay>> {
    let (Some(host), Some(sender)) = (&args.smtp_host, &args.smtp_sender) else {
        return Ok(None);
    };
    let security = args.smtp_security.unwrap_or(Security::Starttls);
    let password = match &args.smtp_password_file {
        Some(path) => Some(read_password(path)?),
        None => None,
    };
    Ok(Some(SmtpRelay {
        host: host.clone(),
        port: args.smtp_port.unwrap_or(security.default_port()),
        security: security.to_factory(),
        user: args.smtp_user.clone(),
        password,
        sender: sender.clone(),
    }))
}

/// The whole file but a final line break.
fn read_password(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the mail relay password file {}",
            path.display()
        )
    })?;
    let password = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if password.is_empty() {
        bail!("the mail relay password file {} is empty", path.display());
    }
    Ok(password.to_string())
}

fn refuse_overwrite(path: &Path, force: bool, what: &str) -> Result<()> {
    if !force && path.symlink_metadata().is_ok() {
        bail!(
            "{what} {} already exists (it may hold another box's claim code); choose another \
             file or pass --force to replace it",
            path.display()
        );
    }
    Ok(())
}

/// Writes through a temporary file in the same directory, then renames it into place
/// (or links it, which fails if the file appeared meanwhile, without `force`).
fn write_new_file(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    if force {
        tmp.persist(path)?;
    } else {
        tmp.persist_noclobber(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use abri_factory::code::verify_secret;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FactoryArgs,
    }

    fn args(extra: &[&str]) -> FactoryArgs {
        let argv = std::iter::once("factory").chain(extra.iter().copied());
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn writes_a_file_whose_hash_verifies_the_printed_code() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("factory.toml");
        let label = dir.path().join("label.svg");
        let password = dir.path().join("relay-password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let a = args(&[
            "--out",
            out.to_str().unwrap(),
            "--label",
            label.to_str().unwrap(),
            "--mac",
            "52:54:00:12:ab:cd",
            "--partner-name",
            "Acme IT",
            "--partner-email",
            "ops@acme.example",
            "--domain",
            "acme.example",
            "--language",
            "fr",
            "--timezone",
            "Europe/Paris",
            "--smtp-host",
            "smtp.acme.example",
            "--smtp-security",
            "tls",
            "--smtp-user",
            "box",
            "--smtp-password-file",
            password.to_str().unwrap(),
            "--smtp-sender",
            "backup@acme.example",
        ]);
        let outcome = run(&a).unwrap();
        assert_eq!(outcome.box_name.as_deref(), Some("backup-abcd"));
        assert_eq!(outcome.factory, out.display().to_string());
        let data = FactoryData::load(&out).unwrap();
        assert!(verify_secret(&outcome.claim_code, &data.claim_code_hash));
        assert!(!verify_secret("abcd-efgh-ijkm-npqr", &data.claim_code_hash));
        assert_eq!(data.partner.language.as_deref(), Some("fr"));
        assert_eq!(data.partner.timezone.as_deref(), Some("Europe/Paris"));
        let smtp = data.smtp.unwrap();
        assert_eq!(smtp.port, 465, "the tls default port");
        assert_eq!(smtp.password.as_deref(), Some("s3cret"));
        let toml = std::fs::read_to_string(&out).unwrap();
        assert!(
            !toml.contains(&outcome.claim_code),
            "no claim code in clear"
        );
        let svg = std::fs::read_to_string(&label).unwrap();
        assert!(svg.contains(&outcome.claim_code) && svg.contains("backup-abcd"));
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(json["claim_code"], outcome.claim_code.as_str());
        assert_eq!(json["label"], label.display().to_string());
    }

    #[test]
    fn a_minimal_file_and_fresh_codes() {
        let dir = tempfile::tempdir().unwrap();
        let one = dir.path().join("one.toml");
        let two = dir.path().join("two.toml");
        let a = run(&args(&["--out", one.to_str().unwrap()])).unwrap();
        let b = run(&args(&["--out", two.to_str().unwrap()])).unwrap();
        assert_ne!(a.claim_code, b.claim_code);
        assert!(ClaimCode::parse(&a.claim_code).is_some());
        assert_eq!(a.box_name, None);
        assert_eq!(a.label, None);
        let data = FactoryData::load(&one).unwrap();
        assert_eq!(data.partner, Partner::default());
        assert!(data.smtp.is_none());
    }

    #[test]
    fn refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("factory.toml");
        let first = run(&args(&["--out", out.to_str().unwrap()])).unwrap();
        let err = run(&args(&["--out", out.to_str().unwrap()])).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let data = FactoryData::load(&out).unwrap();
        assert!(
            verify_secret(&first.claim_code, &data.claim_code_hash),
            "the first box's file is intact"
        );

        let label = dir.path().join("label.svg");
        std::fs::write(&label, "old").unwrap();
        let other = dir.path().join("other.toml");
        let err = run(&args(&[
            "--out",
            other.to_str().unwrap(),
            "--label",
            label.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("label"), "{err}");
        assert!(!other.exists(), "nothing written when one output exists");

        let again = run(&args(&["--out", out.to_str().unwrap(), "--force"])).unwrap();
        let data = FactoryData::load(&out).unwrap();
        assert!(verify_secret(&again.claim_code, &data.claim_code_hash));
    }

    #[test]
    fn invalid_inputs_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("factory.toml");
        let label = dir.path().join("label.svg");
        let err = run(&args(&[
            "--out",
            out.to_str().unwrap(),
            "--label",
            label.to_str().unwrap(),
            "--partner-email",
            "nobody",
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("partner.email"), "{err}");
        assert!(!out.exists() && !label.exists());
    }

    #[test]
    fn the_command_line_checks_its_options() {
        for bad in [
            &["--out", "f", "--smtp-host", "h"][..],
            &["--out", "f", "--smtp-port", "25"],
            &["--out", "f", "--language", "de"],
            &["--out", "f", "--mac", "nope"],
            &["--label", "l.svg"],
        ] {
            let argv = std::iter::once("factory").chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
