//! The box's names, all derived from its MAC so that the label on the box, the mDNS name,
//! the intranet name and the certificate agree without any configuration.

use crate::{HostError, Mac};

/// The box's host name: `backup-` and the lower-case hex of the MAC's last two bytes.
///
/// `52:54:00:12:AB:CD` gives `backup-abcd`.
pub fn derive_hostname(mac: &Mac) -> String {
    format!("backup-{}", suffix(mac))
}

/// The box's intranet name: `backup.xxxx.<domain>`.
///
/// The domain is lower-cased and loses its trailing dot, so `Example.FR.` and
/// `example.fr` give the same name. An empty domain gives `backup.xxxx`.
pub fn fqdn(mac: &Mac, domain: &str) -> String {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        format!("backup.{}", suffix(mac))
    } else {
        format!("backup.{}.{domain}", suffix(mac))
    }
}

/// Sets the kernel's host name (needs CAP_SYS_ADMIN in the UTS namespace).
///
/// Only a single DNS label is accepted: the box's name is never dotted, and refusing
/// here gives a clearer message than the kernel's EINVAL.
pub fn set_system_hostname(name: &str) -> Result<(), HostError> {
    if !is_dns_label(name) {
        return Err(HostError::SetHostname {
            name: name.to_string(),
            source: nix::Error::EINVAL,
        });
    }
    nix::unistd::sethostname(name).map_err(|source| HostError::SetHostname {
        name: name.to_string(),
        source,
    })
}

fn suffix(mac: &Mac) -> String {
    format!("{:02x}{:02x}", mac.0[4], mac.0[5])
}

/// 1 to 63 letters, digits and hyphens, not starting or ending with a hyphen (RFC 1123).
fn is_dns_label(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0xAB, 0xCD]);

    #[test]
    fn hostname_uses_the_last_two_bytes_in_lower_case() {
        assert_eq!(derive_hostname(&MAC), "backup-abcd");
        assert_eq!(
            derive_hostname(&Mac([0x52, 0x54, 0x00, 0x12, 0, 0])),
            "backup-0000"
        );
        assert_eq!(
            derive_hostname(&Mac([0xff, 0xff, 0xff, 0xff, 0x0a, 0x01])),
            "backup-0a01"
        );
    }

    #[test]
    fn fqdn_normalises_the_domain() {
        assert_eq!(fqdn(&MAC, "example.fr"), "backup.abcd.example.fr");
        assert_eq!(fqdn(&MAC, "Example.FR."), "backup.abcd.example.fr");
        assert_eq!(fqdn(&MAC, "lan"), "backup.abcd.lan");
        assert_eq!(fqdn(&MAC, ""), "backup.abcd");
        assert_eq!(fqdn(&MAC, "."), "backup.abcd");
    }

    #[test]
    fn dotted_or_empty_names_are_refused_before_the_kernel() {
        for bad in [
            "",
            "backup.abcd",
            "-backup",
            "backup-",
            "back up",
            &"a".repeat(64),
        ] {
            let err = set_system_hostname(bad).unwrap_err();
            assert!(
                err.to_string().contains("cannot set the system hostname"),
                "{err}"
            );
        }
    }

    #[test]
    fn derived_names_are_valid_labels() {
        assert!(is_dns_label(&derive_hostname(&MAC)));
    }
}
