//! MAC addresses as typed at the factory, and the box name a box derives from its MAC.
//!
//! The rule must match the box's own: `backup-` followed by the lower-case hex of the MAC's
//! last two bytes, so that the label printed at the factory names the box the technician
//! will see on the LAN.

use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacAddress(pub [u8; 6]);

#[derive(Debug, thiserror::Error)]
#[error(
    "MAC address {0:?} is not six pairs of hexadecimal digits such as 52:54:00:12:ab:cd \
     (colons, dashes or nothing between the pairs)"
)]
pub struct MacError(String);

impl FromStr for MacAddress {
    type Err = MacError;

    fn from_str(text: &str) -> Result<Self, MacError> {
        let bad = || MacError(text.to_string());
        let trimmed = text.trim();
        let pairs: Vec<&str> = if trimmed.contains(':') {
            trimmed.split(':').collect()
        } else if trimmed.contains('-') {
            trimmed.split('-').collect()
        } else if trimmed.len() == 12 && trimmed.is_ascii() {
            (0..6).map(|i| &trimmed[2 * i..2 * i + 2]).collect()
        } else {
            return Err(bad());
        };
        if pairs.len() != 6 {
            return Err(bad());
        }
        let mut bytes = [0u8; 6];
        for (byte, pair) in bytes.iter_mut().zip(&pairs) {
            if pair.len() != 2 || !pair.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(MacAddress(bytes))
    }
}

impl MacAddress {
    /// The name the box gives itself on the LAN, without `.local`: `backup-abcd`.
    pub fn box_name(&self) -> String {
        format!("backup-{:02x}{:02x}", self.0[4], self.0[5])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_name_is_the_last_two_bytes_in_lower_case_hex() {
        let mac: MacAddress = "52:54:00:12:AB:CD".parse().unwrap();
        assert_eq!(mac.box_name(), "backup-abcd");
        let mac: MacAddress = "00-11-22-33-04-0f".parse().unwrap();
        assert_eq!(mac.box_name(), "backup-040f", "leading zeros are kept");
        let mac: MacAddress = "525400120a0b".parse().unwrap();
        assert_eq!(mac.0, [0x52, 0x54, 0x00, 0x12, 0x0a, 0x0b]);
    }

    #[test]
    fn rejects_what_is_not_a_mac() {
        for bad in [
            "",
            "52:54:00:12:ab",
            "52:54:00:12:ab:cd:ef",
            "52:54:00:12:ab:zz",
            "5:254:00:12:ab:cd",
            "52:54-00:12:ab:cd",
            "52540012abc",
            "é2540012abcd",
        ] {
            let err = bad.parse::<MacAddress>().unwrap_err().to_string();
            assert!(err.contains("MAC address"), "{bad:?}: {err}");
        }
    }
}
