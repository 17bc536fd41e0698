//! `abri-agent`: the program on a protected machine. See `cli` for the commands; the
//! library crate holds the engine.

use abri_agent::cli;

fn main() -> std::process::ExitCode {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    limit_malloc_arenas();
    cli::main()
}

/// glibc gives every thread that allocates its own arena (up to 8 per CPU), and an arena
/// keeps what its thread freed, up to the size of the largest block it saw. A backup's and a
/// restore's threads each handle chunks of megabytes, so each kept about 10 MiB: a restore
/// with four fetching threads peaked at 146–152 MiB, and at 132–137 MiB with two arenas
/// shared by all threads (same speed on the bench, 2026-11-23).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    const ARENAS: libc::c_int = 2;
    // SAFETY: mallopt only sets a malloc tunable; it is called before any other thread
    // exists. A refusal (0) leaves glibc's default, which is merely less frugal.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}
