//! The protocol's numbers and the pure decoding of what a server sends: no I/O here, so
//! every rule about malformed input is tested on byte slices.

// Handshake magics.
pub(crate) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943; // "NBDMAGIC"
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454f_5054; // "IHAVEOPT"
pub(crate) const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
pub(crate) const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

// Handshake flags (server) and client flags.
pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub(crate) const FLAG_NO_ZEROES: u16 = 1 << 1;
pub(crate) const CLIENT_FIXED_NEWSTYLE: u32 = 1 << 0;
pub(crate) const CLIENT_NO_ZEROES: u32 = 1 << 1;

// Options.
pub(crate) const OPT_EXPORT_NAME: u32 = 1;
pub(crate) const OPT_ABORT: u32 = 2;
pub(crate) const OPT_GO: u32 = 7;
pub(crate) const OPT_STRUCTURED_REPLY: u32 = 8;
pub(crate) const OPT_SET_META_CONTEXT: u32 = 10;

// Option replies.
pub(crate) const REP_ACK: u32 = 1;
pub(crate) const REP_INFO: u32 = 3;
pub(crate) const REP_META_CONTEXT: u32 = 4;
pub(crate) const REP_ERR_BIT: u32 = 1 << 31;
pub(crate) const REP_ERR_UNSUP: u32 = REP_ERR_BIT | 1;
pub(crate) const REP_ERR_UNKNOWN: u32 = REP_ERR_BIT | 6;
pub(crate) const REP_ERR_SHUTDOWN: u32 = REP_ERR_BIT | 7;

// Information types in NBD_REP_INFO.
pub(crate) const INFO_EXPORT: u16 = 0;
pub(crate) const INFO_BLOCK_SIZE: u16 = 3;

// Transmission flags.
pub(crate) const TFLAG_READ_ONLY: u16 = 1 << 1;
pub(crate) const TFLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// Requests.
pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(crate) const CMD_READ: u16 = 0;
pub(crate) const CMD_DISC: u16 = 2;
pub(crate) const CMD_BLOCK_STATUS: u16 = 7;

// Replies.
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub(crate) const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
pub(crate) const REPLY_FLAG_DONE: u16 = 1 << 0;
pub(crate) const REPLY_TYPE_NONE: u16 = 0;
pub(crate) const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub(crate) const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub(crate) const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub(crate) const REPLY_TYPE_ERROR_BIT: u16 = 1 << 15;
pub(crate) const REPLY_TYPE_ERROR_OFFSET: u16 = REPLY_TYPE_ERROR_BIT | 2;

/// Largest option reply accepted during the handshake (strings are at most 4096 bytes).
pub(crate) const MAX_OPTION_REPLY: u32 = 64 * 1024;
/// Most replies accepted to one option before the server is deemed to be looping.
pub(crate) const MAX_OPTION_REPLIES: usize = 1024;
/// Largest error chunk accepted (error, message length, message up to 64 KiB, offset).
pub(crate) const MAX_ERROR_CHUNK: u32 = 64 * 1024 + 14;
/// Largest block status chunk accepted: one million descriptors (qemu sends far fewer).
pub(crate) const MAX_STATUS_CHUNK: u32 = 4 + 8 * 1024 * 1024;

/// A request header (the client never sends a payload: this client only reads).
pub(crate) fn request(command: u16, handle: u64, offset: u64, length: u32) -> [u8; 28] {
    let mut out = [0u8; 28];
    out[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    // Command flags stay 0: no flag this client could use is needed.
    out[6..8].copy_from_slice(&command.to_be_bytes());
    out[8..16].copy_from_slice(&handle.to_be_bytes());
    out[16..24].copy_from_slice(&offset.to_be_bytes());
    out[24..28].copy_from_slice(&length.to_be_bytes());
    out
}

/// An option header followed by its data.
pub(crate) fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + data.len());
    out.extend_from_slice(&IHAVEOPT.to_be_bytes());
    out.extend_from_slice(&option.to_be_bytes());
    // Callers bound data to a few KiB (names and contexts of at most 4096 bytes each).
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// Big-endian fields read from the front of a slice; `None` once it runs short.
pub(crate) struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2)?.try_into().ok().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.0
    }
}

/// The fixed part of a structured reply chunk, after its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkHeader {
    pub flags: u16,
    pub kind: u16,
    pub handle: u64,
    pub length: u32,
}

impl ChunkHeader {
    pub(crate) fn parse(bytes: &[u8; 16]) -> ChunkHeader {
        let mut f = Fields(bytes);
        // The slice is exactly 16 bytes, which these four fields consume.
        ChunkHeader {
            flags: f.u16().unwrap_or(0),
            kind: f.u16().unwrap_or(0),
            handle: f.u64().unwrap_or(0),
            length: f.u32().unwrap_or(0),
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.flags & REPLY_FLAG_DONE != 0
    }

    pub(crate) fn is_error(&self) -> bool {
        self.kind & REPLY_TYPE_ERROR_BIT != 0
    }
}

/// An error chunk's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorChunk {
    pub errno: u32,
    pub message: Vec<u8>,
    /// Where the error happened, for `NBD_REPLY_TYPE_ERROR_OFFSET`.
    pub offset: Option<u64>,
}

/// Decodes an error chunk (`kind` has bit 15 set). Unknown error types are still errors;
/// only their trailing fields are ignored.
pub(crate) fn parse_error_chunk(kind: u16, payload: &[u8]) -> Result<ErrorChunk, String> {
    let mut f = Fields(payload);
    let (Some(errno), Some(message_len)) = (f.u32(), f.u16()) else {
        return Err(format!(
            "error chunk of {} bytes is shorter than 6",
            payload.len()
        ));
    };
    let Some(message) = f.take(usize::from(message_len)) else {
        return Err(format!(
            "error chunk message of {message_len} bytes overruns its {}-byte chunk",
            payload.len()
        ));
    };
    let offset = if kind == REPLY_TYPE_ERROR_OFFSET {
        match (f.u64(), f.rest().is_empty()) {
            (Some(offset), true) => Some(offset),
            _ => {
                return Err(format!(
                    "error-offset chunk of {} bytes does not end with exactly one offset",
                    payload.len()
                ));
            }
        }
    } else {
        None
    };
    Ok(ErrorChunk {
        errno,
        message: message.to_vec(),
        offset,
    })
}

/// Decodes a block status chunk: the context id and its (length, flags) descriptors.
pub(crate) fn parse_block_status(payload: &[u8]) -> Result<(u32, Vec<(u32, u32)>), String> {
    if payload.len() < 12 || !(payload.len() - 4).is_multiple_of(8) {
        return Err(format!(
            "block status chunk of {} bytes is not 4 + a positive multiple of 8",
            payload.len()
        ));
    }
    let mut f = Fields(payload);
    let id = f.u32().ok_or("block status chunk too short")?;
    let mut descriptors = Vec::with_capacity((payload.len() - 4) / 8);
    while let (Some(length), Some(flags)) = (f.u32(), f.u32()) {
        if length == 0 {
            return Err("block status descriptor of length 0".into());
        }
        descriptors.push((length, flags));
    }
    Ok((id, descriptors))
}

/// The server's block size constraints (`NBD_INFO_BLOCK_SIZE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Requests are aligned to this (a power of two, 1 to 64 KiB).
    pub minimum: u32,
    /// The size the server works best with (a power of two).
    pub preferred: u32,
    /// The largest request the server accepts (`u32::MAX`: no limit stated).
    pub maximum: u32,
}

impl BlockSizes {
    /// What the protocol says to assume when the server states nothing.
    pub(crate) const DEFAULT: BlockSizes = BlockSizes {
        minimum: 1,
        preferred: 4096,
        maximum: u32::MAX,
    };
}

/// Decodes and checks an `NBD_INFO_BLOCK_SIZE` payload (after the 2-byte type).
pub(crate) fn parse_block_sizes(payload: &[u8]) -> Result<BlockSizes, String> {
    let mut f = Fields(payload);
    let (Some(minimum), Some(preferred), Some(maximum), true) =
        (f.u32(), f.u32(), f.u32(), payload.len() == 12)
    else {
        return Err(format!(
            "block size information of {} bytes, expected 12",
            payload.len()
        ));
    };
    if !minimum.is_power_of_two() || minimum > 64 * 1024 {
        return Err(format!(
            "minimum block size {minimum} is not a power of two up to 64 KiB"
        ));
    }
    if !preferred.is_power_of_two() || preferred < minimum {
        return Err(format!(
            "preferred block size {preferred} is not a power of two at least {minimum}"
        ));
    }
    if maximum < minimum {
        return Err(format!(
            "maximum block size {maximum} is below the minimum {minimum}"
        ));
    }
    Ok(BlockSizes {
        minimum,
        preferred,
        maximum,
    })
}

/// Decodes an `NBD_INFO_EXPORT` payload (after the 2-byte type): size and flags.
pub(crate) fn parse_export_info(payload: &[u8]) -> Result<(u64, u16), String> {
    let mut f = Fields(payload);
    match (f.u64(), f.u16(), payload.len()) {
        (Some(size), Some(flags), 10) => Ok((size, flags)),
        _ => Err(format!(
            "export information of {} bytes, expected 10",
            payload.len()
        )),
    }
}

/// The protocol's name for an option reply type, for messages.
pub(crate) fn reply_name(reply: u32) -> String {
    let name = match reply {
        REP_ACK => "NBD_REP_ACK",
        2 => "NBD_REP_SERVER",
        REP_INFO => "NBD_REP_INFO",
        REP_META_CONTEXT => "NBD_REP_META_CONTEXT",
        REP_ERR_UNSUP => "NBD_REP_ERR_UNSUP",
        0x8000_0002 => "NBD_REP_ERR_POLICY",
        0x8000_0003 => "NBD_REP_ERR_INVALID",
        0x8000_0004 => "NBD_REP_ERR_PLATFORM",
        0x8000_0005 => "NBD_REP_ERR_TLS_REQD",
        REP_ERR_UNKNOWN => "NBD_REP_ERR_UNKNOWN",
        REP_ERR_SHUTDOWN => "NBD_REP_ERR_SHUTDOWN",
        0x8000_0008 => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        0x8000_0009 => "NBD_REP_ERR_TOO_BIG",
        other => return format!("reply type {other:#x}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_layout() {
        let r = request(CMD_READ, 0x0102_0304_0506_0708, 0x1000, 0x20);
        assert_eq!(&r[0..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(&r[4..8], &[0, 0, 0, 0]);
        assert_eq!(&r[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&r[16..24], &[0, 0, 0, 0, 0, 0, 0x10, 0]);
        assert_eq!(&r[24..28], &[0, 0, 0, 0x20]);
    }

    #[test]
    fn error_chunks() {
        let mut p = vec![0, 0, 0, 5, 0, 2, b'n', b'o'];
        assert_eq!(
            parse_error_chunk(REPLY_TYPE_ERROR_BIT | 1, &p).unwrap(),
            ErrorChunk {
                errno: 5,
                message: b"no".to_vec(),
                offset: None
            }
        );
        p.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(
            parse_error_chunk(REPLY_TYPE_ERROR_OFFSET, &p)
                .unwrap()
                .offset,
            Some(7)
        );
        assert!(parse_error_chunk(REPLY_TYPE_ERROR_BIT | 1, &[0, 0, 0, 5, 0]).is_err());
        assert!(parse_error_chunk(REPLY_TYPE_ERROR_BIT | 1, &[0, 0, 0, 5, 0, 3, b'a']).is_err());
        assert!(parse_error_chunk(REPLY_TYPE_ERROR_OFFSET, &[0, 0, 0, 5, 0, 0, 1]).is_err());
    }

    #[test]
    fn block_status_chunks() {
        let mut p = 9u32.to_be_bytes().to_vec();
        for (len, flags) in [(4096u32, 3u32), (512, 0)] {
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&flags.to_be_bytes());
        }
        assert_eq!(
            parse_block_status(&p).unwrap(),
            (9, vec![(4096, 3), (512, 0)])
        );
        assert!(parse_block_status(&p[..4]).is_err(), "no descriptor");
        assert!(parse_block_status(&p[..15]).is_err(), "ragged");
        p[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert!(parse_block_status(&p).is_err(), "zero length");
    }

    #[test]
    fn block_sizes_are_checked() {
        let enc =
            |a: u32, b: u32, c: u32| [a.to_be_bytes(), b.to_be_bytes(), c.to_be_bytes()].concat();
        assert_eq!(
            parse_block_sizes(&enc(512, 4096, 1 << 25)).unwrap(),
            BlockSizes {
                minimum: 512,
                preferred: 4096,
                maximum: 1 << 25
            }
        );
        assert!(parse_block_sizes(&enc(0, 4096, 1 << 25)).is_err());
        assert!(parse_block_sizes(&enc(3, 4096, 1 << 25)).is_err());
        assert!(parse_block_sizes(&enc(1 << 17, 1 << 17, 1 << 25)).is_err());
        assert!(parse_block_sizes(&enc(4096, 512, 1 << 25)).is_err());
        assert!(parse_block_sizes(&enc(4096, 4096, 512)).is_err());
        assert!(parse_block_sizes(&enc(1, 1, 1)[..11]).is_err());
    }

    proptest! {
        // Whatever a server sends, decoding returns a value or an error: no panic, and no
        // allocation beyond the payload it was given.
        #[test]
        fn decoders_never_panic(kind in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(chunk) = parse_error_chunk(kind | REPLY_TYPE_ERROR_BIT, &payload) {
                prop_assert!(chunk.message.len() + 6 <= payload.len());
            }
            if let Ok((_, descriptors)) = parse_block_status(&payload) {
                prop_assert_eq!(descriptors.len() * 8 + 4, payload.len());
                prop_assert!(descriptors.iter().all(|(len, _)| *len > 0));
            }
            if let Ok(sizes) = parse_block_sizes(&payload) {
                prop_assert!(sizes.minimum.is_power_of_two() && sizes.maximum >= sizes.minimum);
            }
            let _ = parse_export_info(&payload);
            if payload.len() >= 16 {
                let header: [u8; 16] = payload[..16].try_into().unwrap();
                let parsed = ChunkHeader::parse(&header);
                prop_assert_eq!(&parsed.length.to_be_bytes()[..], &header[12..16]);
            }
        }
    }
}
