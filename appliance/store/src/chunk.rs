//! The chunk encoding: the exact bytes that travel from agent to box and sit on disk.
//!
//! ```text
//! offset size  field
//! 0      4     magic "ABC1"
//! 4      1     codec: 0 = raw, 1 = zstd
//! 5      3     reserved, zero
//! 8      4     raw length, u32 little-endian (at most MAX_CHUNK_LEN)
//! 12     ...   payload: the raw bytes (codec 0) or one zstd frame (codec 1)
//! ```
//!
//! The digest is not in the header: it names the chunk (file name, URL) and is recomputed
//! from the decoded bytes on every decode, so a chunk can never be read as another.

use crate::aligned::PlacedChunk;
use crate::error::{ChunkDefect, Result, StoreError};
use crate::key::{ChunkKey, Digest};
use std::cell::RefCell;

/// The magic at the start of every encoded chunk.
pub const CHUNK_MAGIC: [u8; 4] = *b"ABC1";
/// Header length in bytes.
pub const CHUNK_HEADER_LEN: usize = 12;
/// Largest raw length a chunk may declare (16 MiB); bounds decompression.
pub const MAX_CHUNK_LEN: usize = 16 * 1024 * 1024;
/// Codec byte: payload is the raw bytes.
pub const CODEC_RAW: u8 = 0;
/// Codec byte: payload is one zstd frame.
pub const CODEC_ZSTD: u8 = 1;

/// Encodes raw chunk bytes, compressing with zstd at `level` and keeping the compressed
/// form only when it is smaller. `raw` must not exceed [`MAX_CHUNK_LEN`] (the chunker never
/// produces more); a larger input yields bytes that [`decode_chunk`] refuses.
pub fn encode_chunk(raw: &[u8], level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    encode_chunk_into(raw, level, &mut out);
    out
}

/// [`encode_chunk`], appended to `out` (compressed straight into it: no copy of the payload,
/// so a sender can put its own framing first).
pub fn encode_chunk_into(raw: &[u8], level: i32, out: &mut Vec<u8>) {
    let raw_len = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    let start = out.len();
    out.extend_from_slice(&CHUNK_MAGIC);
    out.extend_from_slice(&[CODEC_ZSTD, 0, 0, 0]);
    out.extend_from_slice(&raw_len.to_le_bytes());
    let payload = out.len();
    // Room for the worst case, left uninitialised: zstd writes the frame into it.
    out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
    match compress_after(raw, level, out) {
        Some(n) if n < raw.len() => {
            debug_assert_eq!(out.len(), payload + n);
            // Room for the worst case was reserved; a queued chunk should not keep it.
            if out.capacity() - out.len() > out.len() / 4 {
                out.shrink_to_fit();
            }
        }
        _ => {
            out.truncate(payload);
            out[start + 4] = CODEC_RAW;
            out.extend_from_slice(raw);
        }
    }
}

thread_local! {
    /// This thread's compression context and its level. A context holds a few hundred KiB
    /// of tables: making one per chunk cost more than compressing a 64 KiB image chunk.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    /// This thread's decompression context (same reason).
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// `raw` as one zstd frame at `level` appended to `out` (in its spare capacity, which
/// should hold `compress_bound` bytes), on this thread's context: the frame's length, or
/// `None` if zstd fails (then `out` ends where it did or is truncated further by the caller).
fn compress_after(raw: &[u8], level: i32, out: &mut Vec<u8>) -> Option<usize> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, compressor) = slot.as_mut()?;
        let end = out.len() as u64;
        let mut cursor = std::io::Cursor::new(out);
        cursor.set_position(end);
        compressor.compress_to_buffer(raw, &mut cursor).ok()
    })
}

/// Runs `f` with this thread's decompression context, made on first use.
fn with_decompressor<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>) -> std::io::Result<T>,
) -> std::io::Result<T> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => f(d),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

/// One zstd frame of at most `capacity` bytes decompressed, on this thread's context.
fn decompress(payload: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    with_decompressor(|d| d.decompress(payload, capacity))
}

/// [`decode_chunk`] into `dest`, which must be exactly the chunk's raw length (a chunk of
/// another length is refused before anything is decoded). Saves a restore that knows
/// where each chunk goes a copy and an allocation per chunk. On an error, `dest` holds
/// bytes that must not be used.
pub fn decode_chunk_into(
    bytes: &[u8],
    key: &ChunkKey,
    expected: &Digest,
    dest: &mut [u8],
) -> Result<()> {
    let bad = |defect| StoreError::BadChunk {
        digest: *expected,
        defect,
    };
    let (codec, declared) = declared_len(bytes).map_err(bad)?;
    if declared as usize != dest.len() {
        return Err(bad(ChunkDefect::LengthMismatch {
            declared,
            actual: dest.len(),
        }));
    }
    let payload = &bytes[CHUNK_HEADER_LEN..];
    let written = if codec == CODEC_RAW {
        if payload.len() == dest.len() {
            dest.copy_from_slice(payload);
        }
        payload.len()
    } else {
        decompress_to(payload, dest).map_err(|e| bad(ChunkDefect::Decompress(e.to_string())))?
    };
    if written != dest.len() {
        return Err(bad(ChunkDefect::LengthMismatch {
            declared,
            actual: written,
        }));
    }
    check_digest(key, expected, dest)
}

/// [`decode_chunk`] into a buffer placed at `lead` (see [`PlacedChunk`]): the bytes are
/// decompressed where they stay, and only the padding before them is zeroed.
pub fn decode_chunk_placed(
    bytes: &[u8],
    key: &ChunkKey,
    expected: &Digest,
    lead: usize,
) -> Result<PlacedChunk> {
    let bad = |defect| StoreError::BadChunk {
        digest: *expected,
        defect,
    };
    let (codec, declared) = declared_len(bytes).map_err(bad)?;
    let payload = &bytes[CHUNK_HEADER_LEN..];
    let length = |actual| bad(ChunkDefect::LengthMismatch { declared, actual });
    let placed = if codec == CODEC_RAW {
        if payload.len() != declared as usize {
            return Err(length(payload.len()));
        }
        PlacedChunk::copied(payload, lead)
    } else {
        let mut placed = PlacedChunk::with_room(declared as usize, lead);
        let (buf, start) = placed.filler();
        buf.resize(start, 0);
        // The room after `start` is the declared length and less than `2 * ALIGN` more: a
        // frame longer than declared fails or is refused below.
        let mut cursor = std::io::Cursor::new(buf);
        cursor.set_position(start as u64);
        let written = with_decompressor(|d| d.decompress_to_buffer(payload, &mut cursor))
            .map_err(|e| bad(ChunkDefect::Decompress(e.to_string())))?;
        if written != declared as usize {
            return Err(length(written));
        }
        placed
    };
    check_digest(key, expected, &placed)?;
    Ok(placed)
}

/// One zstd frame decompressed into `dest` (never past its end), on this thread's context:
/// the number of bytes written.
fn decompress_to(payload: &[u8], dest: &mut [u8]) -> std::io::Result<usize> {
    with_decompressor(|d| d.decompress_to_buffer(payload, dest))
}

/// Decodes an encoded chunk, checks every header field, and refuses it unless its raw
/// bytes hash (with `key`) to `expected`. Returns the raw bytes.
pub fn decode_chunk(bytes: &[u8], key: &ChunkKey, expected: &Digest) -> Result<Vec<u8>> {
    let bad = |defect| StoreError::BadChunk {
        digest: *expected,
        defect,
    };
    let raw = decode_unverified(bytes).map_err(bad)?;
    check_digest(key, expected, &raw)?;
    Ok(raw)
}

/// Refuses decoded bytes `raw` unless they hash (with `key`) to `expected`.
fn check_digest(key: &ChunkKey, expected: &Digest, raw: &[u8]) -> Result<()> {
    let actual = key.digest(raw);
    if actual != *expected {
        return Err(StoreError::BadChunk {
            digest: *expected,
            defect: ChunkDefect::DigestMismatch(actual),
        });
    }
    Ok(())
}

/// The raw length declared by a chunk's header, after checking magic, codec and limits.
pub(crate) fn declared_len(bytes: &[u8]) -> Result<(u8, u32), ChunkDefect> {
    if bytes.len() < CHUNK_HEADER_LEN {
        return Err(ChunkDefect::TruncatedHeader(bytes.len()));
    }
    if bytes[0..4] != CHUNK_MAGIC {
        return Err(ChunkDefect::BadMagic);
    }
    let codec = bytes[4];
    if codec != CODEC_RAW && codec != CODEC_ZSTD {
        return Err(ChunkDefect::UnknownCodec(codec));
    }
    if bytes[5..8] != [0, 0, 0] {
        return Err(ChunkDefect::ReservedNotZero);
    }
    let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if len as usize > MAX_CHUNK_LEN {
        return Err(ChunkDefect::TooLarge(len));
    }
    Ok((codec, len))
}

fn decode_unverified(bytes: &[u8]) -> Result<Vec<u8>, ChunkDefect> {
    let (codec, declared) = declared_len(bytes)?;
    let payload = &bytes[CHUNK_HEADER_LEN..];
    let raw = if codec == CODEC_RAW {
        payload.to_vec()
    } else {
        // Capacity = declared length: zstd fails rather than write past it, so a
        // decompression bomb costs at most 16 MiB.
        decompress(payload, declared as usize)
            .map_err(|e| ChunkDefect::Decompress(e.to_string()))?
    };
    if raw.len() != declared as usize {
        return Err(ChunkDefect::LengthMismatch {
            declared,
            actual: raw.len(),
        });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ChunkKey {
        ChunkKey::from_bytes([3; 32])
    }

    /// The defect both decoders find in `bytes` (into a buffer of the declared length, or
    /// of 4096 bytes when the header cannot be read); they must agree on its kind.
    fn both(bytes: &[u8], key: &ChunkKey, expected: &Digest) -> ChunkDefect {
        let found = defect(decode_chunk(bytes, key, expected));
        let len = declared_len(bytes).map(|(_, n)| n as usize).unwrap_or(4096);
        let mut dest = vec![0u8; len];
        let into = match decode_chunk_into(bytes, key, expected, &mut dest) {
            Err(StoreError::BadChunk { defect, .. }) => defect,
            other => panic!("decode_chunk_into: expected BadChunk, got {other:?}"),
        };
        assert_eq!(
            std::mem::discriminant(&found),
            std::mem::discriminant(&into),
            "{found:?} / {into:?}"
        );
        for lead in [0, 1, 4095] {
            let placed = match decode_chunk_placed(bytes, key, expected, lead) {
                Err(StoreError::BadChunk { defect, .. }) => defect,
                other => panic!("decode_chunk_placed: expected BadChunk, got {other:?}"),
            };
            // The placed buffer has up to `2 * ALIGN` bytes of room past the declared
            // length: a longer frame may decompress and then be refused for its length.
            let length = |d: &ChunkDefect| {
                matches!(
                    d,
                    ChunkDefect::Decompress(_) | ChunkDefect::LengthMismatch { .. }
                )
            };
            assert!(
                std::mem::discriminant(&found) == std::mem::discriminant(&placed)
                    || (length(&found) && length(&placed)),
                "{found:?} / {placed:?}"
            );
        }
        found
    }

    /// Decoding into place, or into a buffer placed at a chosen alignment, gives the bytes
    /// decoding gives, for both codecs; a place of the wrong size is refused before
    /// anything is decoded.
    #[test]
    fn decoding_into_place_matches_decoding() {
        let compressible = vec![b'q'; 65536];
        let mut x = 1u64;
        let random: Vec<u8> = (0..65536)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 56) as u8
            })
            .collect();
        let mut codecs = Vec::new();
        for raw in [compressible, random] {
            let d = key().digest(&raw);
            let encoded = encode_chunk(&raw, 3);
            codecs.push(encoded[4]);
            let mut dest = vec![0u8; raw.len()];
            decode_chunk_into(&encoded, &key(), &d, &mut dest).unwrap();
            assert_eq!(dest, raw);
            assert_eq!(decode_chunk(&encoded, &key(), &d).unwrap(), raw);
            for lead in [0, 1, 777, 4095, 4096 + 5] {
                let placed = decode_chunk_placed(&encoded, &key(), &d, lead).unwrap();
                assert_eq!(&placed[..], &raw[..]);
                assert_eq!(placed.as_ptr() as usize % crate::ALIGN, lead % crate::ALIGN);
                assert_eq!(placed.into_vec(), raw);
            }
            for wrong in [raw.len() - 1, raw.len() + 1] {
                let mut dest = vec![7u8; wrong];
                assert!(matches!(
                    decode_chunk_into(&encoded, &key(), &d, &mut dest),
                    Err(StoreError::BadChunk {
                        defect: ChunkDefect::LengthMismatch { .. },
                        ..
                    })
                ));
                assert!(dest.iter().all(|&b| b == 7), "nothing decoded");
            }
        }
        assert_eq!(codecs, [CODEC_ZSTD, CODEC_RAW]);
    }

    fn defect(r: Result<Vec<u8>>) -> ChunkDefect {
        match r {
            Err(StoreError::BadChunk { defect, .. }) => defect,
            other => panic!("expected BadChunk, got {other:?}"),
        }
    }

    #[test]
    fn a_refused_frame_leaves_the_thread_contexts_usable() {
        let raw: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let good = encode_chunk(&raw, 3);
        assert_eq!(good[4], CODEC_ZSTD);
        let mut bad = good.clone();
        let mid = bad.len() / 2;
        bad.truncate(mid);
        let d = key().digest(&raw);
        assert!(matches!(
            defect(decode_chunk(&bad, &key(), &d)),
            ChunkDefect::Decompress(_) | ChunkDefect::LengthMismatch { .. }
        ));
        assert_eq!(decode_chunk(&good, &key(), &d).unwrap(), raw);
        // Another level on the same thread gets its own context, and a valid frame.
        let again = encode_chunk(&raw, 1);
        assert_eq!(decode_chunk(&again, &key(), &d).unwrap(), raw);
        assert_eq!(encode_chunk(&raw, 3), good);
    }

    #[test]
    fn encode_into_appends_after_what_is_there() {
        let key = key();
        for raw in [
            vec![b'z'; 70_000],
            (0..70_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            Vec::new(),
        ] {
            let mut out = b"prefix".to_vec();
            encode_chunk_into(&raw, 3, &mut out);
            assert_eq!(&out[..6], b"prefix");
            assert_eq!(&out[6..], &encode_chunk(&raw, 3)[..]);
            assert_eq!(
                decode_chunk(&out[6..], &key, &key.digest(&raw)).unwrap(),
                raw
            );
        }
        // Incompressible bytes are kept raw, after the prefix.
        let noise: Vec<u8> = (0..160u32)
            .flat_map(|i| key.digest(&i.to_le_bytes()).0)
            .collect();
        let mut out = vec![1, 2, 3];
        encode_chunk_into(&noise, 3, &mut out);
        assert_eq!(out[3 + 4], CODEC_RAW);
        assert_eq!(out.len(), 3 + CHUNK_HEADER_LEN + noise.len());
        assert_eq!(&out[3 + CHUNK_HEADER_LEN..], &noise[..]);
    }

    #[test]
    fn compressible_data_is_stored_compressed() {
        let raw = vec![b'a'; 100_000];
        let enc = encode_chunk(&raw, 3);
        assert_eq!(enc[4], CODEC_ZSTD);
        assert!(enc.len() < 1000);
        let d = key().digest(&raw);
        assert_eq!(decode_chunk(&enc, &key(), &d).unwrap(), raw);
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let raw = crate::testutil::noise(5000, 1);
        let enc = encode_chunk(&raw, 3);
        assert_eq!(enc[4], CODEC_RAW);
        assert_eq!(enc.len(), raw.len() + CHUNK_HEADER_LEN);
        assert_eq!(
            decode_chunk(&enc, &key(), &key().digest(&raw)).unwrap(),
            raw
        );
        let empty = encode_chunk(b"", 3);
        assert_eq!(empty.len(), CHUNK_HEADER_LEN);
        assert!(
            decode_chunk(&empty, &key(), &key().digest(b""))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn every_defect_is_refused() {
        let raw = vec![b'z'; 4096];
        let d = key().digest(&raw);
        let good = encode_chunk(&raw, 1);

        assert_eq!(
            both(&good[..5], &key(), &d),
            ChunkDefect::TruncatedHeader(5)
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(both(&b, &key(), &d), ChunkDefect::BadMagic);
        let mut b = good.clone();
        b[4] = 9;
        assert_eq!(both(&b, &key(), &d), ChunkDefect::UnknownCodec(9));
        let mut b = good.clone();
        b[6] = 1;
        assert_eq!(both(&b, &key(), &d), ChunkDefect::ReservedNotZero);
        let mut b = good.clone();
        b[8..12].copy_from_slice(&(MAX_CHUNK_LEN as u32 + 1).to_le_bytes());
        assert!(matches!(both(&b, &key(), &d), ChunkDefect::TooLarge(_)));
        // Declared shorter than the frame decompresses to: zstd stops at capacity.
        let mut b = good.clone();
        b[8..12].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            both(&b, &key(), &d),
            ChunkDefect::Decompress(_) | ChunkDefect::LengthMismatch { .. }
        ));
        // Truncated payload.
        assert!(matches!(
            both(&good[..good.len() - 2], &key(), &d),
            ChunkDefect::Decompress(_) | ChunkDefect::LengthMismatch { .. }
        ));
        // Raw codec with a wrong length.
        let mut b = encode_chunk(b"abc", 1);
        b.push(b'd');
        assert_eq!(
            both(&b, &key(), &key().digest(b"abc")),
            ChunkDefect::LengthMismatch {
                declared: 3,
                actual: 4
            }
        );
        // Right bytes, wrong name.
        let other = key().digest(b"other");
        assert!(matches!(
            both(&good, &key(), &other),
            ChunkDefect::DigestMismatch(x) if x == d
        ));
        // Another store's key.
        assert!(matches!(
            both(&good, &ChunkKey::from_bytes([4; 32]), &d),
            ChunkDefect::DigestMismatch(_)
        ));
    }
}
