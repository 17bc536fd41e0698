//! The box's MAC address: the root of its identity (hostname, FQDN, certificate names).
//!
//! One textual form goes out (`52:54:00:12:ab:cd`); the two forms people copy from
//! `ip link` and from Windows (`52-54-00-12-AB-CD`) come in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

/// A string that is not a MAC address; the message quotes it and shows the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid MAC address '{input}': expected six hex pairs separated by ':' or '-', \
     such as 52:54:00:12:ab:cd"
)]
pub struct MacParseError {
    /// The rejected text (cut to a reasonable length so a huge input cannot flood a log).
    pub input: String,
}

impl MacParseError {
    fn new(input: &str) -> Self {
        MacParseError {
            input: input.chars().take(64).collect(),
        }
    }
}

impl Mac {
    /// True for 00:00:00:00:00:00, which virtual and unconfigured interfaces report.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for Mac {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // One separator for the whole address: "52:54-00..." is a typo, not a MAC.
        let separator = if s.contains(':') { ':' } else { '-' };
        let mut bytes = [0u8; 6];
        let mut groups = s.split(separator);
        for byte in &mut bytes {
            let group = groups.next().ok_or_else(|| MacParseError::new(s))?;
            // from_str_radix alone would accept "+f" and single digits.
            if group.len() != 2 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacParseError::new(s));
            }
            *byte = u8::from_str_radix(group, 16).map_err(|_| MacParseError::new(s))?;
        }
        if groups.next().is_some() {
            return Err(MacParseError::new(s));
        }
        Ok(Mac(bytes))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: Mac = Mac([0x52, 0x54, 0x00, 0x12, 0xab, 0xcd]);

    #[test]
    fn parses_colon_and_dash_forms_in_any_case() {
        assert_eq!("52:54:00:12:ab:cd".parse::<Mac>(), Ok(SAMPLE));
        assert_eq!("52:54:00:12:AB:CD".parse::<Mac>(), Ok(SAMPLE));
        assert_eq!("52-54-00-12-AB-CD".parse::<Mac>(), Ok(SAMPLE));
        assert_eq!("52-54-00-12-ab-cd".parse::<Mac>(), Ok(SAMPLE));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "52:54:00:12:ab",
            "52:54:00:12:ab:cd:ef",
            "52:54:00:12:ab:cd:",
            "52:54-00:12:ab:cd",
            "52540012abcd",
            "5254.0012.abcd",
            "52:54:00:12:ab:c",
            "52:54:00:12:ab:cde",
            "52:54:00:12:ab:+d",
            "52:54:00:12:ab:gz",
            " 52:54:00:12:ab:cd",
            "52:54:00:12:ab:cd\n",
            "é2:54:00:12:ab:cd",
        ] {
            let err = bad.parse::<Mac>().expect_err(bad);
            assert!(err.to_string().contains("invalid MAC address"), "{err}");
        }
    }

    #[test]
    fn error_names_the_input() {
        let err = "nope".parse::<Mac>().unwrap_err();
        assert!(err.to_string().contains("'nope'"));
    }

    #[test]
    fn displays_lower_case_with_colons() {
        assert_eq!(SAMPLE.to_string(), "52:54:00:12:ab:cd");
        assert_eq!(Mac([0; 6]).to_string(), "00:00:00:00:00:00");
    }

    #[test]
    fn serde_uses_the_string_form() {
        let json = serde_json::to_string(&SAMPLE).unwrap();
        assert_eq!(json, "\"52:54:00:12:ab:cd\"");
        let back: Mac = serde_json::from_str("\"52-54-00-12-AB-CD\"").unwrap();
        assert_eq!(back, SAMPLE);
        let err = serde_json::from_str::<Mac>("\"zz\"").unwrap_err();
        assert!(err.to_string().contains("invalid MAC address"));
    }

    #[test]
    fn zero_is_detected() {
        assert!(Mac([0; 6]).is_zero());
        assert!(!SAMPLE.is_zero());
    }
}
