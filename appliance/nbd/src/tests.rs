//! The client against scripted servers: byte streams written by hand (or by proptest) to
//! reach the replies a well-behaved qemu-nbd never sends. The real server is exercised in
//! `tests/qemu_nbd.rs`.

use std::io::{self, Cursor, Read, Write};

use proptest::prelude::*;

use crate::client::{BASE_ALLOCATION, Client, Extent, STATE_HOLE, STATE_ZERO};
use crate::error::NbdError;
use crate::wire::*;

/// Plays back `replies` whatever the client writes.
struct Script(Cursor<Vec<u8>>);

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Builds what a server sends.
#[derive(Default, Clone)]
struct Server(Vec<u8>);

const DONE: bool = true;
const MORE: bool = false;

impl Server {
    fn greeting(flags: u16) -> Server {
        let mut s = Server::default();
        s.u64(NBDMAGIC).u64(IHAVEOPT).u16(flags);
        s
    }

    /// Greeting, structured replies, `contexts` granted, export of `size` bytes.
    fn ready(size: u64, sizes: Option<(u32, u32, u32)>, contexts: &[(u32, &str)]) -> Server {
        let mut s = Server::greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        s.opt(OPT_STRUCTURED_REPLY, REP_ACK, &[]);
        if !contexts.is_empty() {
            for (id, name) in contexts {
                let mut data = id.to_be_bytes().to_vec();
                data.extend_from_slice(name.as_bytes());
                s.opt(OPT_SET_META_CONTEXT, REP_META_CONTEXT, &data);
            }
            s.opt(OPT_SET_META_CONTEXT, REP_ACK, &[]);
        }
        s.go(size, sizes);
        s
    }

    fn go(&mut self, size: u64, sizes: Option<(u32, u32, u32)>) -> &mut Server {
        let mut info = INFO_EXPORT.to_be_bytes().to_vec();
        info.extend_from_slice(&size.to_be_bytes());
        info.extend_from_slice(&1u16.to_be_bytes());
        self.opt(OPT_GO, REP_INFO, &info);
        if let Some((min, pref, max)) = sizes {
            let mut info = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
            for v in [min, pref, max] {
                info.extend_from_slice(&v.to_be_bytes());
            }
            self.opt(OPT_GO, REP_INFO, &info);
        }
        self.opt(OPT_GO, REP_ACK, &[])
    }

    fn u16(&mut self, v: u16) -> &mut Server {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Server {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Server {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn raw(&mut self, bytes: &[u8]) -> &mut Server {
        self.0.extend_from_slice(bytes);
        self
    }

    fn opt(&mut self, option: u32, reply: u32, data: &[u8]) -> &mut Server {
        self.u64(OPTION_REPLY_MAGIC)
            .u32(option)
            .u32(reply)
            .u32(data.len() as u32)
            .raw(data)
    }

    fn chunk(&mut self, done: bool, kind: u16, handle: u64, payload: &[u8]) -> &mut Server {
        self.u32(STRUCTURED_REPLY_MAGIC)
            .u16(if done { REPLY_FLAG_DONE } else { 0 })
            .u16(kind)
            .u64(handle)
            .u32(payload.len() as u32)
            .raw(payload)
    }

    fn data(&mut self, handle: u64, offset: u64, bytes: &[u8], done: bool) -> &mut Server {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(bytes);
        self.chunk(done, REPLY_TYPE_OFFSET_DATA, handle, &p)
    }

    fn hole(&mut self, handle: u64, offset: u64, len: u32, done: bool) -> &mut Server {
        let mut p = offset.to_be_bytes().to_vec();
        p.extend_from_slice(&len.to_be_bytes());
        self.chunk(done, REPLY_TYPE_OFFSET_HOLE, handle, &p)
    }

    fn error(&mut self, handle: u64, errno: u32, message: &str, done: bool) -> &mut Server {
        let mut p = errno.to_be_bytes().to_vec();
        p.extend_from_slice(&(message.len() as u16).to_be_bytes());
        p.extend_from_slice(message.as_bytes());
        self.chunk(done, REPLY_TYPE_ERROR_BIT | 1, handle, &p)
    }

    fn status(&mut self, handle: u64, id: u32, extents: &[(u32, u32)], done: bool) -> &mut Server {
        let mut p = id.to_be_bytes().to_vec();
        for (len, flags) in extents {
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(&flags.to_be_bytes());
        }
        self.chunk(done, REPLY_TYPE_BLOCK_STATUS, handle, &p)
    }

    fn simple(&mut self, errno: u32, handle: u64) -> &mut Server {
        self.u32(SIMPLE_REPLY_MAGIC).u32(errno).u64(handle)
    }

    fn client(&self, contexts: &[&str]) -> Result<Client, NbdError> {
        Client::over(Box::new(Script(Cursor::new(self.0.clone()))), contexts)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn handshake_reports_size_block_sizes_and_contexts() {
    let s = Server::ready(1 << 30, Some((512, 4096, 1 << 25)), &[(7, BASE_ALLOCATION)]);
    let c = s.client(&[BASE_ALLOCATION, "qemu:dirty-bitmap:x"]).unwrap();
    assert_eq!(c.size(), 1 << 30);
    assert_eq!(
        c.block_sizes(),
        BlockSizes {
            minimum: 512,
            preferred: 4096,
            maximum: 1 << 25
        }
    );
    assert_eq!(c.max_request(), 1 << 25);
    assert!(c.structured_replies());
    assert!(c.has_context(BASE_ALLOCATION));
    assert!(!c.has_context("qemu:dirty-bitmap:x"));
    assert_eq!(c.contexts().collect::<Vec<_>>(), vec![BASE_ALLOCATION]);
}

#[test]
fn reads_reassemble_data_and_holes_in_any_order() {
    // Maximum 4096: a read of 10000 bytes goes out as three requests (handles 1, 2, 3),
    // all in flight, answered out of order and in pieces.
    let expected: Vec<u8> = [
        pattern(100, 1),
        vec![0; 3996],
        pattern(4096, 2),
        vec![0; 1808],
    ]
    .concat();
    let mut s = Server::ready(1 << 20, Some((1, 4096, 4096)), &[]);
    s.hole(3, 8192, 1808, DONE)
        .data(1, 0, &pattern(100, 1), MORE)
        .data(2, 4096 + 96, &pattern(4096, 2)[96..], MORE)
        .hole(1, 100, 3996, MORE)
        .data(2, 4096, &pattern(4096, 2)[..96], MORE)
        .chunk(DONE, REPLY_TYPE_NONE, 1, &[])
        .chunk(DONE, REPLY_TYPE_NONE, 2, &[]);
    let mut c = s.client(&[]).unwrap();
    let mut buf = vec![0xffu8; 10000];
    c.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, expected);
}

#[test]
fn simple_replies_without_structured_negotiation() {
    let mut s = Server::greeting(FLAG_FIXED_NEWSTYLE);
    s.opt(OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, b"no");
    s.go(1 << 20, None);
    s.simple(0, 1).raw(&pattern(5000, 9));
    s.simple(5, 2);
    let mut c = s.client(&[BASE_ALLOCATION]).unwrap();
    assert!(!c.structured_replies());
    let mut buf = vec![0u8; 5000];
    c.read_at(10, &mut buf).unwrap();
    assert_eq!(buf, pattern(5000, 9));
    let err = c.read_at(0, &mut buf).unwrap_err();
    assert!(matches!(err, NbdError::Command { errno: 5, .. }), "{err}");
    let err = c.allocated_ranges().unwrap_err();
    assert!(
        matches!(err, NbdError::ContextNotNegotiated { .. }),
        "{err}"
    );
}

#[test]
fn error_chunks_fail_the_read_but_keep_the_connection() {
    let mut s = Server::ready(1 << 20, None, &[]);
    s.error(1, 5, "disk on fire", MORE)
        .chunk(DONE, REPLY_TYPE_NONE, 1, &[]);
    s.data(2, 0, &pattern(64, 3), DONE);
    let mut c = s.client(&[]).unwrap();
    let mut buf = vec![0u8; 64];
    let err = c.read_at(0, &mut buf).unwrap_err();
    assert!(err.is_command_error());
    let text = err.to_string();
    assert!(
        text.contains("EIO") && text.contains("disk on fire"),
        "{text}"
    );
    c.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(64, 3));
}

#[test]
fn an_error_stops_new_requests_and_drains_those_in_flight() {
    // Four requests of 4096 go out; the first fails; the other three must still be read
    // off the wire, and the fifth piece is never asked for.
    let mut s = Server::ready(1 << 20, Some((1, 4096, 4096)), &[]);
    s.error(1, 22, "", DONE);
    for h in 2..=4 {
        s.data(h, (h - 1) * 4096, &[7; 4096], DONE);
    }
    s.data(5, 0, &[1; 16], DONE); // The next call's request: handle 5 was never used.
    let mut c = s.client(&[]).unwrap();
    let mut buf = vec![0u8; 5 * 4096];
    let err = c.read_at(0, &mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            NbdError::Command {
                errno: 22,
                offset: 0,
                length: 4096,
                ..
            }
        ),
        "{err}"
    );
    let mut small = [0u8; 16];
    c.read_at(0, &mut small).unwrap();
    assert_eq!(small, [1; 16]);
}

#[test]
fn unaligned_reads_respect_the_minimum_block_size() {
    // Minimum 512: bytes 100..1100 are read as the blocks 0..512, 512..1024 and
    // 1024..1536 (handles 1, 2, 3).
    let disk = pattern(1536, 4);
    let mut s = Server::ready(1536, Some((512, 512, 1 << 20)), &[]);
    s.data(1, 0, &disk[..512], DONE)
        .data(2, 512, &disk[512..1024], DONE)
        .data(3, 1024, &disk[1024..], DONE);
    let mut c = s.client(&[]).unwrap();
    let mut buf = vec![0u8; 1000];
    c.read_at(100, &mut buf).unwrap();
    assert_eq!(buf, &disk[100..1100]);
}

#[test]
fn out_of_range_reads_are_refused_before_sending() {
    let s = Server::ready(4096, None, &[]);
    let mut c = s.client(&[]).unwrap();
    let mut buf = [0u8; 2];
    let err = c.read_at(4095, &mut buf).unwrap_err();
    assert!(
        matches!(err, NbdError::OutOfRange { size: 4096, .. }),
        "{err}"
    );
    let err = c.read_at(u64::MAX, &mut buf).unwrap_err();
    assert!(matches!(err, NbdError::OutOfRange { .. }), "{err}");
    c.read_at(4096, &mut []).unwrap();
}

/// Replies to a 4096-byte read at offset 0 (handle 1) that break the protocol.
fn malformed_read_replies() -> Vec<(&'static str, Server)> {
    let mut cases = Vec::new();
    let mut add = |name: &'static str, build: &dyn Fn(&mut Server)| {
        let mut s = Server::default();
        build(&mut s);
        cases.push((name, s));
    };
    add("data past the request", &|s| {
        s.data(1, 4000, &[0; 200], DONE);
    });
    add("data before the request", &|s| {
        s.data(1, u64::MAX, &[0; 2], DONE);
    });
    add("overlapping chunks", &|s| {
        s.data(1, 0, &[0; 100], MORE).hole(1, 50, 4046, DONE);
    });
    add(
        "an overlap hiding a gap (the byte count alone would match)",
        &|s| {
            s.data(1, 0, &[0; 2048], MORE)
                .data(1, 1024, &[0; 2048], MORE)
                .hole(1, 3072, 1024, DONE);
        },
    );
    add("success without covering everything", &|s| {
        s.data(1, 0, &[0; 4000], DONE);
    });
    add("hole of length 0", &|s| {
        s.hole(1, 0, 0, DONE);
    });
    add("hole chunk of the wrong size", &|s| {
        s.chunk(DONE, REPLY_TYPE_OFFSET_HOLE, 1, &[0; 16]);
    });
    add("data chunk without data", &|s| {
        s.chunk(DONE, REPLY_TYPE_OFFSET_DATA, 1, &[0; 8]);
    });
    add("NONE without DONE", &|s| {
        s.chunk(MORE, REPLY_TYPE_NONE, 1, &[]);
    });
    add("NONE with a payload", &|s| {
        s.chunk(DONE, REPLY_TYPE_NONE, 1, &[0; 4]);
    });
    add("unknown handle", &|s| {
        s.data(99, 0, &[0; 4096], DONE);
    });
    add("block status in a read", &|s| {
        s.status(1, 1, &[(4096, 0)], DONE);
    });
    add("unknown chunk type", &|s| {
        s.chunk(DONE, 77, 1, &[]);
    });
    add(
        "simple reply with data after structured negotiation",
        &|s| {
            s.simple(0, 1).raw(&[0; 4096]);
        },
    );
    add("bad magic", &|s| {
        s.u32(0xdead_beef).raw(&[0; 16]);
    });
    add("error message overruns its chunk", &|s| {
        s.chunk(DONE, REPLY_TYPE_ERROR_BIT | 1, 1, &[0, 0, 0, 5, 0, 9, b'x']);
    });
    add("error chunk too short", &|s| {
        s.chunk(DONE, REPLY_TYPE_ERROR_BIT | 1, 1, &[0, 0, 0, 5]);
    });
    add("4 GiB error chunk (refused before allocating)", &|s| {
        s.u32(STRUCTURED_REPLY_MAGIC)
            .u16(REPLY_FLAG_DONE)
            .u16(REPLY_TYPE_ERROR_BIT | 1)
            .u64(1)
            .u32(u32::MAX);
    });
    cases
}

#[test]
fn malformed_read_replies_are_protocol_errors_and_break_the_connection() {
    for (name, replies) in malformed_read_replies() {
        let mut s = Server::ready(1 << 20, None, &[]);
        s.raw(&replies.0);
        let mut c = s.client(&[]).unwrap();
        let mut buf = vec![0u8; 4096];
        let err = c.read_at(0, &mut buf).unwrap_err();
        assert!(matches!(err, NbdError::Protocol { .. }), "{name}: {err}");
        let again = c.read_at(0, &mut buf).unwrap_err();
        assert!(matches!(again, NbdError::Broken { .. }), "{name}: {again}");
    }
}

#[test]
fn a_server_closing_mid_reply_is_reported() {
    let mut s = Server::ready(1 << 20, None, &[]);
    let mut chunk = Server::default();
    chunk.data(1, 0, &[5; 4096], DONE);
    s.raw(&chunk.0[..chunk.0.len() - 1000]);
    let mut c = s.client(&[]).unwrap();
    let mut buf = vec![0u8; 4096];
    let err = c.read_at(0, &mut buf).unwrap_err();
    assert!(matches!(err, NbdError::ServerClosed { .. }), "{err}");
    assert!(err.to_string().contains("closed the connection"), "{err}");
}

#[test]
fn block_status_asks_again_until_the_range_is_covered() {
    let dirty = "qemu:dirty-bitmap:b";
    let mut s = Server::ready(1 << 20, None, &[(1, BASE_ALLOCATION), (2, dirty)]);
    // First answer stops at 12288 (and carries the other context, to be skipped).
    s.status(1, 2, &[(1 << 20, 0)], MORE).status(
        1,
        1,
        &[(4096, 0), (8192, STATE_HOLE | STATE_ZERO)],
        DONE,
    );
    // Second answer: the last extent runs past the end of the export.
    s.status(
        2,
        1,
        &[
            (4096, STATE_HOLE | STATE_ZERO),
            (65536, 0),
            (1 << 24, STATE_ZERO),
        ],
        MORE,
    )
    .status(2, 2, &[(1 << 20, 0)], MORE)
    .chunk(DONE, REPLY_TYPE_NONE, 2, &[]);
    let mut c = s.client(&[BASE_ALLOCATION, dirty]).unwrap();
    let extents = c.block_status(0, 1 << 20, BASE_ALLOCATION).unwrap();
    let e = |offset, length, flags| Extent {
        offset,
        length,
        flags,
    };
    assert_eq!(
        extents,
        vec![
            e(0, 4096, 0),
            e(4096, 12288, STATE_HOLE | STATE_ZERO),
            e(16384, 65536, 0),
            e(81920, (1 << 20) - 81920, STATE_ZERO),
        ]
    );
}

#[test]
fn allocated_and_dirty_ranges() {
    let dirty = "qemu:dirty-bitmap:b";
    let mut s = Server::ready(1 << 20, None, &[(1, BASE_ALLOCATION), (2, dirty)]);
    s.status(
        1,
        1,
        &[
            (4096, 0),
            (4096, STATE_HOLE),
            (4096, STATE_ZERO),
            (4096, 0),
            (1048576 - 16384, 3),
        ],
        MORE,
    )
    .status(1, 2, &[(65536, 0)], DONE);
    s.status(
        2,
        2,
        &[(65536, 1), (65536, 0), (65536, 1), (1048576 - 196608, 1)],
        MORE,
    )
    .status(2, 1, &[(4096, 0)], DONE);
    let mut c = s.client(&[BASE_ALLOCATION, dirty]).unwrap();
    assert_eq!(c.allocated_ranges().unwrap(), vec![0..8192, 12288..16384]);
    assert_eq!(
        c.dirty_ranges("b").unwrap(),
        vec![0..65536, 131072..1048576]
    );
    let err = c.dirty_ranges("other").unwrap_err();
    assert!(
        matches!(err, NbdError::ContextNotNegotiated { .. }),
        "{err}"
    );
}

#[test]
fn malformed_block_status_replies() {
    let mut cases: Vec<(&str, Server)> = Vec::new();
    let mut add = |name, build: &dyn Fn(&mut Server)| {
        let mut s = Server::default();
        build(&mut s);
        cases.push((name, s));
    };
    add("no extents for the context", &|s| {
        s.chunk(DONE, REPLY_TYPE_NONE, 1, &[]);
    });
    add("context asked twice", &|s| {
        s.status(1, 1, &[(10, 0)], MORE)
            .status(1, 1, &[(10, 0)], DONE);
    });
    add("context never negotiated", &|s| {
        s.status(1, 9, &[(10, 0)], DONE);
    });
    add("zero-length descriptor", &|s| {
        s.status(1, 1, &[(0, 0)], DONE);
    });
    add("chunk without descriptors", &|s| {
        s.status(1, 1, &[], DONE);
    });
    add("simple reply claiming success", &|s| {
        s.simple(0, 1);
    });
    add("data chunk", &|s| {
        s.data(1, 0, &[1], DONE);
    });
    add("4 GiB status chunk (refused before allocating)", &|s| {
        s.u32(STRUCTURED_REPLY_MAGIC)
            .u16(REPLY_FLAG_DONE)
            .u16(REPLY_TYPE_BLOCK_STATUS)
            .u64(1)
            .u32(u32::MAX);
    });
    for (name, replies) in cases {
        let mut s = Server::ready(1 << 20, None, &[(1, BASE_ALLOCATION)]);
        s.raw(&replies.0);
        let mut c = s.client(&[BASE_ALLOCATION]).unwrap();
        let err = c.block_status(0, 4096, BASE_ALLOCATION).unwrap_err();
        assert!(matches!(err, NbdError::Protocol { .. }), "{name}: {err}");
    }
    // A server error is a command error, and the connection goes on.
    let mut s = Server::ready(1 << 20, None, &[(1, BASE_ALLOCATION)]);
    s.error(1, 22, "bad", DONE).status(2, 1, &[(4096, 0)], DONE);
    let mut c = s.client(&[BASE_ALLOCATION]).unwrap();
    let err = c.block_status(0, 4096, BASE_ALLOCATION).unwrap_err();
    assert!(err.is_command_error(), "{err}");
    assert_eq!(c.block_status(0, 4096, BASE_ALLOCATION).unwrap().len(), 1);
}

#[test]
fn handshake_failures() {
    let unsupported = |s: Server| match s.client(&[]) {
        Err(NbdError::Unsupported { detail, .. }) => detail,
        other => panic!("{other:?}"),
    };
    let mut old = Server::default();
    old.u64(NBDMAGIC).u64(OLDSTYLE_MAGIC);
    assert!(unsupported(old).contains("oldstyle"));
    assert!(unsupported(Server::greeting(0)).contains("fixed newstyle"));
    let mut http = Server::default();
    http.raw(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    assert!(unsupported(http).contains("not an NBD server"));

    // Unknown export: NBD_OPT_GO says so, with the export's name.
    let mut s = Server::greeting(FLAG_FIXED_NEWSTYLE);
    s.opt(OPT_STRUCTURED_REPLY, REP_ACK, &[])
        .opt(OPT_GO, REP_ERR_UNKNOWN, &[]);
    let err = s.client(&[]).unwrap_err();
    assert!(err.to_string().contains("no export named 'disk'"), "{err}");

    // GO without export information.
    let mut s = Server::greeting(FLAG_FIXED_NEWSTYLE);
    s.opt(OPT_STRUCTURED_REPLY, REP_ACK, &[])
        .opt(OPT_GO, REP_ACK, &[]);
    assert!(matches!(s.client(&[]), Err(NbdError::Protocol { .. })));

    // An option reply too large to hold.
    let mut s = Server::greeting(FLAG_FIXED_NEWSTYLE);
    s.u64(OPTION_REPLY_MAGIC)
        .u32(OPT_STRUCTURED_REPLY)
        .u32(REP_ACK)
        .u32(u32::MAX);
    assert!(matches!(s.client(&[]), Err(NbdError::Protocol { .. })));

    // Export larger than 2^63 - 1.
    let mut s = Server::greeting(FLAG_FIXED_NEWSTYLE);
    s.opt(OPT_STRUCTURED_REPLY, REP_ACK, &[]).go(u64::MAX, None);
    assert!(matches!(s.client(&[]), Err(NbdError::Protocol { .. })));

    // Bad block sizes.
    let mut s = Server::greeting(FLAG_FIXED_NEWSTYLE);
    s.opt(OPT_STRUCTURED_REPLY, REP_ACK, &[])
        .go(1 << 20, Some((3, 4096, 1 << 20)));
    assert!(matches!(s.client(&[]), Err(NbdError::Protocol { .. })));

    // The server hangs up mid-handshake.
    let mut s = Server::greeting(FLAG_FIXED_NEWSTYLE);
    s.raw(&OPTION_REPLY_MAGIC.to_be_bytes()[..5]);
    assert!(matches!(s.client(&[]), Err(NbdError::ServerClosed { .. })));
}

#[test]
fn servers_without_opt_go_get_opt_export_name() {
    for no_zeroes in [false, true] {
        let flags = FLAG_FIXED_NEWSTYLE | if no_zeroes { FLAG_NO_ZEROES } else { 0 };
        let mut s = Server::greeting(flags);
        s.opt(OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[])
            .opt(OPT_GO, REP_ERR_UNSUP, &[])
            .u64(123 * 512)
            .u16(1 | TFLAG_READ_ONLY);
        if !no_zeroes {
            s.raw(&[0; 124]);
        }
        s.simple(0, 1).raw(&[9; 512]);
        let mut c = s.client(&[]).unwrap();
        assert_eq!(c.size(), 123 * 512);
        assert!(c.is_read_only());
        let mut buf = [0u8; 512];
        c.read_at(0, &mut buf).unwrap();
        assert_eq!(buf, [9; 512]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    // After a valid handshake the server sends anything at all: reads and block status
    // return (an error, mostly) without panicking, and never claim success with bytes
    // the server did not describe.
    #[test]
    fn random_replies_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..600),
        len in 1usize..9000,
        status in any::<bool>(),
    ) {
        let mut s = Server::ready(1 << 20, Some((1, 4096, 4096)), &[(1, BASE_ALLOCATION)]);
        s.raw(&tail);
        let mut c = s.client(&[BASE_ALLOCATION]).unwrap();
        if status {
            if let Ok(extents) = c.block_status(0, len as u64, BASE_ALLOCATION) {
                prop_assert_eq!(extents.iter().map(|e| e.length).sum::<u64>(), len as u64);
            }
        } else {
            let mut buf = vec![0u8; len];
            let _ = c.read_at(0, &mut buf);
        }
    }

    // Well-formed replies with a few bytes flipped: the same, closer to real traffic.
    #[test]
    fn mutated_replies_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut replies = Server::default();
        replies
            .data(1, 0, &[1; 100], MORE)
            .hole(1, 100, 3996, MORE)
            .error(2, 5, "x", MORE)
            .chunk(DONE, REPLY_TYPE_NONE, 2, &[])
            .chunk(DONE, REPLY_TYPE_NONE, 1, &[])
            .status(3, 1, &[(4096, 3), (4096, 0)], DONE);
        let mut bytes = replies.0.clone();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let mut s = Server::ready(1 << 20, Some((1, 4096, 4096)), &[(1, BASE_ALLOCATION)]);
        s.raw(&bytes);
        let mut c = s.client(&[BASE_ALLOCATION]).unwrap();
        let mut buf = vec![0u8; 8192];
        if c.read_at(0, &mut buf).is_ok() {
            prop_assert_eq!(buf.len(), 8192);
        }
        let _ = c.block_status(0, 8192, BASE_ALLOCATION);
    }

    // Random bytes during the handshake.
    #[test]
    fn random_handshakes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut s = Server::greeting(FLAG_FIXED_NEWSTYLE);
        s.raw(&tail);
        let _ = s.client(&[BASE_ALLOCATION]);
    }
}
