//! Operating-system specifics behind one small interface: `linux.rs` and `windows/` offer
//! the same functions, and `winpath` (pure, compiled everywhere so its units run on Linux)
//! holds the Windows name and path rules.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

#[cfg(windows)]
pub mod windows;
#[cfg(windows)]
pub use windows::*;

pub mod reparse;
pub mod winpath;
