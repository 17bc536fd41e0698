//! The machine's Ethernet interfaces, read from sysfs, and the rule that picks the primary
//! one — whose MAC names the box.
//!
//! The rule must give the same answer on every boot of the same hardware, whatever the
//! order the kernel probed the NICs in or which cables are plugged: so it looks only at
//! what is soldered on (physical Ethernet) and sorts by name, never by link state.

use std::fs;
use std::io;
use std::path::Path;

use crate::Mac;

/// ARPHRD_ETHER in `/sys/class/net/<if>/type`.
const ARPHRD_ETHER: u32 = 1;

/// One Ethernet interface of the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Mac,
    /// Backed by a device (PCI, USB, ...) rather than virtual (bridge, veth, bond, tun).
    pub physical: bool,
}

/// Lists the wired Ethernet interfaces under `sys_class_net` (normally `/sys/class/net`),
/// sorted by name.
///
/// Left out: loopback, wireless interfaces (the box's identity must not depend on a Wi-Fi
/// dongle), non-Ethernet link types, and interfaces without a MAC (all zeros). An
/// interface whose files cannot be read (it vanished while we looked) is skipped; only an
/// unreadable `sys_class_net` itself is an error.
pub fn list_interfaces(sys_class_net: &Path) -> io::Result<Vec<Interface>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(sys_class_net)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Some(interface) = read_interface(&sys_class_net.join(&name), name) {
            found.push(interface);
        }
    }
    found.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    Ok(found)
}

/// The primary interface: `override_name` when it names a listed interface; otherwise the
/// physical interface with the lowest name in byte order; otherwise none.
pub fn select_primary<'a>(
    ifaces: &'a [Interface],
    override_name: Option<&str>,
) -> Option<&'a Interface> {
    if let Some(wanted) = override_name
        && let Some(found) = ifaces.iter().find(|i| i.name == wanted)
    {
        return Some(found);
    }
    ifaces
        .iter()
        .filter(|i| i.physical)
        .min_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()))
}

fn read_interface(dir: &Path, name: String) -> Option<Interface> {
    if name == "lo" {
        return None;
    }
    let link_type: u32 = read_trimmed(&dir.join("type"))?.parse().ok()?;
    if link_type != ARPHRD_ETHER {
        return None;
    }
    // Wi-Fi reports type 1 too; these two entries are how sysfs tells it apart.
    if dir.join("wireless").exists() || dir.join("phy80211").exists() {
        return None;
    }
    let mac: Mac = read_trimmed(&dir.join("address"))?.parse().ok()?;
    if mac.is_zero() {
        return None;
    }
    let physical = dir.join("device").exists();
    Some(Interface {
        name,
        mac,
        physical,
    })
}

fn read_trimmed(path: &Path) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(err) => {
            tracing::debug!("skipping {}: {err}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests;
