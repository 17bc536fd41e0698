//! How results and failures reach the technician: pretty JSON on stdout with `--json`, plain
//! text otherwise; failures as a sentence on stderr (and a JSON object on stdout with
//! `--json`), with an exit code per kind of failure so scripts can react.

use crate::activate_cmd::MistypedClaimCode;
use crate::client::ClientError;
use crate::resolve::ResolveError;
use crate::target::BadTarget;
use anyhow::Result;
use serde::Serialize;
use std::io::Write;

/// Exit codes, also listed in `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other failure (including an unexpected answer of the box)
  2  usage: bad option, BOX or fingerprint
  3  box not found on the LAN, or its fingerprint unknown
  4  box unreachable
  5  box certificate does not match the fingerprint
  6  claim code refused (or mistyped)
  7  throttled: too many wrong claim codes, retry later
  8  box already activated";

/// A failure as scripts see it: exit code, stable code, and the wait asked by the box.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub exit: u8,
    pub code: String,
    pub retry_after_seconds: Option<u64>,
}

impl Failure {
    fn new(exit: u8, code: &str) -> Self {
        Failure {
            exit,
            code: code.to_string(),
            retry_after_seconds: None,
        }
    }

    /// Finds the first error in the chain that says what kind of failure this is.
    pub fn classify(err: &anyhow::Error) -> Self {
        for cause in err.chain() {
            if cause.is::<MistypedClaimCode>() {
                return Failure::new(6, "bad_claim_code");
            }
            if cause.is::<BadTarget>() {
                return Failure::new(2, "usage");
            }
            if let Some(e) = cause.downcast_ref::<ResolveError>() {
                return match e {
                    ResolveError::BadFingerprint(_) => Failure::new(2, "usage"),
                    ResolveError::Lookup { .. } => Failure::new(4, "unreachable"),
                    ResolveError::Discover(_) => Failure::new(1, "failed"),
                    ResolveError::NotFound { .. }
                    | ResolveError::FingerprintUnknown { .. }
                    | ResolveError::NoAdvertisedFingerprint { .. }
                    | ResolveError::Ambiguous { .. } => Failure::new(3, "not_found"),
                };
            }
            if let Some(e) = cause.downcast_ref::<ClientError>() {
                return match e {
                    ClientError::Pin(_) => Failure::new(2, "usage"),
                    ClientError::Unreachable { .. } => Failure::new(4, "unreachable"),
                    ClientError::Untrusted { .. } => Failure::new(5, "untrusted"),
                    ClientError::BadClaimCode { .. } => Failure::new(6, "bad_claim_code"),
                    ClientError::Throttled {
                        retry_after_seconds,
                        ..
                    } => Failure {
                        retry_after_seconds: *retry_after_seconds,
                        ..Failure::new(7, "throttled")
                    },
                    ClientError::AlreadyActivated => Failure::new(8, "already_activated"),
                    ClientError::Api { error, .. } => Failure::new(1, error),
                    ClientError::Setup(_) | ClientError::BadAnswer { .. } => {
                        Failure::new(1, "failed")
                    }
                };
            }
        }
        Failure::new(1, "failed")
    }
}

/// Tells the technician (and a script) what went wrong; returns the exit code.
pub fn report_failure(json: bool, err: &anyhow::Error) -> u8 {
    let failure = Failure::classify(err);
    let message = format!("{err:#}");
    eprintln!("abri-provision: {message}");
    if json {
        let mut body = serde_json::json!({"error": failure.code, "message": message});
        if let Some(secs) = failure.retry_after_seconds {
            body["retry_after_seconds"] = secs.into();
        }
        // The process is failing anyway; stderr already has the message.
        let _ = print_json(&body);
    }
    failure.exit
}

/// Prints a result: as JSON with `--json`, else as the text `human` makes of it.
pub fn emit<T: Serialize>(json: bool, value: &T, human: impl FnOnce(&T) -> String) -> Result<()> {
    if json {
        print_json(value)
    } else {
        write_stdout(&human(value))
    }
}

pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_stdout(&text)
}

/// Writes to stdout without panicking when the reader went away (`| head`).
fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified_through_context() {
        let err = anyhow::Error::from(ClientError::Throttled {
            retry_after_seconds: Some(30),
            message: "slow".into(),
        })
        .context("activation of box backup-abcd failed");
        let failure = Failure::classify(&err);
        assert_eq!(failure.exit, 7);
        assert_eq!(failure.code, "throttled");
        assert_eq!(failure.retry_after_seconds, Some(30));

        let err = anyhow::Error::from(ClientError::AlreadyActivated).context("x");
        assert_eq!(Failure::classify(&err).exit, 8);
        let err = anyhow::Error::from(ResolveError::NotFound {
            name: "backup-abcd".into(),
            secs: 5,
        });
        assert_eq!(Failure::classify(&err).code, "not_found");
        let err = anyhow::Error::from(MistypedClaimCode);
        assert_eq!(Failure::classify(&err).exit, 6);
        let err = anyhow::Error::from(ClientError::Api {
            status: 422,
            error: "invalid".into(),
            message: "m".into(),
        });
        assert_eq!(Failure::classify(&err), Failure::new(1, "invalid"));
        assert_eq!(Failure::classify(&anyhow::anyhow!("disk full")).exit, 1);
    }
}
