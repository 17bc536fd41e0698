//! Directory blocks: the linear entry format. Hashed (htree) directories keep their
//! entries in ordinary blocks too; their index blocks look like one empty entry spanning
//! the block, so a linear scan sees every name once.

use super::le16;
use super::le32;
use crate::error::{Error, Result};

/// One live entry of a directory block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirRecord {
    pub(crate) inode: u32,
    pub(crate) name: Vec<u8>,
}

/// Appends the live entries of one directory region (a block, or an inline-data area) to
/// `out`, skipping `.`, `..`, deleted entries and checksum tails.
pub(crate) fn parse_region(
    region: &[u8],
    has_filetype: bool,
    dir_inode: u32,
    out: &mut Vec<DirRecord>,
) -> Result<()> {
    let mut at = 0usize;
    while at + 8 <= region.len() {
        let inode = le32(region, at);
        let mut rec_len = le16(region, at + 4) as usize;
        // 64 KiB blocks store a full-block record length as 0 or 65535.
        if region.len() >= 65536 && (rec_len == 0 || rec_len == 65535) {
            rec_len = 65536;
        }
        let name_len = if has_filetype {
            region[at + 6] as usize
        } else {
            le16(region, at + 6) as usize
        };
        if rec_len < 8
            || !rec_len.is_multiple_of(4)
            || at + rec_len > region.len()
            || 8 + name_len > rec_len
        {
            return Err(Error::corrupt(
                "ext4 directory",
                format!(
                    "directory inode {dir_inode}: bad entry at byte {at} (record length {rec_len}, name length {name_len})"
                ),
            ));
        }
        let name = &region[at + 8..at + 8 + name_len];
        if inode != 0 && name != b"." && name != b".." && !name.is_empty() {
            out.push(DirRecord {
                inode,
                name: name.to_vec(),
            });
        }
        at += rec_len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(inode: u32, rec_len: u16, name: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&inode.to_le_bytes());
        r.extend_from_slice(&rec_len.to_le_bytes());
        r.push(name.len() as u8);
        r.push(1);
        r.extend_from_slice(name);
        r.resize(rec_len as usize, 0);
        r
    }

    #[test]
    fn skips_dot_entries_and_deleted_ones() {
        let mut block = record(2, 12, b".");
        block.extend(record(2, 12, b".."));
        block.extend(record(0, 16, b"gone"));
        block.extend(record(12, 20, b"kept"));
        let mut out = Vec::new();
        parse_region(&block, true, 2, &mut out).unwrap();
        assert_eq!(
            out,
            vec![DirRecord {
                inode: 12,
                name: b"kept".to_vec()
            }]
        );
    }

    #[test]
    fn refuses_a_record_running_past_the_block() {
        let mut block = record(2, 12, b".");
        block.extend(record(13, 12, b"abc"));
        block[16..18].copy_from_slice(&40u16.to_le_bytes());
        assert!(parse_region(&block, true, 2, &mut Vec::new()).is_err());
    }
}
