//! The HTTPS listener's transport settings, which the console, the agents' command
//! connections and every chunk of a backup or restore ride on.
//!
//! - `TCP_NODELAY` on every accepted connection. Without it, Nagle's algorithm holds the
//!   short tail of each response (a chunk's last partial segment, an HTTP/2 `WINDOW_UPDATE`)
//!   until the previous segment is acknowledged, and the agent acknowledges late (delayed
//!   ACK): a cold restore of the bench's 3 GB took 5.2–9.7 s with Nagle and 4.5–5.2 s
//!   without, the CPUs idle while the two sides waited for each other.
//! - HTTP/2 frames of up to 1 MiB, so that an uploaded chunk (2 MiB on average) arrives
//!   in a few frames instead of a hundred of 16 KiB, each costing the box a wake-up.
//! - Adaptive flow-control windows, which grow with the connection's bandwidth-delay
//!   product instead of hyper's fixed 1 MiB that eight chunk uploads in flight share.

use std::net::SocketAddr;

use axum_server::Server;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

/// Largest HTTP/2 frame the box accepts.
const MAX_FRAME: u32 = 1 << 20;

/// The HTTPS server: TLS over connections with `TCP_NODELAY` set (the type says so).
pub type HttpsServer = Server<SocketAddr, RustlsAcceptor<NoDelayAcceptor>>;

/// The HTTPS server on `addr` with `tls`, tuned as the module documentation says.
pub fn https_server(addr: SocketAddr, tls: RustlsConfig) -> HttpsServer {
    let mut server =
        axum_server::bind(addr).acceptor(RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor));
    server
        .http_builder()
        .http2()
        .adaptive_window(true)
        .max_frame_size(MAX_FRAME);
    server
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{BoxCa, ServerNames};
    use std::os::fd::BorrowedFd;
    use std::time::Duration;

    /// The box's end of the connection from `client`, found among this process's sockets.
    fn accepted_end(server: SocketAddr, client: SocketAddr) -> Option<bool> {
        for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
            let is_socket = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if !is_socket {
                continue;
            }
            // SAFETY: `fd` was listed as open in this process just now, and nothing in this
            // test closes sockets while the search runs; the borrow ends with this iteration.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let socket = socket2::SockRef::from(&fd);
            let local = socket.local_addr().ok().and_then(|a| a.as_socket());
            let peer = socket.peer_addr().ok().and_then(|a| a.as_socket());
            if local == Some(server) && peer == Some(client) {
                return socket.tcp_nodelay().ok();
            }
        }
        None
    }

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_acks() {
        let dir = tempfile::tempdir().unwrap();
        let ca = BoxCa::load_or_create(dir.path(), "abri-test").unwrap();
        let tls = ca
            .server_config(&ServerNames::for_box("abri-test", None, &[]))
            .unwrap();
        let handle = axum_server::Handle::new();
        let server = https_server(
            "127.0.0.1:0".parse().unwrap(),
            RustlsConfig::from_config(tls),
        )
        .handle(handle.clone())
        .serve(axum::Router::new().into_make_service());
        let task = tokio::spawn(server);
        let bound = handle.listening().await.expect("the server listens");

        // The acceptor sets the option before the TLS handshake, so a bare TCP connection
        // shows it.
        let client = tokio::net::TcpStream::connect(bound).await.unwrap();
        assert!(
            !client.nodelay().unwrap(),
            "the client's own end keeps the default"
        );
        let client_addr = client.local_addr().unwrap();
        let mut nodelay = None;
        for _ in 0..200 {
            nodelay = accepted_end(bound, client_addr);
            if nodelay.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(nodelay, Some(true), "TCP_NODELAY on the box's end");
        handle.shutdown();
        drop(client);
        let _ = task.await;
    }
}
