//! Parser for `/proc/<pid>/mountinfo` (see proc(5)), kept pure so it is tested on samples.

/// One line of mountinfo: the fields this crate uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MountEntry {
    /// `major:minor` of the device; equal for every mount of one file system.
    pub device_id: String,
    /// The directory of the file system that is mounted (`/` unless a bind mount).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    /// The mount source, such as `/dev/sda1`.
    pub source: String,
}

/// Every well-formed line of `text`; malformed lines are skipped.
pub(super) fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
///
/// A variable number of optional fields precedes the lone `-`.
fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().skip(6).position(|f| *f == "-")? + 6;
    let after = fields.get(separator + 1..)?;
    Some(MountEntry {
        device_id: fields.get(2)?.to_string(),
        root: unescape(fields.get(3)?),
        mount_point: unescape(fields.get(4)?),
        fs_type: unescape(after.first()?),
        source: unescape(after.get(1)?),
    })
}

/// The kernel writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(value) = bytes.get(i + 1..i + 4).and_then(octal_byte)
        {
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn octal_byte(digits: &[u8]) -> Option<u8> {
    if !digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
    u8::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc5_example() {
        let entries = parse_mountinfo(
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n",
        );
        assert_eq!(
            entries,
            [MountEntry {
                device_id: "98:0".into(),
                root: "/mnt1".into(),
                mount_point: "/mnt2".into(),
                fs_type: "ext3".into(),
                source: "/dev/root".into(),
            }]
        );
    }

    #[test]
    fn handles_zero_or_many_optional_fields() {
        let text = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n\
                    40 27 8:1 / /data rw shared:5 master:2 propagate_from:1 - xfs /dev/sda1 rw\n";
        let entries = parse_mountinfo(text);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].mount_point, "/");
        assert_eq!(entries[1].fs_type, "xfs");
        assert_eq!(entries[1].source, "/dev/sda1");
    }

    #[test]
    fn unescapes_spaces_tabs_and_backslashes() {
        let text = r"50 27 8:17 /My\040Files /media/usb\040disk\011x\134y rw - vfat /dev/sdb1 rw";
        let entries = parse_mountinfo(text);
        assert_eq!(entries[0].root, "/My Files");
        assert_eq!(entries[0].mount_point, "/media/usb disk\tx\\y");
    }

    #[test]
    fn leaves_non_escapes_alone() {
        assert_eq!(unescape(r"a\b"), r"a\b");
        assert_eq!(unescape(r"a\08"), r"a\08");
        assert_eq!(unescape(r"end\04"), r"end\04");
        assert_eq!(unescape(r"\777"), r"\777");
        assert_eq!(unescape("é\\040"), "é ");
    }

    #[test]
    fn skips_malformed_lines() {
        let text = "\ngarbage\n1 2 3 4 5 6 no-separator here\n1 2 0:1 / /x rw -\n";
        assert!(parse_mountinfo(text).is_empty());
    }
}
