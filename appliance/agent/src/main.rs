//! `abri-agent`: the program on a protected machine. See `cli` for the commands; the
//! library crate holds the engine.

use abri_agent::cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
