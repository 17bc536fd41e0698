//! `abri-provision`, the technician's tool: find Abri boxes on the LAN, activate one with the
//! claim code on its label, read a box's status, and (at the factory) write a box's factory
//! file and label.
//!
//! Every command prints plain text, or JSON with `--json`; failures exit with a code per kind
//! (see `output::EXIT_CODES_HELP`). Connections to a box trust only its own CA, named by the
//! SHA-256 fingerprint advertised on mDNS or given with `--fingerprint`.

mod activate_cmd;
mod client;
mod discover;
mod discover_cmd;
mod factory_cmd;
mod label;
mod mac;
mod output;
mod resolve;
mod status_cmd;
mod target;
#[cfg(test)]
mod tls_tests;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "abri-provision",
    version,
    about = "Discover, activate and prepare Abri backup boxes",
    after_help = output::EXIT_CODES_HELP
)]
struct Cli {
    /// Print the result (or the error) as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the boxes answering on this LAN (mDNS).
    Discover(discover_cmd::DiscoverArgs),
    /// Activate a new box with its claim code and show its admin password, once.
    Activate(activate_cmd::ActivateArgs),
    /// Show what a box says about itself.
    Status(resolve::BoxArgs),
    /// Write a box's factory file (and label) with a fresh claim code.
    Factory(factory_cmd::FactoryArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => ExitCode::from(output::report_failure(cli.json, &err)),
    }
}

fn run(cli: &Cli) -> Result<()> {
    let json = cli.json;
    match &cli.command {
        Command::Factory(args) => {
            let outcome = factory_cmd::run(args)?;
            output::emit(json, &outcome, factory_cmd::render)
        }
        Command::Discover(args) => {
            let boxes = runtime()?.block_on(discover_cmd::run(args))?;
            output::emit(json, &boxes, |b| discover_cmd::render(b, args.timeout))
        }
        Command::Activate(args) => {
            let activation = runtime()?.block_on(activate_cmd::run(args))?;
            output::emit(json, &activation, activate_cmd::render)
        }
        Command::Status(args) => {
            let (endpoint, status) = runtime()?.block_on(status_cmd::run(args))?;
            output::emit(json, &status, |s| status_cmd::render(&endpoint, s))
        }
    }
}

/// One thread is plenty for one box; mDNS browsing runs on the blocking pool.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_is_accepted_after_every_command() {
        for argv in [
            &["abri-provision", "discover", "--json", "--timeout", "1"][..],
            &["abri-provision", "--json", "status", "backup-abcd"],
            &[
                "abri-provision",
                "activate",
                "backup-abcd",
                "--claim-code",
                "x",
                "--json",
                "--fingerprint",
                "ab",
            ],
            &["abri-provision", "factory", "--out", "f", "--json"],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert!(cli.json, "{argv:?}");
        }
        assert!(Cli::try_parse_from(["abri-provision", "discover", "--timeout", "0"]).is_err());
        assert!(Cli::try_parse_from(["abri-provision", "discover", "--timeout", "61"]).is_err());
    }
}
