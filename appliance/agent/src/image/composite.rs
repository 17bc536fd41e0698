//! A disk assembled from pieces: the whole disk read from the disk device, except the
//! ranges that a volume's snapshot covers, which are read from that snapshot. This is how
//! a Windows disk is imaged consistently: each partition with a mounted volume comes from
//! its VSS snapshot, the partition table, gaps and unmounted partitions (EFI, MSR,
//! recovery) from the disk itself.

use std::io;

use super::source::BlockSource;

/// `len` bytes of the disk from `start` on, read from `source` at offset 0.
pub struct Piece {
    pub start: u64,
    pub len: u64,
    pub source: Box<dyn BlockSource>,
}

/// The disk with pieces laid over it.
pub struct CompositeSource {
    base: Box<dyn BlockSource>,
    /// Sorted by start, not overlapping, inside the disk.
    pieces: Vec<Piece>,
}

impl CompositeSource {
    /// Lays `pieces` over `base`; refuses pieces that overlap, leave the disk or are longer
    /// than their source.
    pub fn new(base: Box<dyn BlockSource>, mut pieces: Vec<Piece>) -> io::Result<Self> {
        let size = base.size();
        pieces.sort_by_key(|p| p.start);
        let mut end_of_previous = 0u64;
        for p in &pieces {
            let end = p.start.checked_add(p.len).filter(|&e| e <= size);
            let Some(end) = end else {
                return Err(io::Error::other(format!(
                    "the volume at {} ({} bytes) does not fit on the disk ({size} bytes)",
                    p.start, p.len
                )));
            };
            if p.len == 0 || p.len > p.source.size() {
                return Err(io::Error::other(format!(
                    "the volume at {} holds {} bytes, not the {} of its partition",
                    p.start,
                    p.source.size(),
                    p.len
                )));
            }
            if p.start < end_of_previous {
                return Err(io::Error::other(format!(
                    "the volumes at {} and before overlap on the disk",
                    p.start
                )));
            }
            end_of_previous = end;
        }
        Ok(CompositeSource { base, pieces })
    }

    /// Where the bytes at `offset` come from: `(piece index or None for the disk, how many
    /// bytes from there on come from the same place)`.
    fn place(&self, offset: u64) -> (Option<usize>, u64) {
        let size = self.base.size();
        // The first piece ending after `offset`.
        let i = self.pieces.partition_point(|p| p.start + p.len <= offset);
        match self.pieces.get(i) {
            Some(p) if p.start <= offset => (Some(i), p.start + p.len - offset),
            Some(p) => (None, p.start - offset),
            None => (None, size - offset),
        }
    }
}

impl BlockSource for CompositeSource {
    fn size(&self) -> u64 {
        self.base.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read at {offset} past the end of the disk"),
                )
            })?;
        let mut pos = offset;
        while pos < end {
            let (from, run) = self.place(pos);
            let n = run.min(end - pos);
            let out = &mut buf[(pos - offset) as usize..(pos - offset + n) as usize];
            match from {
                Some(i) => {
                    let p = &self.pieces[i];
                    p.source.read_at(pos - p.start, out)?;
                }
                None => self.base.read_at(pos, out)?,
            }
            pos += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::aligned::tests::Device;

    fn filled(len: usize, byte: u8) -> Box<dyn BlockSource> {
        Box::new(Device::new(vec![byte; len], 1))
    }

    fn piece(start: u64, len: u64, byte: u8, source_len: usize) -> Piece {
        Piece {
            start,
            len,
            source: filled(source_len, byte),
        }
    }

    #[test]
    fn reads_come_from_the_pieces_and_the_gaps_from_the_disk() {
        let disk = CompositeSource::new(
            filled(100, 0xdd),
            vec![piece(60, 30, 2, 30), piece(10, 20, 1, 25)],
        )
        .unwrap();
        let mut all = vec![0u8; 100];
        disk.read_at(0, &mut all).unwrap();
        let mut want = vec![0xddu8; 100];
        want[10..30].fill(1);
        want[60..90].fill(2);
        assert_eq!(all, want);
        // Reads that start inside a piece, span a gap and end inside the next one.
        for (offset, n) in [
            (15u64, 50usize),
            (29, 2),
            (30, 30),
            (89, 11),
            (0, 10),
            (99, 1),
        ] {
            let mut buf = vec![0u8; n];
            disk.read_at(offset, &mut buf).unwrap();
            assert_eq!(
                buf,
                want[offset as usize..offset as usize + n],
                "{offset}+{n}"
            );
        }
        let mut buf = [0u8; 2];
        assert!(disk.read_at(99, &mut buf).is_err());
    }

    #[test]
    fn piece_offsets_are_relative_to_the_volume() {
        let volume: Vec<u8> = (0..40).collect();
        let disk = CompositeSource::new(
            filled(100, 0xdd),
            vec![Piece {
                start: 50,
                len: 40,
                source: Box::new(Device::new(volume, 1)),
            }],
        )
        .unwrap();
        let mut buf = [0u8; 4];
        disk.read_at(48, &mut buf).unwrap();
        assert_eq!(buf, [0xdd, 0xdd, 0, 1]);
        disk.read_at(88, &mut buf).unwrap();
        assert_eq!(buf, [38, 39, 0xdd, 0xdd]);
    }

    #[test]
    fn overlapping_outside_or_short_pieces_are_refused() {
        let overlap = CompositeSource::new(
            filled(100, 0),
            vec![piece(10, 20, 1, 20), piece(29, 10, 2, 10)],
        );
        assert!(overlap.is_err());
        let outside = CompositeSource::new(filled(100, 0), vec![piece(90, 20, 1, 20)]);
        assert!(outside.is_err());
        let wraps = CompositeSource::new(filled(100, 0), vec![piece(u64::MAX, 2, 1, 2)]);
        assert!(wraps.is_err());
        let short = CompositeSource::new(filled(100, 0), vec![piece(10, 20, 1, 19)]);
        assert!(short.is_err());
        let empty = CompositeSource::new(filled(100, 0), vec![piece(10, 0, 1, 19)]);
        assert!(empty.is_err());
        // Adjacent pieces are fine.
        let adjacent = CompositeSource::new(
            filled(100, 0),
            vec![piece(10, 20, 1, 20), piece(30, 10, 2, 10)],
        );
        assert!(adjacent.is_ok());
    }
}
