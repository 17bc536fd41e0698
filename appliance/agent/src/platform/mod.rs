//! Operating-system specifics behind one small interface: Linux now, Windows later (a
//! `windows.rs` with the same functions slots in here).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;
