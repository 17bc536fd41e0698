//! Several encoded chunks in one HTTP body: the upload `POST /agent/chunks` (agent to box)
//! and the fetch `POST /agent/snapshots/{id}/chunks` (box to agent).
//!
//! ```text
//! repeated, nothing before, between or after:
//! offset size  field
//! 0      32    the chunk's digest
//! 32     4     length of the encoded chunk, u32 little-endian
//! 36     ...   the encoded chunk (header + payload, as stored)
//! ```
//!
//! One request per chunk cost more than the chunk itself for 64 KiB image chunks (HTTP/2
//! stream, handler, thread hand-offs on both sides); a batch pays that once. The frames say
//! nothing a single chunk upload does not: every chunk is still checked against its digest.

use abri_store::{Digest, MAX_CHUNK_LEN};

/// The media type of a batch body.
pub const CONTENT_TYPE: &str = "application/x-abri-chunks";
/// Bytes before each encoded chunk.
pub const FRAME_HEADER_LEN: usize = 36;
/// Largest encoded chunk a frame may carry: a raw chunk of the largest size plus its header.
pub const MAX_FRAME_LEN: usize = MAX_CHUNK_LEN + abri_store::CHUNK_HEADER_LEN;
/// Largest body the box accepts or sends: one chunk of the largest size always fits.
pub const MAX_BATCH_BYTES: usize = 2 * MAX_CHUNK_LEN;
/// Most chunks in one batch.
pub const MAX_BATCH_CHUNKS: usize = 1024;
/// Most chunks one fetch may ask for.
pub const MAX_FETCH_CHUNKS: usize = 256;
/// What an agent asks for in one fetch, in raw bytes (a chunk larger than this goes alone).
pub const BATCH_TARGET_BYTES: usize = 4 << 20;

/// Why a batch body was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("the batch ends inside the frame of chunk {index} (offset {offset})")]
    Truncated { index: usize, offset: usize },
    #[error("chunk {index} declares {len} bytes, more than a chunk can have ({MAX_FRAME_LEN})")]
    FrameTooLarge { index: usize, len: usize },
    #[error("the batch holds more than {MAX_BATCH_CHUNKS} chunks")]
    TooManyChunks,
    #[error("the batch is empty")]
    Empty,
}

/// Appends one frame to `out`.
pub fn push_frame(out: &mut Vec<u8>, digest: &Digest, encoded: &[u8]) {
    out.extend_from_slice(&digest.0);
    out.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
    out.extend_from_slice(encoded);
}

/// Appends one frame whose encoded chunk `fill` appends to `out` itself (returning how
/// many bytes), so the chunk is not copied through a buffer of its own. On `fill`'s error,
/// `out` is as it was.
pub fn push_frame_with<E>(
    out: &mut Vec<u8>,
    digest: &Digest,
    fill: impl FnOnce(&mut Vec<u8>) -> Result<usize, E>,
) -> Result<(), E> {
    let start = out.len();
    out.extend_from_slice(&digest.0);
    out.extend_from_slice(&[0; 4]);
    match fill(out) {
        Ok(len) => {
            // A chunk file is at most MAX_FRAME_LEN bytes; saturate rather than wrap so a
            // larger one is refused by the receiver instead of misframing the batch.
            let len = u32::try_from(len).unwrap_or(u32::MAX);
            out[start + 32..start + FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// The frames of a body, in order; the whole body must be frames.
pub fn parse_frames(body: &[u8]) -> Result<Vec<(Digest, &[u8])>, BatchError> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let index = frames.len();
        if index == MAX_BATCH_CHUNKS {
            return Err(BatchError::TooManyChunks);
        }
        let truncated = BatchError::Truncated { index, offset: at };
        let header = body
            .get(at..at + FRAME_HEADER_LEN)
            .ok_or(truncated.clone())?;
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&header[..32]);
        let len = u32::from_le_bytes([header[32], header[33], header[34], header[35]]) as usize;
        if len > MAX_FRAME_LEN {
            return Err(BatchError::FrameTooLarge { index, len });
        }
        let start = at + FRAME_HEADER_LEN;
        let chunk = body.get(start..start + len).ok_or(truncated)?;
        frames.push((Digest(digest), chunk));
        at = start + len;
    }
    if frames.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_order() {
        let mut body = Vec::new();
        push_frame(&mut body, &Digest([1; 32]), b"first");
        push_frame(&mut body, &Digest([2; 32]), b"");
        push_frame(&mut body, &Digest([3; 32]), &[7u8; 1000]);
        let frames = parse_frames(&body).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], (Digest([1; 32]), &b"first"[..]));
        assert_eq!(frames[1], (Digest([2; 32]), &b""[..]));
        assert_eq!(frames[2].0, Digest([3; 32]));
        assert_eq!(frames[2].1, &[7u8; 1000][..]);
    }

    #[test]
    fn frames_filled_in_place_match_copied_ones() {
        let mut copied = Vec::new();
        push_frame(&mut copied, &Digest([1; 32]), b"first");
        push_frame(&mut copied, &Digest([2; 32]), &[9u8; 300]);
        let mut filled = Vec::new();
        let fill = |bytes: &'static [u8]| {
            move |out: &mut Vec<u8>| {
                out.extend_from_slice(bytes);
                Ok::<_, ()>(bytes.len())
            }
        };
        push_frame_with(&mut filled, &Digest([1; 32]), fill(b"first")).unwrap();
        push_frame_with(&mut filled, &Digest([2; 32]), fill(&[9u8; 300])).unwrap();
        assert_eq!(filled, copied);
        // A failed fill leaves the body as it was, even if it wrote something first.
        let failed = push_frame_with(&mut filled, &Digest([3; 32]), |out: &mut Vec<u8>| {
            out.extend_from_slice(b"partial");
            Err("cannot read the chunk file")
        });
        assert_eq!(failed, Err("cannot read the chunk file"));
        assert_eq!(filled, copied);
    }

    #[test]
    fn every_cut_of_a_body_is_refused() {
        let mut body = Vec::new();
        push_frame(&mut body, &Digest([1; 32]), b"first");
        push_frame(&mut body, &Digest([2; 32]), b"second");
        let first_end = FRAME_HEADER_LEN + 5;
        for cut in 1..body.len() {
            if cut == first_end {
                assert_eq!(parse_frames(&body[..cut]).unwrap().len(), 1);
                continue;
            }
            let index = usize::from(cut > first_end);
            let offset = if index == 0 { 0 } else { first_end };
            assert_eq!(
                parse_frames(&body[..cut]),
                Err(BatchError::Truncated { index, offset }),
                "cut at {cut}"
            );
        }
        assert_eq!(parse_frames(&[]), Err(BatchError::Empty));
    }

    #[test]
    fn a_frame_larger_than_a_chunk_and_too_many_frames_are_refused() {
        let mut body = vec![0u8; 32];
        body.extend_from_slice(&((MAX_FRAME_LEN + 1) as u32).to_le_bytes());
        assert_eq!(
            parse_frames(&body),
            Err(BatchError::FrameTooLarge {
                index: 0,
                len: MAX_FRAME_LEN + 1
            })
        );
        let mut many = Vec::new();
        for _ in 0..=MAX_BATCH_CHUNKS {
            push_frame(&mut many, &Digest([0; 32]), b"");
        }
        assert_eq!(parse_frames(&many), Err(BatchError::TooManyChunks));
    }
}
