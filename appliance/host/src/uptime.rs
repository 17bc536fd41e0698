//! How long the machine has been up, for the box page.

use std::io;
use std::time::Duration;

/// Time since boot, from `/proc/uptime`.
pub fn uptime() -> io::Result<Duration> {
    let text = std::fs::read_to_string("/proc/uptime")?;
    parse_uptime(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/uptime: unexpected content '{}'", text.trim()),
        )
    })
}

/// The first field of `/proc/uptime` ("367.38 472.31"): seconds since boot.
///
/// Parsed as decimal digits rather than as a float so that 367.38 is exactly 367 s 380 ms.
fn parse_uptime(text: &str) -> Option<Duration> {
    let field = text.split_whitespace().next()?;
    let (whole, fraction) = field.split_once('.').unwrap_or((field, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || fraction.len() > 9 {
        return None;
    }
    let seconds: u64 = whole.parse().ok()?;
    let nanos: u32 = format!("{fraction:0<9}").parse().ok()?;
    Some(Duration::new(seconds, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_first_field() {
        assert_eq!(
            parse_uptime("367.38 472.31\n"),
            Some(Duration::from_millis(367_380))
        );
        assert_eq!(parse_uptime("0.00 0.00"), Some(Duration::ZERO));
        assert_eq!(parse_uptime("86400"), Some(Duration::from_secs(86400)));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_uptime(""), None);
        assert_eq!(parse_uptime("abc 1.0"), None);
        assert_eq!(parse_uptime("-5.0 1.0"), None);
        assert_eq!(parse_uptime("NaN 1.0"), None);
        assert_eq!(parse_uptime(".5 1.0"), None);
        assert_eq!(parse_uptime("1.0000000001 1.0"), None);
    }

    #[test]
    fn reads_this_machine() {
        assert!(uptime().unwrap() > Duration::ZERO);
    }
}
