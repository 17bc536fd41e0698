//! Windows reparse-point buffers of symbolic links and junctions, read and written as bytes.
//! Pure, compiled everywhere so that its units run on Linux.
//!
//! How links travel in a catalog (docs/formats.md, "Windows entries"): both are `Symlink`
//! entries. A junction (mount-point tag) keeps its NT target, which always starts with
//! `\??\` (`\??\C:\data`, `\??\Volume{…}\`); a symbolic link keeps the target as written
//! (`..\x`, `C:\x`; never `\??\`, that prefix is turned back into the DOS form). So the
//! prefix tells the two apart on restore. Whether a link points to a directory is in the
//! entry's Windows attributes (`FILE_ATTRIBUTE_DIRECTORY`).

/// `IO_REPARSE_TAG_MOUNT_POINT`.
pub const TAG_MOUNT_POINT: u32 = 0xA000_0003;
/// `IO_REPARSE_TAG_SYMLINK`.
pub const TAG_SYMLINK: u32 = 0xA000_000C;
/// `SYMLINK_FLAG_RELATIVE`.
const SYMLINK_FLAG_RELATIVE: u32 = 1;
/// The prefix of NT object paths that every junction target has.
pub const NT_PREFIX: &[u16] = &[b'\\' as u16, b'?' as u16, b'?' as u16, b'\\' as u16];

/// A link read from a reparse buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Link {
    /// A junction to this NT path (`\??\C:\data`).
    Junction(Vec<u16>),
    /// A symbolic link to this target, as the catalog keeps it.
    Symlink(Vec<u16>),
}

impl Link {
    /// The catalog form of the target (see the module comment).
    pub fn target(&self) -> &[u16] {
        match self {
            Link::Junction(t) | Link::Symlink(t) => t,
        }
    }

    /// Reads a catalog target back: junction when it starts with `\??\`.
    pub fn from_target(target: Vec<u16>) -> Link {
        if target.starts_with(NT_PREFIX) {
            Link::Junction(target)
        } else {
            Link::Symlink(target)
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn units(b: &[u8], start: usize, len: usize) -> Option<Vec<u16>> {
    if !len.is_multiple_of(2) {
        return None;
    }
    let bytes = b.get(start..start.checked_add(len)?)?;
    Some(
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
    )
}

/// Parses a `REPARSE_DATA_BUFFER` of a symbolic link or a junction; `None` for other tags
/// or a malformed buffer.
pub fn parse(buf: &[u8]) -> Option<Link> {
    let tag = u32_at(buf, 0)?;
    let data_len = usize::from(u16_at(buf, 4)?);
    let data = buf.get(8..8 + data_len)?;
    let sub_off = usize::from(u16_at(data, 0)?);
    let sub_len = usize::from(u16_at(data, 2)?);
    let print_off = usize::from(u16_at(data, 4)?);
    let print_len = usize::from(u16_at(data, 6)?);
    match tag {
        TAG_MOUNT_POINT => {
            let path = data.get(8..)?;
            let sub = units(path, sub_off, sub_len)?;
            (!sub.is_empty()).then_some(Link::Junction(sub))
        }
        TAG_SYMLINK => {
            let flags = u32_at(data, 8)?;
            let path = data.get(12..)?;
            let print = units(path, print_off, print_len)?;
            let sub = units(path, sub_off, sub_len)?;
            let mut target = if print.is_empty() { sub } else { print };
            if flags & SYMLINK_FLAG_RELATIVE == 0 && target.starts_with(NT_PREFIX) {
                target.drain(..NT_PREFIX.len());
            }
            (!target.is_empty()).then_some(Link::Symlink(target))
        }
        _ => None,
    }
}

/// The `REPARSE_DATA_BUFFER` that makes a directory a junction to `nt_target`
/// (`\??\C:\data`); its print name is the same path without the prefix.
pub fn junction_buffer(nt_target: &[u16]) -> Option<Vec<u8>> {
    let print = nt_target.strip_prefix(NT_PREFIX).unwrap_or(nt_target);
    let sub_len = nt_target.len() * 2;
    let print_len = print.len() * 2;
    // Offsets and lengths are u16 and the whole buffer is limited to 16 KiB.
    let path_len = sub_len + 2 + print_len + 2;
    let data_len = 8 + path_len;
    if data_len > 16 * 1024 - 8 {
        return None;
    }
    let mut b = Vec::with_capacity(8 + data_len);
    b.extend_from_slice(&TAG_MOUNT_POINT.to_le_bytes());
    b.extend_from_slice(&(data_len as u16).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // substitute name offset
    b.extend_from_slice(&(sub_len as u16).to_le_bytes());
    b.extend_from_slice(&((sub_len + 2) as u16).to_le_bytes()); // print name offset
    b.extend_from_slice(&(print_len as u16).to_le_bytes());
    for u in nt_target.iter().chain(&[0]).chain(print).chain(&[0]) {
        b.extend_from_slice(&u.to_le_bytes());
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn symlink_buffer(sub: &str, print: &str, relative: bool) -> Vec<u8> {
        let (sub, print) = (w(sub), w(print));
        let mut path = Vec::new();
        for u in sub.iter().chain(&print) {
            path.extend_from_slice(&u.to_le_bytes());
        }
        let mut data = Vec::new();
        data.extend_from_slice(&0u16.to_le_bytes());
        data.extend_from_slice(&((sub.len() * 2) as u16).to_le_bytes());
        data.extend_from_slice(&((sub.len() * 2) as u16).to_le_bytes());
        data.extend_from_slice(&((print.len() * 2) as u16).to_le_bytes());
        data.extend_from_slice(&u32::from(relative).to_le_bytes());
        data.extend_from_slice(&path);
        let mut b = TAG_SYMLINK.to_le_bytes().to_vec();
        b.extend_from_slice(&(data.len() as u16).to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&data);
        b
    }

    #[test]
    fn junctions_round_trip_through_their_buffer() {
        let target = w(r"\??\C:\Users\Ann\Données");
        let buf = junction_buffer(&target).unwrap();
        assert_eq!(parse(&buf), Some(Link::Junction(target.clone())));
        assert_eq!(Link::from_target(target.clone()), Link::Junction(target));
        assert!(junction_buffer(&vec![b'a' as u16; 9000]).is_none());
    }

    #[test]
    fn symlinks_keep_their_written_target() {
        let abs = symlink_buffer(r"\??\C:\data", r"C:\data", false);
        assert_eq!(parse(&abs), Some(Link::Symlink(w(r"C:\data"))));
        // No print name: the substitute name loses its NT prefix.
        let bare = symlink_buffer(r"\??\D:\x", "", false);
        assert_eq!(parse(&bare), Some(Link::Symlink(w(r"D:\x"))));
        let rel = symlink_buffer(r"..\x", r"..\x", true);
        assert_eq!(parse(&rel), Some(Link::Symlink(w(r"..\x"))));
        assert_eq!(Link::from_target(w(r"..\x")), Link::Symlink(w(r"..\x")));
    }

    #[test]
    fn malformed_or_other_buffers_are_refused() {
        assert_eq!(parse(&[]), None);
        let mut b = junction_buffer(&w(r"\??\C:\x")).unwrap();
        b[0] = 0x17; // another tag (e.g. deduplication)
        assert_eq!(parse(&b), None);
        let mut b = junction_buffer(&w(r"\??\C:\x")).unwrap();
        b[10] = 0xFF; // substitute name length past the end
        assert_eq!(parse(&b), None);
        let b = junction_buffer(&w(r"\??\C:\x")).unwrap();
        assert_eq!(parse(&b[..b.len() - 4]), None);
    }
}
