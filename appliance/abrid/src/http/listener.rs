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
