//! The box's mDNS announcements: `backup-xxxx.local` with its addresses, and the two
//! services browsers and Abri tools look for.
//!
//! Both services carry the same TXT record (version, activation state, CA fingerprint) so
//! that a tool can decide what to do with a box — activate it, pin its certificate — from
//! the announcement alone. Addresses are not given here: the responder follows the host's
//! addresses as DHCP changes them.

use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use abri_proto::mdns::{
    SERVICE_ABRI, SERVICE_HTTPS, STATE_ACTIVATED, STATE_NEW, TXT_FINGERPRINT, TXT_STATE,
    TXT_VERSION,
};
use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};
use std::net::IpAddr;

use crate::HostError;

/// How long [`Announcer::shutdown`] waits in all for the responder to say goodbye.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);
/// mdns-sd repeats a goodbye 120 ms after the first; leave it time to go out.
const GOODBYE_REPEAT: Duration = Duration::from_millis(250);

/// What to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// The box's host name without domain, such as `backup-abcd`.
    pub hostname: String,
    /// The HTTPS port.
    pub port: u16,
    /// abrid's version.
    pub version: String,
    pub activated: bool,
    /// Lower-case hex SHA-256 of the box CA certificate.
    pub fingerprint: String,
    /// Announce only on this interface (`None`: every interface).
    pub interface: Option<String>,
    /// The address the HTTPS server listens on. Only addresses that reach it are announced:
    /// a specific address announces itself alone, `0.0.0.0` only IPv4 addresses, `[::]`
    /// (dual-stack) every address. `None` announces every address.
    pub listen: Option<IpAddr>,
}

/// The interface rules that make the responder announce only reachable addresses, applied
/// in order (later rules win).
fn selection_rules(config: &AnnounceConfig) -> Vec<(bool, IfKind)> {
    let mut rules = Vec::new();
    if let Some(name) = &config.interface {
        rules.push((false, IfKind::All));
        rules.push((true, IfKind::Name(name.clone())));
    }
    match config.listen {
        Some(IpAddr::V4(v4)) if v4.is_unspecified() => rules.push((false, IfKind::IPv6)),
        Some(ip) if !ip.is_unspecified() => {
            rules.push((false, IfKind::All));
            rules.push((true, IfKind::Addr(ip)));
        }
        _ => {}
    }
    rules
}

/// A running mDNS responder announcing the box. Dropping it withdraws the announcements
/// without waiting; [`Announcer::shutdown`] waits (briefly) for the goodbyes to go out.
pub struct Announcer {
    daemon: ServiceDaemon,
    /// The announced configuration; `activated` changes under the lock so that two
    /// concurrent `set_activated` calls cannot leave the TXT and the flag disagreeing.
    config: Mutex<AnnounceConfig>,
    fullnames: Vec<String>,
    stopped: bool,
}

impl Announcer {
    /// Starts a responder and announces the host name and both services.
    pub fn start(config: AnnounceConfig) -> Result<Announcer, HostError> {
        let infos = service_infos(&config)?;
        let daemon = ServiceDaemon::new().map_err(|e| HostError::mdns("start the responder", e))?;
        let announcer = Announcer {
            fullnames: infos.iter().map(|i| i.get_fullname().to_string()).collect(),
            daemon,
            config: Mutex::new(config.clone()),
            stopped: false,
        };
        // From here on, an early return drops `announcer`, which stops the daemon thread.
        for (enable, kind) in selection_rules(&config) {
            let what = format!("{} {kind:?}", if enable { "enable" } else { "disable" });
            let result = if enable {
                announcer.daemon.enable_interface(kind)
            } else {
                announcer.daemon.disable_interface(kind)
            };
            result.map_err(|e| HostError::mdns(what, e))?;
        }
        announcer.log_events();
        announcer.register(infos)?;
        tracing::info!(
            "mDNS: announcing {}.local ({} and {})",
            config.hostname,
            SERVICE_HTTPS,
            SERVICE_ABRI
        );
        Ok(announcer)
    }

    /// Announces the new activation state (the services are registered again with the
    /// new TXT record, which replaces the old one in the peers' caches).
    pub fn set_activated(&self, activated: bool) -> Result<(), HostError> {
        // A poisoned lock only means another caller panicked mid-update; the data is a
        // plain value that stays meaningful, so carry on with it.
        let mut config = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = config.clone();
        next.activated = activated;
        self.register(service_infos(&next)?)?;
        *config = next;
        Ok(())
    }

    /// Withdraws both services (goodbye packets), then stops the responder. Blocks for
    /// at most about two seconds: call it from `spawn_blocking` in async code.
    pub fn shutdown(mut self) {
        self.stop(true);
    }

    fn register(&self, infos: Vec<ServiceInfo>) -> Result<(), HostError> {
        for info in infos {
            let what = format!("register {}", info.get_fullname());
            self.daemon
                .register(info)
                .map_err(|e| HostError::mdns(what, e))?;
        }
        Ok(())
    }

    /// Logs what the responder reports on its own: name conflicts matter (a second box
    /// with the same last MAC bytes gets renamed), the rest is noise at debug level.
    fn log_events(&self) {
        let events = match self.daemon.monitor() {
            Ok(events) => events,
            Err(err) => {
                tracing::warn!("mDNS: cannot watch the responder's events: {err}");
                return;
            }
        };
        // The channel closes when the daemon stops, which ends the thread.
        let spawned = thread::Builder::new()
            .name("mdns-events".into())
            .spawn(move || {
                for event in events.iter() {
                    match event {
                        DaemonEvent::NameChange(change) => tracing::warn!(
                            "mDNS: name conflict on the LAN, '{}' is announced as '{}'",
                            change.original,
                            change.new_name
                        ),
                        DaemonEvent::Error(err) => tracing::warn!("mDNS: {err}"),
                        other => tracing::debug!("mDNS: {other:?}"),
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::warn!("mDNS: cannot start the event logger: {err}");
        }
    }

    fn stop(&mut self, wait: bool) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let deadline = Instant::now() + SHUTDOWN_WAIT;
        let mut pending = Vec::new();
        for name in &self.fullnames {
            match self.daemon.unregister(name) {
                Ok(done) => pending.push(done),
                Err(err) => tracing::warn!("mDNS: cannot withdraw {name}: {err}"),
            }
        }
        if wait {
            for done in pending {
                let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            }
            thread::sleep(GOODBYE_REPEAT.min(deadline.saturating_duration_since(Instant::now())));
        }
        match self.daemon.shutdown() {
            Ok(done) if wait => {
                let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            }
            Ok(_) => {}
            Err(err) => tracing::debug!("mDNS: stopping the responder: {err}"),
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.stop(false);
    }
}

/// The two services for `config`: same instance name, host, port and TXT record.
fn service_infos(config: &AnnounceConfig) -> Result<Vec<ServiceInfo>, HostError> {
    let state = if config.activated {
        STATE_ACTIVATED
    } else {
        STATE_NEW
    };
    let txt = [
        (TXT_VERSION, config.version.as_str()),
        (TXT_STATE, state),
        (TXT_FINGERPRINT, config.fingerprint.as_str()),
    ];
    let host = format!("{}.local.", config.hostname);
    [SERVICE_HTTPS, SERVICE_ABRI]
        .into_iter()
        .map(|service| {
            let mut info =
                ServiceInfo::new(service, &config.hostname, &host, "", config.port, &txt[..])
                    .map_err(|e| {
                        HostError::mdns(format!("describe {}.{service}", config.hostname), e)
                    })?
                    .enable_addr_auto();
            if let Some(name) = &config.interface {
                info.set_interfaces(vec![IfKind::Name(name.clone())]);
            }
            Ok(info)
        })
        .collect()
}

#[cfg(test)]
mod tests;
