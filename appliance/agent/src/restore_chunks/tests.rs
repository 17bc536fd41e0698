use super::*;
use abri_store::StoreError;
use std::sync::Mutex;

/// Chunk `n` is 300 KiB of bytes derived from `n`; every fetch is recorded.
struct Chunks {
    asked: Mutex<Vec<Digest>>,
}

const CHUNK_LEN: usize = 300 << 10;

fn d(n: u8) -> Digest {
    Digest([n; 32])
}

fn content(digest: &Digest) -> Vec<u8> {
    // Not periodic: a range copied from the wrong offset has other bytes.
    (0..CHUNK_LEN as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ digest.0[0])
        .collect()
}

impl ChunkSource for Chunks {
    fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        self.asked.lock().unwrap().push(*digest);
        Ok(content(digest))
    }
}

fn ext(n: u8, offset: u32, len: u32) -> Extent {
    at(n, offset, len, 0)
}

/// Bytes `chunk_offset..+len` of chunk `n` at `file_offset`.
fn at(n: u8, chunk_offset: u32, len: u32, file_offset: u64) -> Extent {
    Extent {
        digest: d(n),
        chunk_offset,
        len,
        file_offset,
    }
}

/// Restores `files` through [`RestoreChunks`]: every piece has the right bytes, and the
/// source is asked for exactly the plan's fetches, in order. Returns the plan.
fn restore(files: &[Vec<Extent>]) -> RestorePlan {
    let plan = RestorePlan::of(files.iter().map(Vec::as_slice), false);
    let source = Chunks {
        asked: Mutex::new(Vec::new()),
    };
    let mut chunks = RestoreChunks::new(&source, plan.keep.clone());
    for (i, file) in files.iter().enumerate() {
        for e in file {
            let piece = chunks.piece(e, format!("f{i}").as_bytes()).unwrap();
            let want = &content(&e.digest)[e.chunk_offset as usize..][..e.len as usize];
            assert!(piece.bytes() == want, "file {i}, extent {e:?}");
        }
    }
    let planned: Vec<Digest> = plan.fetches.iter().map(|f| f.digest).collect();
    assert_eq!(*source.asked.lock().unwrap(), planned);
    assert!(
        chunks.kept.is_empty(),
        "every kept range is dropped after its last use"
    );
    plan
}

#[test]
fn the_plan_is_what_the_restore_asks_for() {
    // Small files sharing chunks, a file coming back to a chunk long evicted (kept), one
    // coming back for more than a kept range may hold (fetched again), and a range used
    // three times.
    let big = KEEP_RANGE_MAX + 1;
    let files = vec![
        vec![ext(1, 0, 100), ext(1, 100, big)],
        vec![ext(2, 0, 10)],
        vec![ext(3, 0, 10), ext(4, 0, 10)],
        vec![ext(5, 0, 10), ext(6, 0, 10), ext(7, 0, 10)],
        vec![ext(1, 0, 100)],
        vec![ext(8, 0, 10), ext(9, 0, 10), ext(10, 0, 10), ext(11, 0, 10)],
        vec![ext(1, 0, 100)],
        vec![ext(2, 0, 10), ext(2, 777, 33)],
        vec![ext(1, 100, big)],
        vec![ext(12, 5, 7)],
    ];
    let plan = restore(&files);
    let numbers: Vec<u8> = plan.fetches.iter().map(|f| f.digest.0[0]).collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 12]);
    assert_eq!(
        plan.keep[&d(2)],
        vec![
            KeepRange {
                offset: 0,
                len: 10,
                uses: 1
            },
            KeepRange {
                offset: 777,
                len: 33,
                uses: 1
            }
        ]
    );
    assert_eq!(
        plan.keep[&d(1)],
        vec![KeepRange {
            offset: 0,
            len: 100,
            uses: 2
        }]
    );
}

#[test]
fn kept_bytes_stay_within_the_budget() {
    // Chunk 0 read whole, then more ranges of it than the budget holds, after it left the
    // cache: the ranges beyond the budget fetch it again.
    let n = (KEEP_BUDGET / u64::from(KEEP_RANGE_MAX)) as u32;
    let mut files: Vec<Vec<Extent>> = vec![vec![ext(0, 0, 1)]];
    files.extend((1..=4).map(|i| vec![ext(i, 0, 1)]));
    let mut wanted = Vec::new();
    for i in 0..n + 3 {
        wanted.push(vec![ext(0, i, KEEP_RANGE_MAX)]);
        // Evict chunk 0 again after each.
        wanted.extend((1..=4).map(|j| vec![ext(j, i, 1)]));
    }
    files.extend(wanted);
    let plan = RestorePlan::of(files.iter().map(Vec::as_slice), false);
    let kept: u64 = plan.keep.values().flatten().map(|k| u64::from(k.len)).sum();
    assert_eq!(kept, KEEP_BUDGET);
    let refetches = plan.fetches.iter().filter(|f| f.digest.0[0] == 0).count();
    assert!(refetches > 1, "past the budget chunk 0 is fetched again");
}

#[test]
fn a_kept_range_past_the_chunk_is_a_catalog_error() {
    let files = [
        vec![ext(1, 0, 10)],
        vec![ext(2, 0, 1)],
        vec![ext(3, 0, 1)],
        vec![ext(4, 0, 1)],
        vec![ext(5, 0, 1)],
        vec![ext(1, CHUNK_LEN as u32 - 5, 10)],
    ];
    let plan = RestorePlan::of(files.iter().map(Vec::as_slice), false);
    assert!(plan.keep.contains_key(&d(1)));
    let source = Chunks {
        asked: Mutex::new(Vec::new()),
    };
    let mut chunks = RestoreChunks::new(&source, plan.keep);
    for f in &files[..5] {
        chunks.piece(&f[0], b"ok").unwrap();
    }
    let err = chunks
        .piece(&files[5][0], b"bad")
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("names bytes")),
        "{err:?}"
    );
}

#[test]
fn a_chunk_is_placed_for_the_longest_piece_of_a_directly_written_file() {
    let large = DIRECT_MIN as u32;
    let files = [
        // A small file fetches chunk 1; a large file then takes a long piece of it, and
        // another large file a shorter one.
        vec![at(1, 0, 100, 0)],
        vec![at(1, 100, 70_000, 0), at(2, 0, large, 70_000)],
        vec![at(1, 70_100, 5_000, 0), at(3, 0, large, 5_000)],
        // Only small files use chunk 4: placed for the one that fetches it.
        vec![at(4, 10, 50, 1_000)],
        vec![at(4, 60, 70, 0)],
    ];
    let plan = RestorePlan::of(files.iter().map(Vec::as_slice), false);
    let leads: Vec<(u8, usize)> = plan
        .fetches
        .iter()
        .map(|f| (f.digest.0[0], f.lead))
        .collect();
    // Chunk 1's byte 100 goes to offset 0: lead 4096 - 100. Chunk 2's byte 0 goes to
    // offset 70_000 (70_000 % 4096 = 368); chunk 3's to 5_000 (904); chunk 4's byte 10 to
    // 1_000 (990).
    assert_eq!(leads, [(1, 3_996), (2, 368), (3, 904), (4, 990)]);
    for f in &plan.fetches {
        assert!(f.lead < ALIGN);
    }
}

#[test]
fn chunks_only_one_extent_of_a_large_file_uses_go_to_the_bulk_lane() {
    let large = DIRECT_MIN as u32;
    let files = [
        // A small file shares chunk 1 with the start of a large file, whose middle chunks 2
        // and 3 are its alone, and whose end shares chunk 4 with the next small file.
        vec![at(1, 0, 100, 0)],
        vec![
            at(1, 100, 1_000, 0),
            at(2, 0, large, 1_000),
            at(3, 0, large, 1_000 + u64::from(large)),
            at(4, 0, 500, 1_000 + 2 * u64::from(large)),
        ],
        vec![at(4, 500, 200, 0)],
        // Used once, but by a small file: the walk fetches it.
        vec![at(5, 0, 300, 0)],
        // Chunk 6 is used by two large files: the walk fetches it once.
        vec![at(6, 0, large, 0)],
        vec![at(6, 0, large, 0)],
    ];
    let plan = RestorePlan::of(files.iter().map(Vec::as_slice), true);
    let bulk: Vec<(u8, usize)> = plan.bulk.iter().map(|f| (f.digest.0[0], f.lead)).collect();
    // Chunk 2's byte 0 goes to offset 1_000, chunk 3's to 1_000 + 256 KiB: both lead 1_000.
    assert_eq!(bulk, [(2, 1_000), (3, 1_000)]);
    assert_eq!(plan.bulk_digests(), HashSet::from([d(2), d(3)]));
    let walk: Vec<u8> = plan.fetches.iter().map(|f| f.digest.0[0]).collect();
    assert_eq!(walk, [1, 4, 5, 6]);

    // The walk's own plan is still exactly what it asks for, bulk extents left out.
    let source = Chunks {
        asked: Mutex::new(Vec::new()),
    };
    let mut chunks = RestoreChunks::new(&source, plan.keep.clone());
    for (i, file) in files.iter().enumerate() {
        for e in file
            .iter()
            .filter(|e| !plan.bulk_digests().contains(&e.digest))
        {
            chunks.piece(e, format!("f{i}").as_bytes()).unwrap();
        }
    }
    let planned: Vec<Digest> = plan.fetches.iter().map(|f| f.digest).collect();
    assert_eq!(*source.asked.lock().unwrap(), planned);

    // Without a bulk lane (the Windows restorer), every chunk is the walk's.
    let single = RestorePlan::of(files.iter().map(Vec::as_slice), false);
    assert!(single.bulk.is_empty());
    assert_eq!(single.fetches.len(), 6);
}
