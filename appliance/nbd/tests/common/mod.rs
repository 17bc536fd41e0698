//! Helpers for the integration tests: Debian's qemu tools, run for real.

#![allow(dead_code)] // Each test file uses its own subset.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use abri_nbd::{Address, Client, ConnectOptions, NbdError};

/// How long any wait in these tests may last.
pub const WAIT: Duration = Duration::from_secs(20);

/// Runs a command that must succeed; returns its stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is qemu-utils installed?): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn qemu_io(image: &Path, commands: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in commands {
        args.extend(["-c", c]);
    }
    let image = image.to_str().expect("temp paths are UTF-8");
    args.push(image);
    run("qemu-io", &args);
}

/// A `qemu-nbd` serving one image on a Unix socket as export `disk`; killed on drop.
pub struct QemuNbd {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl QemuNbd {
    /// Starts `qemu-nbd --read-only` on `image`, plus `extra` arguments, and waits (at most
    /// [`WAIT`]) for its socket to appear.
    pub fn start(dir: &Path, image: &Path, format: &str, extra: &[&str]) -> QemuNbd {
        let socket = dir.join("nbd.sock");
        let log = dir.join("qemu-nbd.log");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("qemu-nbd")
            .arg("--read-only")
            .arg(format!("--format={format}"))
            .arg("--export-name=disk")
            .arg(format!("--socket={}", socket.display()))
            .args(extra)
            .arg(image)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the qemu-nbd log"))
            .spawn()
            .expect("start qemu-nbd (is qemu-utils installed?)");
        let mut nbd = QemuNbd { child, socket, log };
        let deadline = Instant::now() + WAIT;
        while !nbd.socket.exists() {
            if let Some(status) = nbd.child.try_wait().expect("poll qemu-nbd") {
                panic!("qemu-nbd exited ({status}): {}", nbd.log_text());
            }
            assert!(Instant::now() < deadline, "qemu-nbd socket never appeared");
            sleep(Duration::from_millis(20));
        }
        nbd
    }

    pub fn address(&self) -> Address {
        Address::unix(&self.socket, "disk")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Connects, retrying (within [`WAIT`]) while the socket exists but is not listening yet.
    pub fn connect(&self, contexts: &[&str]) -> Client {
        connect_to(&self.address(), contexts)
            .unwrap_or_else(|e| panic!("connect: {e}; qemu-nbd said: {}", self.log_text()))
    }

    /// Waits (at most [`WAIT`]) for qemu-nbd to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll qemu-nbd") {
                return status;
            }
            assert!(Instant::now() < deadline, "qemu-nbd did not exit");
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options for tests: every socket operation bounded by [`WAIT`].
pub fn options(contexts: &[&str]) -> ConnectOptions {
    ConnectOptions {
        meta_contexts: contexts.iter().map(|c| c.to_string()).collect(),
        io_timeout: Some(WAIT),
    }
}

pub fn connect_to(address: &Address, contexts: &[&str]) -> Result<Client, NbdError> {
    let deadline = Instant::now() + WAIT;
    loop {
        match Client::connect_with(address, &options(contexts)) {
            Err(NbdError::Connect { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Deterministic bytes that do not compress to zeros (xorshift).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
