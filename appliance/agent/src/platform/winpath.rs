//! How Windows names and paths map to catalog paths, and how a plan's selections and
//! exclusions read on Windows. Pure functions, compiled on every platform so their units run
//! on Linux too; `platform::windows` calls them.
//!
//! Names. NTFS names are sequences of UTF-16 code units that need not be valid UTF-16 (an
//! unpaired surrogate is a legal name). A catalog name is bytes: the agent stores the
//! name's WTF-8 form, that is UTF-8 where every unpaired surrogate is written as the
//! three-byte sequence UTF-8 would give its code point (`ED A0 80` to `ED BF BF`). Valid
//! names are plain UTF-8; the mapping is one to one and decoding gives back the same units.
//! A catalog made on Linux may hold names that are not WTF-8 (bytes of a legacy encoding):
//! such a byte `b` restores as the lone surrogate `U+DC00 + b` (as Python's
//! `surrogateescape` does), so the name survives, visibly odd, instead of failing the file.
//!
//! Paths. The catalog path of `C:\Users\ann\notes.txt` is `C/Users/ann/notes.txt`: the
//! first component is the upper-case drive letter, the rest the names, `/`-separated. Every
//! path the agent opens is in the `\\?\C:\...` form, which has no 260-character limit and no
//! reserved names (`CON`, `nul.txt`, names ending in a dot or a space are ordinary names).

use std::fmt::Write as _;

/// Catalog bytes (WTF-8) of a UTF-16 name or path.
pub fn utf16_to_bytes(units: &[u16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(units.len());
    for r in char::decode_utf16(units.iter().copied()) {
        match r {
            Ok(c) => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            Err(e) => {
                let u = u32::from(e.unpaired_surrogate());
                out.push(0xE0 | (u >> 12) as u8);
                out.push(0x80 | ((u >> 6) & 0x3F) as u8);
                out.push(0x80 | (u & 0x3F) as u8);
            }
        }
    }
    out
}

/// UTF-16 of catalog bytes: the inverse of [`utf16_to_bytes`] on WTF-8; any other byte `b`
/// becomes `U+DC00 + b` (see the module comment).
pub fn bytes_to_utf16(bytes: &[u8]) -> Vec<u16> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match decode_one(&bytes[i..]) {
            Some((cp, len)) => {
                if cp >= 0x10000 {
                    let v = cp - 0x10000;
                    out.push(0xD800 | (v >> 10) as u16);
                    out.push(0xDC00 | (v & 0x3FF) as u16);
                } else {
                    out.push(cp as u16);
                }
                i += len;
            }
            None => {
                out.push(0xDC00 | u16::from(bytes[i]));
                i += 1;
            }
        }
    }
    out
}

/// One WTF-8 code point at the start of `b`: `(code point, length)`. Surrogate code points
/// are accepted only as unpaired ones (a pair must be written as one 4-byte sequence), so
/// that decoding and encoding stay inverse.
fn decode_one(b: &[u8]) -> Option<(u32, usize)> {
    let first = *b.first()?;
    let (len, min, init) = match first {
        0x00..=0x7F => return Some((u32::from(first), 1)),
        0xC2..=0xDF => (2, 0x80, u32::from(first & 0x1F)),
        0xE0..=0xEF => (3, 0x800, u32::from(first & 0x0F)),
        0xF0..=0xF4 => (4, 0x10000, u32::from(first & 0x07)),
        _ => return None,
    };
    let mut cp = init;
    for k in 1..len {
        let c = *b.get(k)?;
        if c & 0xC0 != 0x80 {
            return None;
        }
        cp = (cp << 6) | u32::from(c & 0x3F);
    }
    if cp < min || cp > 0x10FFFF {
        return None;
    }
    if (0xD800..=0xDBFF).contains(&cp) {
        // A lead surrogate directly followed by a trail one would be a pair in disguise.
        if let Some((next, 3)) = decode_one(&b[3..])
            && (0xDC00..=0xDFFF).contains(&next)
        {
            return None;
        }
    }
    Some((cp, len))
}

/// The key under which two names collide in a case-insensitive directory: each UTF-16 unit
/// mapped to its upper case when that is a single unit (what NTFS's upcase table does).
pub fn case_key(name: &[u16]) -> Vec<u16> {
    char::decode_utf16(name.iter().copied())
        .flat_map(|r| {
            let mut units = [0u16; 2];
            match r {
                Ok(c) => {
                    let mut up = c.to_uppercase();
                    let single = match (up.next(), up.next()) {
                        (Some(u), None) => u,
                        _ => c,
                    };
                    single.encode_utf16(&mut units).to_vec()
                }
                Err(e) => vec![e.unpaired_surrogate()],
            }
        })
        .collect()
}

/// The name a restore gives to an entry whose name collides, ignoring case, with one it
/// already restored in the same directory: `report (case 2).txt` for `REPORT.txt`.
pub fn collision_name(name: &[u16], n: u32) -> Vec<u16> {
    let text = String::from_utf16_lossy(name);
    // Keep the extension so the file still opens with its program.
    let (stem, ext) = match text.rfind('.') {
        Some(i) if i > 0 => text.split_at(i),
        _ => (text.as_str(), ""),
    };
    let mut out = String::new();
    let _ = write!(out, "{stem} (case {n}){ext}");
    out.encode_utf16().collect()
}

/// Catalog path of an absolute Windows path (`C:\x\y`, `c:/x`, `\\?\C:\x`), if it is one.
pub fn catalog_path(path: &str) -> Option<Vec<Vec<u8>>> {
    let rest = path
        .strip_prefix(r"\\?\")
        .or_else(|| path.strip_prefix(r"\??\"))
        .unwrap_or(path);
    let mut chars = rest.chars();
    let (letter, colon) = (chars.next()?, chars.next()?);
    if !letter.is_ascii_alphabetic() || colon != ':' {
        return None;
    }
    let tail = chars.as_str();
    if !(tail.is_empty() || tail.starts_with(['\\', '/'])) {
        return None; // `C:foo` is relative to the drive's current directory
    }
    let mut out = vec![letter.to_ascii_uppercase().to_string().into_bytes()];
    for c in tail
        .split(['\\', '/'])
        .filter(|c| !c.is_empty() && *c != ".")
    {
        if c == ".." {
            return None;
        }
        out.push(utf16_to_bytes(&c.encode_utf16().collect::<Vec<_>>()));
    }
    Some(out)
}

/// What a plan's selection means on Windows.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    /// `/` (the default plan): every fixed volume.
    AllVolumes,
    /// A path below a drive, as catalog components (`C:\Users` -> `["C", "Users"]`).
    Path(Vec<Vec<u8>>),
    /// A Unix path (`/home`): a Linux selection, skipped with a warning.
    NotWindows,
}

/// Reads one selection of a plan.
pub fn selection(sel: &str) -> Selection {
    let s = sel.trim();
    if s == "/" || s == "\\" || s == "*:\\" || s == "*:/" {
        return Selection::AllVolumes;
    }
    match catalog_path(s) {
        Some(c) => Selection::Path(c),
        None => Selection::NotWindows,
    }
}

/// A plan's exclusion pattern in the `/`-form the exclusion engine matches on Windows, or
/// `None` for a Unix pattern (starting with `/`), which only Linux agents apply.
/// `C:\Windows` -> `/C/Windows`; `*:\pagefile.sys` -> `/*/pagefile.sys` (any drive);
/// `Thumbs.db` (no separator) stays a name matched at any depth.
pub fn exclude_pattern(pattern: &str) -> Option<String> {
    let p = pattern.trim();
    if p.starts_with('/') {
        return None;
    }
    let bytes = p.as_bytes();
    if bytes.len() >= 2
        && bytes[1] == b':'
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'*' || bytes[0] == b'?')
    {
        let drive = if bytes[0].is_ascii_alphabetic() {
            (bytes[0] as char).to_ascii_uppercase().to_string()
        } else {
            (bytes[0] as char).to_string()
        };
        let rest = p[2..].replace('\\', "/");
        return Some(format!("/{drive}/{}", rest.trim_start_matches('/')));
    }
    Some(p.replace('\\', "/"))
}

/// True when `pattern` is written the Windows way (`C:\...`, `*:\...`): Linux agents skip
/// such patterns so that one plan can carry both systems' exclusions.
pub fn is_windows_pattern(pattern: &str) -> bool {
    let b = pattern.trim().as_bytes();
    b.len() >= 3
        && b[1] == b':'
        && (b[0].is_ascii_alphabetic() || b[0] == b'*' || b[0] == b'?')
        && (b[2] == b'\\' || b[2] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn valid_names_are_plain_utf8() {
        for s in ["notes.txt", "été", "日本語", "🙂 smile", "CON", "a. ", ""] {
            assert_eq!(utf16_to_bytes(&units(s)), s.as_bytes());
            assert_eq!(bytes_to_utf16(s.as_bytes()), units(s));
        }
    }

    #[test]
    fn unpaired_surrogates_round_trip() {
        let cases: [&[u16]; 5] = [
            &[0xD800],
            &[0x61, 0xDC00, 0x62],
            &[0xDBFF, 0x41],
            &[0xDC00, 0xD800],         // trail then lead: two unpaired units
            &[0xD83D, 0xDE42, 0xD83D], // a pair (🙂) then a lone lead
        ];
        for c in cases {
            let b = utf16_to_bytes(c);
            assert_eq!(bytes_to_utf16(&b), c, "{b:x?}");
        }
        assert_eq!(utf16_to_bytes(&[0xD800]), [0xED, 0xA0, 0x80]);
        // The pair is written as one 4-byte sequence, never as two 3-byte ones.
        assert_eq!(utf16_to_bytes(&[0xD83D, 0xDE42]), "🙂".as_bytes());
    }

    #[test]
    fn foreign_bytes_become_escaped_surrogates() {
        // Latin-1 "é" from a Linux catalog, and a surrogate pair written as two 3-byte
        // sequences (not WTF-8): each stray byte is kept as U+DC00 + byte.
        assert_eq!(bytes_to_utf16(b"caf\xe9"), [0x63, 0x61, 0x66, 0xDCE9]);
        let fake_pair = [0xED, 0xA0, 0xBD, 0xED, 0xB9, 0x82];
        assert_eq!(bytes_to_utf16(&fake_pair)[0], 0xDCED);
        assert_eq!(bytes_to_utf16(b"\xC0\x80")[..2], [0xDCC0, 0xDC80]);
    }

    #[test]
    fn case_keys_and_collision_names() {
        assert_eq!(
            case_key(&units("Readme.TXT")),
            case_key(&units("README.txt"))
        );
        assert_eq!(case_key(&units("été")), case_key(&units("ÉTÉ")));
        assert_ne!(case_key(&units("a")), case_key(&units("b")));
        // ß upper-cases to two letters: NTFS keeps it, so do we.
        assert_eq!(case_key(&units("ß")), units("ß"));
        assert_eq!(case_key(&[0xD800]), [0xD800]);
        assert_eq!(
            String::from_utf16(&collision_name(&units("README.txt"), 2)).unwrap(),
            "README (case 2).txt"
        );
        assert_eq!(
            String::from_utf16(&collision_name(&units(".profile"), 3)).unwrap(),
            ".profile (case 3)"
        );
    }

    #[test]
    fn windows_paths_become_catalog_components() {
        let c = |s: &str| {
            catalog_path(s).map(|v| {
                v.into_iter()
                    .map(|c| String::from_utf8(c).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            c(r"c:\Users\Ann\"),
            Some(vec!["C".into(), "Users".into(), "Ann".into()])
        );
        assert_eq!(
            c(r"\\?\D:\data\x"),
            Some(vec!["D".into(), "data".into(), "x".into()])
        );
        assert_eq!(
            c("E:/a//b/./c"),
            Some(vec!["E".into(), "a".into(), "b".into(), "c".into()])
        );
        assert_eq!(c("C:"), Some(vec!["C".into()]));
        assert_eq!(c("C:foo"), None);
        assert_eq!(c(r"C:\a\..\b"), None);
        assert_eq!(c("/home"), None);
        assert_eq!(c(r"\\server\share"), None);
    }

    #[test]
    fn selections_read_the_windows_way() {
        assert_eq!(selection("/"), Selection::AllVolumes);
        assert_eq!(selection(r"*:\"), Selection::AllVolumes);
        assert_eq!(selection("/home"), Selection::NotWindows);
        assert_eq!(
            selection(r"C:\Users"),
            Selection::Path(vec![b"C".to_vec(), b"Users".to_vec()])
        );
    }

    #[test]
    fn exclusion_patterns_normalise() {
        assert_eq!(
            exclude_pattern(r"C:\Windows").as_deref(),
            Some("/C/Windows")
        );
        assert_eq!(
            exclude_pattern(r"c:\Windows\").as_deref(),
            Some("/C/Windows/")
        );
        assert_eq!(
            exclude_pattern(r"*:\Users\*\AppData\Local\Temp").as_deref(),
            Some("/*/Users/*/AppData/Local/Temp")
        );
        assert_eq!(
            exclude_pattern("pagefile.sys").as_deref(),
            Some("pagefile.sys")
        );
        assert_eq!(exclude_pattern("/proc"), None);
        assert!(is_windows_pattern(r"C:\Windows"));
        assert!(is_windows_pattern(r"*:\pagefile.sys"));
        assert!(!is_windows_pattern("/proc"));
        assert!(!is_windows_pattern("*.tmp"));
    }
}
