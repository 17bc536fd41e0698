use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn entry(path: &str, size: u64, mode: u32, mtime_ns: i64) -> Entry {
    let mut e = Entry::new(path.as_bytes().to_vec(), abri_store::EntryKind::File);
    e.size = size;
    e.mode = mode;
    e.mtime_ns = mtime_ns;
    e.atime_ns = mtime_ns;
    e
}

fn done(mode_set: u32, data_end: u64) -> FileDone {
    FileDone {
        owner: None,
        mode_set,
        data_end,
    }
}

/// `n` bytes of a pattern, placed at `lead`.
fn pattern(n: usize, seed: u8, lead: usize) -> Arc<PlacedChunk> {
    let bytes: Vec<u8> = (0..n)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 12) as u8 ^ seed)
        .collect();
    Arc::new(PlacedChunk::copied(&bytes, lead))
}

/// The lead that puts chunk byte `start` at the alignment of file offset `offset`.
fn lead_for(offset: u64, start: usize) -> usize {
    (offset as usize + ALIGN - start % ALIGN) % ALIGN
}

/// Creates `name` in `dir` as the restorer does, direct when asked and possible.
fn create(dir: &Path, name: &str, direct: bool) -> (File, Option<File>) {
    let fd = platform::open_dir_at(None, dir.as_os_str().as_encoded_bytes()).unwrap();
    let file = platform::create_file_at(fd.as_fd(), name.as_bytes(), 0o600).unwrap();
    let direct = direct
        .then(|| platform::reopen_direct_at(fd.as_fd(), name.as_bytes(), &file))
        .flatten();
    (file, direct)
}

/// Extents of every shape (unaligned starts and ends, runs that fill and overflow a
/// run buffer, a hole, a piece at the very end; pieces of a chunk placed at their
/// alignment and at another), written through a feed, in a file sized past its last
/// byte; the file must hold exactly the expected bytes.
fn round_trip(direct: bool) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let (file, direct) = create(dir.path(), "f", direct);
    let was_direct = direct.is_some();
    let size = 13 * (1 << 20) + 777;
    let mut expected = vec![0u8; size];
    let counters = Counters::default();
    let open = OpenFile::new(
        file,
        direct,
        entry("f", size as u64, 0o640, 1_500_000_000_000_000_000),
        done(0o600, size as u64),
    );
    // Placed so that its byte 3, at file offset 10_001, lies at that alignment.
    let big = pattern(5 << 20, 1, lead_for(10_001, 3));
    let small = pattern(10_001, 2, 0);
    // (chunk, start, end, offset)
    let mut extents: Vec<(&Arc<PlacedChunk>, usize, usize, u64)> = vec![
        (&small, 0, 10_001, 0),
        (&big, 3, 5 << 20, 10_001),
        (&small, 100, 9_000, 10_001 + (5 << 20) - 3),
    ];
    // A hole, then an unaligned start, then a piece ending at the file's end.
    let after_hole = 10_001 + (5 << 20) - 3 + 8_900 + 123_457;
    extents.push((&big, 0, 4 << 20, after_hole as u64));
    // After another hole, a piece at the chunk's alignment again, from an unaligned
    // offset.
    let again = 10_001 - 3 + 5_000 + 2_560 * ALIGN as u64;
    assert_eq!(lead_for(again, 5_000), lead_for(10_001, 3));
    extents.push((&big, 5_000, 5_000 + (2 << 20) + 100, again));
    let tail_at = size - 5_000;
    extents.push((&small, 0, 5_000, tail_at as u64));
    let mut bytes = 0;
    run_with_writers(&counters, QUEUE, |w| {
        let mut feed = FileFeed::new(w, open);
        for (chunk, start, end, offset) in &extents {
            feed.push(chunk, *start, *end, *offset).unwrap();
            let at = *offset as usize;
            expected[at..at + end - start].copy_from_slice(&chunk[*start..*end]);
            bytes += end - start;
        }
        feed.finish()
    })
    .unwrap();
    let path = dir.path().join("f");
    let got = std::fs::read(&path).unwrap();
    assert_eq!(got.len(), size);
    assert!(
        got == expected,
        "restored bytes differ (direct: {was_direct})"
    );
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(meta.mtime(), 1_500_000_000);
    assert_eq!(counters.bytes_scanned.load(Ordering::Relaxed), bytes as u64);
    assert_eq!(counters.warnings.load(Ordering::Relaxed), 0);
    was_direct
}

#[test]
fn a_file_written_directly_has_exactly_its_bytes() {
    // /tmp may refuse O_DIRECT (tmpfs before Linux 6.6): then this checks the buffered
    // path twice, which the test after this one covers anyway.
    if !round_trip(true) {
        eprintln!("O_DIRECT refused under {:?}", std::env::temp_dir());
    }
}

#[test]
fn whole_blocks_at_their_alignment_are_written_from_the_chunk() {
    let chunk = pattern(1 << 20, 3, 100);
    // Byte 0 sits 100 bytes past an aligned address: aligned for file offset 100 (and
    // any offset 100 past a block).
    let at = |offset: u64, start: usize, end: usize| direct_span(&chunk, start, end, offset);
    assert_eq!(at(100, 0, 1 << 20), Some((3_996, 3_996 + 255 * ALIGN)));
    assert_eq!(
        at(8_302, 10, 500_000),
        Some((3_996, 3_996 + (500_000 - 3_996) / ALIGN * ALIGN))
    );
    // Another alignment: copied.
    assert_eq!(at(0, 0, 1 << 20), None);
    assert_eq!(at(101, 0, 1 << 20), None);
    // Too few whole blocks to be worth a job of their own.
    assert_eq!(at(100, 0, 3_996 + DIRECT_SPAN_MIN - 1), None);
    assert_eq!(
        at(100, 0, 3_996 + DIRECT_SPAN_MIN),
        Some((3_996, 3_996 + DIRECT_SPAN_MIN))
    );
    // No whole block at all.
    assert_eq!(at(100, 0, 3_000), None);
}

#[test]
fn a_file_written_through_the_page_cache_has_exactly_its_bytes() {
    assert!(!round_trip(false));
}

/// Restores one file of `size` bytes whose data is `data` at 0, created 0o600, whose
/// entry says `mode`; returns its size and mode.
fn restore_one(data: &[u8], size: u64, mode: u32, told: FileDone) -> (u64, u32) {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = create(dir.path(), "f", false);
    let counters = Counters::default();
    run_with_writers(&counters, QUEUE, |w| {
        let mut feed = FileFeed::new(
            w,
            OpenFile::new(file, None, entry("f", size, mode, 0), told),
        );
        if !data.is_empty() {
            feed.push(
                &Arc::new(PlacedChunk::from_vec(data.to_vec())),
                0,
                data.len(),
                0,
            )?;
        }
        feed.finish()
    })
    .unwrap();
    let meta = std::fs::metadata(dir.path().join("f")).unwrap();
    (meta.len(), meta.permissions().mode() & 0o7777)
}

#[test]
fn a_file_is_sized_when_its_data_ends_before_its_size() {
    // A hole at the end.
    assert_eq!(restore_one(b"abc", 10_000, 0o600, done(0o600, 3)).0, 10_000);
    // All hole.
    assert_eq!(restore_one(b"", 123, 0o600, done(0o600, 0)).0, 123);
    // Data to the end: nothing to change.
    assert_eq!(restore_one(b"abc", 3, 0o600, done(0o600, 3)).0, 3);
}

#[test]
fn the_mode_is_set_unless_the_file_was_created_with_it() {
    // Created 0o600 (as if the umask had taken bits away): the entry's mode is set.
    assert_eq!(restore_one(b"x", 1, 0o640, done(0o600, 1)).1, 0o640);
    // Special bits are never given at creation: always set.
    assert_eq!(restore_one(b"x", 1, 0o4700, done(0o700, 1)).1, 0o4700);
    // Said to be created with its mode: not set again (the file, really 0o600, shows
    // that no chmod happened).
    assert_eq!(restore_one(b"x", 1, 0o640, done(0o640, 1)).1, 0o600);
}

#[test]
fn small_files_are_not_written_directly() {
    let writers_size = DIRECT_MIN - 1;
    let shared = Arc::new(Shared::new());
    let (tx, _rx) = bounded(1);
    let (_ftx, frx) = bounded(1);
    let w = Writers {
        queue: tx,
        batch: Mutex::new(Batch::default()),
        free_runs: frx,
        runs_made: AtomicUsize::new(0),
        shared: shared.clone(),
    };
    assert!(!w.wants_direct(writers_size));
    assert!(w.wants_direct(DIRECT_MIN));
    shared.direct_ok.store(false, Ordering::Relaxed);
    assert!(!w.wants_direct(DIRECT_MIN), "not after a refusal");
}

#[test]
fn the_direct_descriptor_must_name_the_created_file() {
    let dir = tempfile::tempdir().unwrap();
    let fd = platform::open_dir_at(None, dir.path().as_os_str().as_encoded_bytes()).unwrap();
    let file = platform::create_file_at(fd.as_fd(), b"f", 0o600).unwrap();
    // Replaced between creation and the second open.
    std::fs::write(dir.path().join("other"), b"x").unwrap();
    std::fs::rename(dir.path().join("other"), dir.path().join("f")).unwrap();
    assert!(platform::reopen_direct_at(fd.as_fd(), b"f", &file).is_none());
    // A symlink in its place is not followed either.
    std::fs::remove_file(dir.path().join("f")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("f")).unwrap();
    assert!(platform::reopen_direct_at(fd.as_fd(), b"f", &file).is_none());
}

#[test]
fn a_write_error_stops_the_restore_and_is_the_error_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read-only");
    std::fs::write(&path, b"").unwrap();
    // Opened for reading only: every write to it fails.
    let file = File::open(&path).unwrap();
    let open = OpenFile::new(
        file,
        None,
        entry("a/read-only", 10, 0o600, 0),
        done(0o600, 10),
    );
    let counters = Counters::default();
    let mut saw_stop = false;
    let result: Result<(), RestoreError> = run_with_writers(&counters, QUEUE, |w| {
        let mut feed = FileFeed::new(w, open);
        feed.push(&Arc::new(PlacedChunk::from_vec(vec![7; 10])), 0, 10, 0)
            .unwrap();
        feed.finish().unwrap();
        // As the restorer does before it waits for anything.
        w.flush().unwrap();
        for _ in 0..10_000 {
            if w.stopped() {
                saw_stop = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Once stopped, nothing more is queued.
        let (other, _) = create(dir.path(), "other", false);
        let b = OpenFile::new(other, None, entry("b", 0, 0o600, 0), done(0o600, 0));
        let mut feed = FileFeed::new(w, b);
        let one = Arc::new(PlacedChunk::from_vec(vec![1]));
        assert!(feed.push(&one, 0, 1, 0).is_err() || feed.finish().is_err());
        Err(RestoreError::WritersStopped)
    });
    assert!(saw_stop, "the restorer learns of the failure");
    match result {
        Err(RestoreError::Io { path, .. }) => assert_eq!(path, "a/read-only"),
        other => panic!("expected the writer's error, got {other:?}"),
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn a_writer_failure_wins_over_a_restore_that_went_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro");
    std::fs::write(&path, b"").unwrap();
    let open = OpenFile::new(
        File::open(&path).unwrap(),
        None,
        entry("ro", 1, 0o600, 0),
        done(0o600, 1),
    );
    let counters = Counters::default();
    let result = run_with_writers(&counters, QUEUE, |w| {
        let mut feed = FileFeed::new(w, open);
        feed.push(&Arc::new(PlacedChunk::from_vec(vec![1])), 0, 1, 0)?;
        feed.finish()?;
        Ok(42)
    });
    assert!(matches!(result, Err(RestoreError::Io { .. })), "{result:?}");
}

/// Owner and mode as a root restore sets them: an owner the file already has is not set
/// again, and the mode is right whether or not the owner changed (a change of owner
/// clears set-user-ID and set-group-ID bits, which must then be set again).
#[test]
fn owner_and_mode_are_right_whether_or_not_the_owner_changes() {
    let dir = tempfile::tempdir().unwrap();
    let counters = Counters::default();
    // SAFETY: geteuid and getegid cannot fail.
    let me = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut owners = vec![me];
    if me.0 == 0 {
        owners.push((4321, 4321));
    }
    for (i, owner) in owners.into_iter().enumerate() {
        for (j, mode) in [0o4755, 0o2750, 0o600, 0o1777].into_iter().enumerate() {
            let name = format!("f{i}-{j}");
            let (file, _) = create(dir.path(), &name, false);
            let e = entry(&name, 0, mode, 1_500_000_000_000_000_000);
            apply_fd_meta(&counters, file.as_fd(), &e, Some(owner), Some(0o600));
            let meta = std::fs::metadata(dir.path().join(&name)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), owner, "{name}");
            assert_eq!(meta.permissions().mode() & 0o7777, mode, "{name}");
        }
    }
    assert_eq!(counters.warnings.load(Ordering::Relaxed), 0);
}

/// Small files' jobs wait in a batch, but a full batch goes to the writers without a
/// flush (the restorer flushes only before it may wait), and the rest goes when the
/// restore returns.
#[test]
fn a_full_batch_is_written_without_a_flush_and_the_rest_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let counters = Counters::default();
    let files = BATCH + 3;
    let chunk = pattern(files * 10, 9, 0);
    let mut first_written_early = false;
    run_with_writers(&counters, QUEUE, |w| {
        for i in 0..files {
            let name = format!("f{i}");
            let (file, _) = create(dir.path(), &name, false);
            let open = OpenFile::new(file, None, entry(&name, 10, 0o600, 0), done(0o600, 10));
            let mut feed = FileFeed::new(w, open);
            feed.push(&chunk, i * 10, i * 10 + 10, 0)?;
            feed.finish()?;
        }
        for _ in 0..10_000 {
            if std::fs::metadata(dir.path().join("f0")).unwrap().len() == 10 {
                first_written_early = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(())
    })
    .unwrap();
    assert!(first_written_early, "a full batch reaches the writers");
    for i in 0..files {
        let bytes = std::fs::read(dir.path().join(format!("f{i}"))).unwrap();
        assert_eq!(bytes, chunk[i * 10..i * 10 + 10], "file {i}");
    }
}
