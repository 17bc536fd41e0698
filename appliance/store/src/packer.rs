//! `FilePacker`: turns the files of a walk into one chunk stream plus, per file, the
//! extents that say where its bytes went.
//!
//! The agent feeds files one after another; their data regions are concatenated into a
//! single stream cut by the content-defined [`Chunker`], so small files share chunks and a
//! large file spans many. Holes (sparse regions) are skipped, never put in the stream.
//!
//! Invariants:
//! - Outputs come in stream order, and a [`PackedFile`] comes only after every
//!   [`PackedChunk`] its extents name, so an uploader that handles outputs in order has
//!   every chunk of a file in flight before it records the file.
//! - Memory: the chunker's window (2 × `max` bytes), plus the outputs not yet taken with
//!   [`FilePacker::next_output`] (take them after every `write`), plus a few words per
//!   pending file piece.
//! - Deterministic: outputs depend only on the files' bytes and offsets, not on how the
//!   caller slices its `write` calls.

use std::collections::VecDeque;

use crate::catalog::Extent;
use crate::chunker::{Chunker, ChunkerParams};
use crate::error::{Result, StoreError};
use crate::key::{ChunkKey, Digest};

/// A finished chunk: its raw bytes and digest (encode with [`crate::encode_chunk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedChunk {
    /// Keyed BLAKE3 of `data`.
    pub digest: Digest,
    /// The raw bytes.
    pub data: Vec<u8>,
}

/// A finished file: where each of its data regions lives. Bytes of `0..size` that no
/// extent covers are holes (zeros on restore).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedFile {
    /// The id given to [`FilePacker::begin_file`].
    pub id: u64,
    /// The file position reached: last write or hole end.
    pub size: u64,
    /// Data regions in increasing, non-overlapping file order.
    pub extents: Vec<Extent>,
}

/// One output of the packer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packed {
    /// A chunk to encode and upload (if the box lacks it).
    Chunk(PackedChunk),
    /// A file whose extents are all known.
    File(PackedFile),
}

/// Packs files into content-defined chunks. See the module documentation.
#[derive(Debug)]
pub struct FilePacker {
    key: ChunkKey,
    chunker: Chunker,
    /// Stream bytes not yet in a finished chunk, as runs of one file's contiguous bytes.
    pieces: VecDeque<Piece>,
    /// Files begun but not yet output, oldest first; `files[i]` has sequence `base_seq + i`.
    files: VecDeque<PendingFile>,
    base_seq: u64,
    open: Option<OpenFile>,
    out: VecDeque<Packed>,
}

#[derive(Debug)]
struct Piece {
    seq: u64,
    file_offset: u64,
    len: u64,
}

#[derive(Debug)]
struct PendingFile {
    id: u64,
    ended: bool,
    size: u64,
    extents: Vec<Extent>,
}

#[derive(Debug)]
struct OpenFile {
    seq: u64,
    pos: u64,
}

impl FilePacker {
    /// A packer naming chunks with `key` and cutting them with `params`.
    pub fn new(key: ChunkKey, params: ChunkerParams) -> Self {
        FilePacker {
            key,
            chunker: Chunker::new(params),
            pieces: VecDeque::new(),
            files: VecDeque::new(),
            base_seq: 0,
            open: None,
            out: VecDeque::new(),
        }
    }

    /// Starts a file; its position is 0. Fails if a file is already open.
    pub fn begin_file(&mut self, id: u64) -> Result<()> {
        if self.open.is_some() {
            return Err(StoreError::PackerMisuse(
                "begin_file while a file is open: call end_file first",
            ));
        }
        let seq = self.base_seq + self.files.len() as u64;
        self.files.push_back(PendingFile {
            id,
            ended: false,
            size: 0,
            extents: Vec::new(),
        });
        self.open = Some(OpenFile { seq, pos: 0 });
        Ok(())
    }

    /// Appends data at the open file's current position.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let open = self
            .open
            .as_ref()
            .ok_or(StoreError::PackerMisuse("write without begin_file"))?;
        if data.is_empty() {
            return Ok(());
        }
        let seq = open.seq;
        self.chunker.push(data);
        self.wrote(seq, data.len());
        Ok(())
    }

    /// Appends at the open file's current position up to `max_len` bytes that `read` writes
    /// straight into the chunker's window (see [`Chunker::push_from`]), which saves copying
    /// file data through a buffer of the caller's. Returns how many bytes were appended; 0
    /// means `read` wrote none (end of file). On `read`'s error nothing is appended.
    pub fn write_from<E: From<StoreError>>(
        &mut self,
        max_len: usize,
        read: impl FnOnce(&mut [u8]) -> std::result::Result<usize, E>,
    ) -> std::result::Result<usize, E> {
        let seq = self
            .open
            .as_ref()
            .ok_or(StoreError::PackerMisuse("write_from without begin_file"))?
            .seq;
        let n = self.chunker.push_from(max_len, read)?;
        self.wrote(seq, n);
        Ok(n)
    }

    /// Records `n` bytes just pushed into the chunker as the open file's (sequence `seq`)
    /// next bytes, and takes the chunks they completed.
    fn wrote(&mut self, seq: u64, n: usize) {
        if n == 0 {
            return;
        }
        let len = n as u64;
        if let Some(open) = self.open.as_mut() {
            match self.pieces.back_mut() {
                Some(p) if p.seq == seq && p.file_offset + p.len == open.pos => p.len += len,
                _ => self.pieces.push_back(Piece {
                    seq,
                    file_offset: open.pos,
                    len,
                }),
            }
            open.pos += len;
        }
        self.drain_chunker();
    }

    /// Moves the open file's position forward to `file_offset`, leaving a hole. Use it for
    /// sparse regions (SEEK_HOLE) and for a trailing hole before `end_file`.
    pub fn skip_hole(&mut self, file_offset: u64) -> Result<()> {
        let open = self
            .open
            .as_mut()
            .ok_or(StoreError::PackerMisuse("skip_hole without begin_file"))?;
        if file_offset < open.pos {
            return Err(StoreError::PackerMisuse(
                "skip_hole backwards: data regions must come in increasing file order",
            ));
        }
        open.pos = file_offset;
        Ok(())
    }

    /// Ends the open file. Its [`PackedFile`] is output once its last chunk is cut.
    pub fn end_file(&mut self) -> Result<()> {
        let open = self
            .open
            .take()
            .ok_or(StoreError::PackerMisuse("end_file without begin_file"))?;
        if let Some(f) = self.file_mut(open.seq) {
            f.ended = true;
            f.size = open.pos;
        }
        self.flush_files();
        Ok(())
    }

    /// Ends the stream: cuts the last chunk and outputs every remaining file. The packer
    /// may then start a new stream.
    pub fn finish(&mut self) -> Result<()> {
        if self.open.is_some() {
            return Err(StoreError::PackerMisuse(
                "finish while a file is open: call end_file first",
            ));
        }
        self.chunker.finish();
        self.drain_chunker();
        self.flush_files();
        Ok(())
    }

    /// The next output, in order. Call until `None` after every other call.
    pub fn next_output(&mut self) -> Option<Packed> {
        self.out.pop_front()
    }

    fn file_mut(&mut self, seq: u64) -> Option<&mut PendingFile> {
        let idx = usize::try_from(seq.checked_sub(self.base_seq)?).ok()?;
        self.files.get_mut(idx)
    }

    fn drain_chunker(&mut self) {
        while let Some(data) = self.chunker.pop() {
            let digest = self.key.digest(&data);
            self.assign(digest, data.len() as u64);
            self.out
                .push_back(Packed::Chunk(PackedChunk { digest, data }));
            self.flush_files();
        }
    }

    /// Gives the first `chunk_len` pending stream bytes to their files as extents.
    fn assign(&mut self, digest: Digest, chunk_len: u64) {
        let mut chunk_offset = 0u64;
        while chunk_offset < chunk_len {
            let Some(piece) = self.pieces.front_mut() else {
                break; // unreachable: pieces cover every pushed byte
            };
            let take = piece.len.min(chunk_len - chunk_offset);
            let (seq, file_offset) = (piece.seq, piece.file_offset);
            piece.file_offset += take;
            piece.len -= take;
            if piece.len == 0 {
                self.pieces.pop_front();
            }
            if let Some(f) = self.file_mut(seq) {
                // Both fit in u32: a chunk is at most 16 MiB.
                f.extents.push(Extent {
                    digest,
                    chunk_offset: chunk_offset as u32,
                    len: take as u32,
                    file_offset,
                });
            }
            chunk_offset += take;
        }
    }

    /// Outputs the leading files that are ended and have no bytes left in the chunker.
    fn flush_files(&mut self) {
        while let Some(f) = self.files.front() {
            let pending = self.pieces.front().is_some_and(|p| p.seq == self.base_seq);
            if !f.ended || pending {
                break;
            }
            if let Some(f) = self.files.pop_front() {
                self.base_seq += 1;
                self.out.push_back(Packed::File(PackedFile {
                    id: f.id,
                    size: f.size,
                    extents: f.extents,
                }));
            }
        }
    }
}

#[cfg(test)]
mod tests;
