//! The service descriptions are checked as values; the announcer itself is checked by
//! browsing for it with a second responder in the same process, over the machine's real
//! multicast (loopback delivery of multicast on the first interface).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mdns_sd::{ResolvedService, ServiceEvent};

use super::*;

const FP: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn config(hostname: &str) -> AnnounceConfig {
    AnnounceConfig {
        hostname: hostname.to_string(),
        port: 8443,
        version: "0.1.0".to_string(),
        activated: false,
        fingerprint: FP.to_string(),
        interface: None,
        listen: None,
    }
}

/// A name no other test run on the LAN could be announcing.
fn unique_hostname() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("abri-test-{}-{nanos:x}", std::process::id())
}

#[test]
fn describes_both_services_with_the_same_txt() {
    let infos = service_infos(&config("backup-abcd")).unwrap();
    let names: Vec<_> = infos.iter().map(|i| i.get_fullname()).collect();
    assert_eq!(
        names,
        [
            "backup-abcd._https._tcp.local.",
            "backup-abcd._abri._tcp.local."
        ]
    );
    for info in &infos {
        assert_eq!(info.get_hostname(), "backup-abcd.local.");
        assert_eq!(info.get_port(), 8443);
        assert!(info.is_addr_auto());
        assert_eq!(info.get_property_val_str(TXT_VERSION), Some("0.1.0"));
        assert_eq!(info.get_property_val_str(TXT_STATE), Some(STATE_NEW));
        assert_eq!(info.get_property_val_str(TXT_FINGERPRINT), Some(FP));
    }
}

#[test]
fn activation_changes_the_state_only() {
    let mut activated = config("backup-abcd");
    activated.activated = true;
    for info in service_infos(&activated).unwrap() {
        assert_eq!(info.get_property_val_str(TXT_STATE), Some(STATE_ACTIVATED));
        assert_eq!(info.get_property_val_str(TXT_FINGERPRINT), Some(FP));
    }
}

#[test]
fn invalid_names_are_reported_with_the_service() {
    let mut bad = config("backup-abcd");
    bad.fingerprint = "x".repeat(300);
    let err = service_infos(&bad).unwrap_err();
    assert!(
        err.to_string().contains("backup-abcd._https._tcp.local."),
        "{err}"
    );
}

/// Waits (bounded) for a resolution of `fullname` that satisfies `accept`.
fn wait_resolved(
    events: &mdns_sd::Receiver<ServiceEvent>,
    fullname: &str,
    accept: impl Fn(&ResolvedService) -> bool,
) -> Option<Box<ResolvedService>> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(found))
                if found.get_fullname() == fullname && accept(&found) =>
            {
                return Some(found);
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

fn wait_removed(events: &mdns_sd::Receiver<ServiceEvent>, fullname: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceRemoved(_, name)) if name == fullname => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn a_browser_sees_the_box_its_activation_and_its_goodbye() {
    let hostname = unique_hostname();
    let announcer = Announcer::start(config(&hostname)).unwrap();

    let browser = ServiceDaemon::new().unwrap();
    let abri = browser.browse(SERVICE_ABRI).unwrap();
    let https = browser.browse(SERVICE_HTTPS).unwrap();
    let abri_name = format!("{hostname}.{SERVICE_ABRI}");
    let https_name = format!("{hostname}.{SERVICE_HTTPS}");

    let found = wait_resolved(&abri, &abri_name, |s| {
        s.get_property_val_str(TXT_STATE) == Some(STATE_NEW)
    })
    .expect("the _abri._tcp announcement should be seen within 15 s");
    assert_eq!(found.get_hostname(), format!("{hostname}.local."));
    assert_eq!(found.get_port(), 8443);
    assert_eq!(found.get_property_val_str(TXT_FINGERPRINT), Some(FP));
    assert_eq!(found.get_property_val_str(TXT_VERSION), Some("0.1.0"));
    assert!(
        !found.get_addresses().is_empty(),
        "A/AAAA records announced"
    );
    wait_resolved(&https, &https_name, |_| true)
        .expect("the _https._tcp announcement should be seen within 15 s");

    announcer.set_activated(true).unwrap();
    wait_resolved(&abri, &abri_name, |s| {
        s.get_property_val_str(TXT_STATE) == Some(STATE_ACTIVATED)
    })
    .expect("the new activation state should be seen within 15 s");

    announcer.shutdown();
    assert!(
        wait_removed(&abri, &abri_name),
        "goodbye seen for _abri._tcp"
    );

    let _ = browser.shutdown();
}

#[test]
fn can_be_restricted_to_one_interface() {
    // The interface that carries this machine's first non-loopback IPv4 address.
    let Some(interface) = if_addrs::get_if_addrs()
        .unwrap()
        .into_iter()
        .find(|i| !i.is_loopback() && i.ip().is_ipv4())
        .map(|i| i.name)
    else {
        eprintln!("no non-loopback IPv4 interface here: nothing to restrict to");
        return;
    };
    let hostname = unique_hostname();
    let mut restricted = config(&hostname);
    restricted.interface = Some(interface);
    let announcer = Announcer::start(restricted).unwrap();

    let browser = ServiceDaemon::new().unwrap();
    let abri = browser.browse(SERVICE_ABRI).unwrap();
    let found = wait_resolved(&abri, &format!("{hostname}.{SERVICE_ABRI}"), |_| true)
        .expect("the restricted announcement should be seen within 15 s");
    assert!(
        found
            .get_addresses()
            .iter()
            .all(|a| !a.to_ip_addr().is_loopback())
    );

    announcer.shutdown();
    let _ = browser.shutdown();
}

#[test]
fn announcer_can_be_shared_between_tasks() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Announcer>();
}

#[test]
fn only_addresses_that_reach_the_server_are_announced() {
    use super::selection_rules;
    use mdns_sd::IfKind;
    let rules = |c: &super::AnnounceConfig| format!("{:?}", selection_rules(c));
    let mut config = config_for_rules();
    config.listen = Some("0.0.0.0".parse().unwrap());
    assert_eq!(
        rules(&config),
        format!("{:?}", vec![(false, IfKind::IPv6)]),
        "IPv4-only server"
    );
    config.listen = Some("::".parse().unwrap());
    assert!(
        selection_rules(&config).is_empty(),
        "dual-stack server: everything"
    );
    config.listen = Some("198.18.0.1".parse().unwrap());
    assert_eq!(
        rules(&config),
        format!(
            "{:?}",
            vec![
                (false, IfKind::All),
                (true, IfKind::Addr("198.18.0.1".parse().unwrap()))
            ]
        )
    );
    config.interface = Some("eth0".into());
    config.listen = Some("0.0.0.0".parse().unwrap());
    assert_eq!(
        rules(&config),
        format!(
            "{:?}",
            vec![
                (false, IfKind::All),
                (true, IfKind::Name("eth0".into())),
                (false, IfKind::IPv6)
            ]
        )
    );
}

fn config_for_rules() -> super::AnnounceConfig {
    super::AnnounceConfig {
        hostname: "backup-abcd".into(),
        port: 443,
        version: "0".into(),
        activated: false,
        fingerprint: "ab".repeat(32),
        interface: None,
        listen: None,
    }
}
