//! Fake sysfs trees: each interface is a directory with the files the kernel would show.

use std::fs;
use std::path::Path;

use super::*;

#[derive(Clone, Copy)]
enum Kind {
    Physical,
    Virtual,
    Wireless,
    Phy80211,
}

fn add(root: &Path, name: &str, link_type: u32, mac: &str, kind: Kind) {
    let dir = root.join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("type"), format!("{link_type}\n")).unwrap();
    fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
    match kind {
        Kind::Physical => fs::create_dir(dir.join("device")).unwrap(),
        Kind::Virtual => {}
        Kind::Wireless => {
            fs::create_dir(dir.join("device")).unwrap();
            fs::create_dir(dir.join("wireless")).unwrap();
        }
        Kind::Phy80211 => {
            fs::create_dir(dir.join("device")).unwrap();
            fs::create_dir(dir.join("phy80211")).unwrap();
        }
    }
}

fn typical_box() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    add(r, "lo", 772, "00:00:00:00:00:00", Kind::Virtual);
    add(r, "enp3s0", 1, "52:54:00:12:ab:cd", Kind::Physical);
    add(r, "enp2s0", 1, "52:54:00:12:00:01", Kind::Physical);
    add(r, "br0", 1, "52:54:00:12:00:01", Kind::Virtual);
    add(r, "docker0", 1, "02:42:ac:11:00:02", Kind::Virtual);
    add(r, "wlp4s0", 1, "a4:c3:f0:00:00:01", Kind::Wireless);
    add(r, "wlan1", 1, "a4:c3:f0:00:00:02", Kind::Phy80211);
    add(r, "dummy0", 1, "00:00:00:00:00:00", Kind::Virtual);
    add(r, "tun0", 65534, "00:00:00:00:00:00", Kind::Virtual);
    add(r, "ib0", 32, "80:00:00:48:fe:80", Kind::Physical);
    root
}

#[test]
fn lists_wired_ethernet_sorted_by_name() {
    let root = typical_box();
    let found = list_interfaces(root.path()).unwrap();
    let names: Vec<_> = found.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["br0", "docker0", "enp2s0", "enp3s0"]);
    let enp3s0 = &found[3];
    assert_eq!(enp3s0.mac.to_string(), "52:54:00:12:ab:cd");
    assert!(enp3s0.physical);
    assert!(!found[0].physical, "a bridge has no device");
}

#[test]
fn primary_is_the_lowest_physical_name() {
    let root = typical_box();
    let found = list_interfaces(root.path()).unwrap();
    assert_eq!(select_primary(&found, None).unwrap().name, "enp2s0");
}

#[test]
fn byte_order_not_natural_order() {
    let root = tempfile::tempdir().unwrap();
    add(root.path(), "eth10", 1, "52:54:00:00:00:10", Kind::Physical);
    add(root.path(), "eth2", 1, "52:54:00:00:00:02", Kind::Physical);
    add(root.path(), "Eth9", 1, "52:54:00:00:00:09", Kind::Physical);
    let found = list_interfaces(root.path()).unwrap();
    // 'E' (0x45) sorts before 'e'; "eth10" before "eth2".
    assert_eq!(select_primary(&found, None).unwrap().name, "Eth9");
    let without_upper: Vec<_> = found.into_iter().filter(|i| i.name != "Eth9").collect();
    assert_eq!(select_primary(&without_upper, None).unwrap().name, "eth10");
}

#[test]
fn override_wins_when_present_even_if_virtual() {
    let root = typical_box();
    let found = list_interfaces(root.path()).unwrap();
    assert_eq!(
        select_primary(&found, Some("enp3s0")).unwrap().name,
        "enp3s0"
    );
    assert_eq!(select_primary(&found, Some("br0")).unwrap().name, "br0");
}

#[test]
fn absent_override_falls_back_to_the_rule() {
    let root = typical_box();
    let found = list_interfaces(root.path()).unwrap();
    assert_eq!(select_primary(&found, Some("eth9")).unwrap().name, "enp2s0");
    assert_eq!(
        select_primary(&found, Some("wlp4s0")).unwrap().name,
        "enp2s0"
    );
}

#[test]
fn only_virtual_interfaces_give_no_primary() {
    let root = tempfile::tempdir().unwrap();
    add(root.path(), "lo", 772, "00:00:00:00:00:00", Kind::Virtual);
    add(root.path(), "veth1", 1, "aa:bb:cc:dd:ee:ff", Kind::Virtual);
    add(root.path(), "wlan0", 1, "a4:c3:f0:00:00:01", Kind::Wireless);
    let found = list_interfaces(root.path()).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(select_primary(&found, None), None);
    assert_eq!(select_primary(&[], None), None);
}

#[test]
fn unreadable_or_malformed_entries_are_skipped() {
    let root = tempfile::tempdir().unwrap();
    add(root.path(), "eth0", 1, "52:54:00:00:00:01", Kind::Physical);
    add(root.path(), "eth1", 1, "not-a-mac", Kind::Physical);
    fs::create_dir(root.path().join("eth2")).unwrap();
    fs::write(root.path().join("bonding_masters"), "").unwrap();
    let found = list_interfaces(root.path()).unwrap();
    let names: Vec<_> = found.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["eth0"]);
}

#[test]
fn missing_directory_is_an_error() {
    let root = tempfile::tempdir().unwrap();
    assert!(list_interfaces(&root.path().join("absent")).is_err());
}

#[test]
fn reads_this_machine_without_error() {
    // Whatever the sandbox has, the real tree must parse and never list loopback.
    let found = list_interfaces(Path::new("/sys/class/net")).unwrap();
    assert!(found.iter().all(|i| i.name != "lo" && !i.mac.is_zero()));
}
