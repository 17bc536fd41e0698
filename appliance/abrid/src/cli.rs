//! abrid's command line (a contract the system tests and the image's units rely on).

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "abrid", version, about = "The Abri backup box supervisor")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Issue a new admin password; needs the claim code (read on stdin) and a shell on the box.
    ResetPassword(ResetArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Where the box keeps its state (database, certificates).
    #[arg(long, default_value = "/data/abri")]
    pub state_dir: PathBuf,
    /// Address and port of the HTTPS console and API (default: every IPv4 and IPv6 address).
    #[arg(long, default_value = "[::]:443")]
    pub https: SocketAddr,
    /// Address and port of the plain HTTP listener, which only redirects to HTTPS.
    #[arg(long, default_value = "[::]:80")]
    pub http: SocketAddr,
    /// The factory file (claim-code hash, partner defaults). In dev mode a development one is
    /// created in the state directory when absent.
    #[arg(long)]
    pub factory: Option<PathBuf>,
    /// Use this MAC instead of the primary interface's (tests, dev mode).
    #[arg(long)]
    pub mac: Option<String>,
    /// Use this interface as the primary one instead of the documented rule.
    #[arg(long)]
    pub interface: Option<String>,
    /// Development mode: never change the system hostname; a development factory file.
    #[arg(long)]
    pub dev: bool,
    /// Do not announce the box over mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// Adopt a blank second disk as the backup store, and offer other disks for adoption
    /// in the console (the appliance's unit sets it; never on a general-purpose machine).
    #[arg(long)]
    pub adopt_disks: bool,
    /// Where the agent installers the console hands out are (`abri-agent.msi`, made into a
    /// kit per enrolment token).
    #[arg(long, default_value = crate::installers::DEFAULT_DIR)]
    pub installers: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ResetArgs {
    #[arg(long, default_value = "/data/abri")]
    pub state_dir: PathBuf,
    #[arg(long)]
    pub factory: Option<PathBuf>,
}
