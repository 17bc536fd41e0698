//! The client against Debian's real `qemu-nbd`, on images made by `qemu-img` and
//! `qemu-io`.

mod common;

use std::fs;

use abri_nbd::{Address, BASE_ALLOCATION, NbdError, STATE_HOLE, STATE_ZERO, dirty_bitmap_context};
use common::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[test]
fn qcow2_reads_match_qemu_img_convert() {
    let dir = tempfile::tempdir().unwrap();
    // A raw source with data islands (one unaligned, one across 32 MiB) and zeros between,
    // turned into a sparse qcow2, then one allocated megabyte zeroed in place.
    let size = 48 * MIB + 12 * KIB;
    let mut source = vec![0u8; size as usize];
    for (at, len, seed) in [
        (0, MIB, 1),
        (5 * MIB + 1234, 300_000, 2),
        (20 * MIB, 16 * MIB, 3),
        (size - 4 * KIB, 4 * KIB, 4),
    ] {
        let (at, len) = (at as usize, len as usize);
        source[at..at + len].copy_from_slice(&noise(len, seed));
    }
    let raw = dir.path().join("source.raw");
    fs::write(&raw, &source).unwrap();
    let qcow2 = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            path_str(&raw),
            path_str(&qcow2),
        ],
    );
    qemu_io(&qcow2, &["write -z 24M 1M"]);
    let expected_path = dir.path().join("expected.raw");
    run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "qcow2",
            "-O",
            "raw",
            path_str(&qcow2),
            path_str(&expected_path),
        ],
    );
    let expected = fs::read(&expected_path).unwrap();
    assert_eq!(expected.len() as u64, size);
    assert!(
        expected[24 * MIB as usize..25 * MIB as usize]
            .iter()
            .all(|b| *b == 0)
    );

    let nbd = QemuNbd::start(dir.path(), &qcow2, "qcow2", &["--persistent"]);
    let mut client = nbd.connect(&[]);
    assert_eq!(client.size(), size);
    assert!(client.structured_replies());
    assert!(client.is_read_only());
    let sizes = client.block_sizes();
    assert!(sizes.minimum.is_power_of_two() && sizes.minimum <= sizes.preferred);
    assert!(client.max_request() <= 32 << 20);

    // One call for the whole disk: split into pieces, several in flight.
    let mut all = vec![0xeeu8; size as usize];
    client.read_at(0, &mut all).unwrap();
    assert!(
        all == expected,
        "whole-disk read differs from qemu-img convert"
    );

    // Odd sizes at odd offsets, crossing data, holes and the zeroed megabyte.
    let mut at = 0u64;
    let mut step = 999_983u64;
    while at < size {
        let len = step.min(size - at) as usize;
        let mut buf = vec![0x55u8; len];
        client.read_at(at, &mut buf).unwrap();
        assert!(
            buf[..] == expected[at as usize..at as usize + len],
            "read of {len} bytes at {at} differs"
        );
        at += len as u64;
        step = step * 3 % 7_340_033 + 1;
    }

    let mut two = [0u8; 2];
    let err = client.read_at(size - 1, &mut two).unwrap_err();
    assert!(matches!(err, NbdError::OutOfRange { .. }), "{err}");
    client.read_at(size - 2, &mut two).unwrap(); // Still usable.
    client.disconnect().unwrap();
}

#[test]
fn raw_file_holes_are_not_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    let size = 16 * MIB;
    let file = fs::File::create(&image).unwrap();
    file.set_len(size).unwrap();
    let written = [
        (0, 64 * KIB, 11),
        (3 * MIB, 128 * KIB, 12),
        (size - 64 * KIB, 64 * KIB, 13),
    ];
    {
        use std::os::unix::fs::FileExt;
        for (at, len, seed) in written {
            file.write_all_at(&noise(len as usize, seed), at).unwrap();
        }
        file.sync_all().unwrap();
    }
    let contents = fs::read(&image).unwrap();

    let nbd = QemuNbd::start(dir.path(), &image, "raw", &["--persistent"]);
    let mut client = nbd.connect(&[BASE_ALLOCATION]);
    assert!(client.has_context(BASE_ALLOCATION));
    let expected: Vec<_> = written.iter().map(|(at, len, _)| *at..at + len).collect();
    assert_eq!(client.allocated_ranges().unwrap(), expected);

    let extents = client.block_status(0, size, BASE_ALLOCATION).unwrap();
    assert_eq!(extents.first().unwrap().offset, 0);
    assert_eq!(extents.last().unwrap().end(), size);
    let hole = extents.iter().find(|e| e.offset == 64 * KIB).unwrap();
    assert_eq!(
        hole.flags & (STATE_HOLE | STATE_ZERO),
        STATE_HOLE | STATE_ZERO
    );

    let mut all = vec![1u8; size as usize];
    client.read_at(0, &mut all).unwrap();
    assert!(all == contents, "raw read differs from the file");
}

#[test]
fn qcow2_allocation_follows_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", path_str(&image), "16M"],
    );
    qemu_io(
        &image,
        &[
            "write -P 0xab 0 64k",
            "write -P 0x11 1M 128k",
            "write -P 0xcc 6M 64k",
            "write -z 6M 64k", // Written, then zeroed: a zero cluster.
            "write -z 4M 64k", // Zeroed without ever holding data.
        ],
    );
    let nbd = QemuNbd::start(dir.path(), &image, "qcow2", &["--persistent"]);
    let mut client = nbd.connect(&[BASE_ALLOCATION]);
    assert_eq!(
        client.allocated_ranges().unwrap(),
        vec![0..64 * KIB, MIB..MIB + 128 * KIB]
    );
    for zeroed in [4 * MIB, 6 * MIB] {
        let extents = client
            .block_status(zeroed, 64 * KIB, BASE_ALLOCATION)
            .unwrap();
        assert_eq!(extents.len(), 1, "{extents:?}");
        assert_ne!(extents[0].flags & STATE_ZERO, 0, "{extents:?}");
    }
    // A sub-range query is answered for exactly that range.
    let extents = client
        .block_status(MIB - 4 * KIB, 8 * KIB, BASE_ALLOCATION)
        .unwrap();
    assert_eq!(
        extents
            .iter()
            .map(|e| (e.offset, e.length, e.flags & STATE_ZERO))
            .collect::<Vec<_>>(),
        vec![(MIB - 4 * KIB, 4 * KIB, STATE_ZERO), (MIB, 4 * KIB, 0)]
    );
    let mut buf = vec![0u8; 128 * KIB as usize];
    client.read_at(MIB, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0x11));
    client.read_at(6 * MIB, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0));
}

#[test]
fn dirty_bitmap_gives_exactly_the_written_granules() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", path_str(&image), "8M"],
    );
    qemu_io(&image, &["write -P 0x11 0 1M"]); // Before the bitmap: not dirty.
    run(
        "qemu-img",
        &["bitmap", "--add", "--enable", path_str(&image), "bm0"],
    );
    qemu_io(
        &image,
        &[
            "write -P 0xab 1M 64k",
            "write -P 0xcd 3149824 8k", // 3M + 4k, inside one 64 KiB granule.
        ],
    );

    let nbd = QemuNbd::start(dir.path(), &image, "qcow2", &["--persistent", "-B", "bm0"]);
    let bitmap = dirty_bitmap_context("bm0");
    let mut client = nbd.connect(&[BASE_ALLOCATION, &bitmap]);
    assert!(
        client.has_context(&bitmap),
        "{:?}",
        client.contexts().collect::<Vec<_>>()
    );
    assert_eq!(
        client.dirty_ranges("bm0").unwrap(),
        vec![MIB..MIB + 64 * KIB, 3 * MIB..3 * MIB + 64 * KIB]
    );
    // Both contexts on one connection: allocation is still answered. The 8 KiB write
    // allocated a 64 KiB cluster, but qemu may report the rest of it as zeros.
    let allocated = client.allocated_ranges().unwrap();
    assert_eq!(allocated.len(), 2, "{allocated:?}");
    assert_eq!(allocated[0], 0..MIB + 64 * KIB);
    let small = &allocated[1];
    assert!(
        small.start >= 3 * MIB
            && small.start <= 3_149_824
            && small.end >= 3_149_824 + 8 * KIB
            && small.end <= 3 * MIB + 64 * KIB,
        "{allocated:?}"
    );
    let mut buf = vec![0u8; 64 * KIB as usize];
    client.read_at(MIB, &mut buf).unwrap();
    assert!(buf.iter().all(|b| *b == 0xab));

    let err = client.dirty_ranges("bm1").unwrap_err();
    assert!(
        matches!(err, NbdError::ContextNotNegotiated { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("qemu:dirty-bitmap:bm1"), "{err}");
    drop(client);

    // Asking for a bitmap the server does not export: connected, but without it.
    let mut client = nbd.connect(&[BASE_ALLOCATION, &dirty_bitmap_context("nope")]);
    assert!(!client.has_context("qemu:dirty-bitmap:nope"));
    assert!(matches!(
        client.dirty_ranges("nope"),
        Err(NbdError::ContextNotNegotiated { .. })
    ));
}

#[test]
fn disconnect_ends_the_session_cleanly() {
    // Without --persistent, qemu-nbd exits once its only client says goodbye.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", path_str(&image), "1M"],
    );
    let mut nbd = QemuNbd::start(dir.path(), &image, "qcow2", &[]);
    let mut client = nbd.connect(&[]);
    let mut buf = [1u8; 4096];
    client.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [0u8; 4096]);
    client.disconnect().unwrap();
    let status = nbd.wait_exit();
    assert!(status.success(), "qemu-nbd: {status}: {}", nbd.log_text());
}

#[test]
fn unknown_export_and_missing_socket_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.qcow2");
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", path_str(&image), "1M"],
    );
    let nbd = QemuNbd::start(dir.path(), &image, "qcow2", &["--persistent"]);
    // Make sure the server is listening before asking for the wrong export.
    drop(nbd.connect(&[]));

    let wrong = Address::unix(&nbd.socket, "other");
    match connect_to(&wrong, &[]) {
        Err(NbdError::Refused { reply, .. }) => assert_eq!(reply, "NBD_REP_ERR_UNKNOWN"),
        other => panic!("{other:?}"),
    }
    // The refusal did not upset the server.
    let client = nbd.connect(&[]);
    assert_eq!(client.size(), MIB);

    let missing = dir.path().join("absent.sock");
    let err = abri_nbd::Client::connect(&Address::unix(&missing, "disk"), &[]).unwrap_err();
    assert!(matches!(err, NbdError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("absent.sock"), "{err}");
}

#[test]
fn bad_uris_are_refused() {
    for (uri, says) in [
        ("nbd+unix:///disk", "socket"),
        ("nbds://host/disk", "TLS"),
        ("file:///dev/sda", "scheme"),
        ("nbd:///disk", "host"),
        ("nbd+unix:///disk?socket=/s&timeout=5", "timeout"),
        ("not a uri", "expected nbd+unix"),
    ] {
        let err = uri.parse::<Address>().unwrap_err();
        let text = NbdError::from(err).to_string();
        assert!(text.contains(uri) && text.contains(says), "{uri}: {text}");
    }
    let ok: Address = "nbd+unix:///disk?socket=/run/x.sock".parse().unwrap();
    assert_eq!(ok, Address::unix("/run/x.sock", "disk"));
}
