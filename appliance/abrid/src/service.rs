//! Talking to the service manager (systemd) on the appliance: "ready" once the console
//! answers, and watchdog pings while the runtime is alive. Outside systemd (`NOTIFY_SOCKET`
//! unset: development, tests) every call does nothing.
//!
//! The image's unit is `Type=notify` with `WatchdogSec=`: systemd restarts abrid when the
//! pings stop, and the mark-good step waits for "ready" before it declares a new firmware
//! slot healthy.

use crate::app::App;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;

/// Tells systemd that abrid serves (the HTTPS listener is bound and the state is open).
pub fn notify_ready(status: &str) {
    if let Err(e) = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]) {
        tracing::warn!("cannot tell systemd that abrid is ready: {e}");
    }
}

/// Tells systemd that abrid is stopping, so a slow shutdown is not taken for a hang.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its period for as long as the runtime runs and the state
/// database answers. A wedged runtime or a database that no longer opens a read transaction
/// stops the pings, and systemd restarts abrid.
pub async fn watchdog(app: Arc<App>) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval((period / 2).max(Duration::from_millis(500)));
    loop {
        tick.tick().await;
        let db = app.db.clone();
        let healthy = tokio::task::spawn_blocking(move || db.read_txn().map(|_| ()))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false);
        if healthy {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        } else {
            tracing::error!("the state database does not answer: stopping the watchdog pings");
        }
    }
}
