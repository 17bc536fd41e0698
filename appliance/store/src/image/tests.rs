use super::*;
use crate::catalog::CatalogWriter;
use crate::snapshot::{
    MANIFEST_FORMAT, SnapshotKind, SnapshotManifest, SnapshotStats, commit_snapshot,
};
use crate::store::ChunkStore;
use crate::testutil::{new_store, noise, put, small};

const CHUNK: u32 = 4096;
const SEGMENT: u64 = 4 * 4096;

fn info(name: &str, size: u64) -> ImageInfo {
    ImageInfo {
        name: name.into(),
        source: format!("/dev/{name}"),
        size,
        chunk_size: CHUNK,
        segment_size: SEGMENT,
        table: "none".into(),
        volumes: Vec::new(),
        read: "all".into(),
        file_state: None,
    }
}

/// An image with data, zero chunks and a short last chunk, stored as a snapshot.
fn image_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut data = noise(size, seed);
    // Every third chunk is a hole.
    for (i, c) in data.chunks_mut(CHUNK as usize).enumerate() {
        if i % 3 == 1 {
            c.fill(0);
        }
    }
    data
}

fn store_images(store: &ChunkStore, images: &[(ImageInfo, Vec<u8>)]) -> SnapshotManifest {
    let mut catalog = CatalogWriter::new(store.key().clone(), small(), 1);
    let mut sorted: Vec<&(ImageInfo, Vec<u8>)> = images.iter().collect();
    sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    for (info, data) in sorted {
        catalog.push(&image_dir_entry(info, 1)).unwrap();
        let mut segs = ImageSegments::new(info.clone(), 1);
        for c in data.chunks(CHUNK as usize) {
            let digest = (!c.iter().all(|&b| b == 0)).then(|| put(store, c));
            if let Some(e) = segs.push(digest).unwrap() {
                catalog.push(&e).unwrap();
            }
        }
        assert!(segs.is_complete());
        assert!(segs.push(None).is_err(), "a slot past the end is refused");
    }
    let finished = catalog.finish();
    for c in &finished.chunks {
        store.insert_encoded(&c.digest, &c.bytes).unwrap();
    }
    SnapshotManifest {
        format: MANIFEST_FORMAT,
        id: "20261121t000000z-0001".into(),
        machine: "pc-1".into(),
        kind: SnapshotKind::Image,
        plan: "image".into(),
        started: 1,
        finished: 2,
        full: true,
        catalog: finished.digests,
        stats: SnapshotStats::default(),
        source: "pc-1".into(),
        host: "pc-1".into(),
        images: images.iter().map(|(i, _)| i.clone()).collect(),
        without_snapshot: false,
    }
}

#[test]
fn images_commit_and_read_back_at_any_offset() {
    let (_dir, store) = new_store();
    let sda = image_bytes(120 * CHUNK as usize + 1000, 7);
    let sdb = image_bytes(9 * CHUNK as usize, 8);
    let m = store_images(
        &store,
        &[
            (info("sda", sda.len() as u64), sda.clone()),
            (info("sdb", sdb.len() as u64), sdb.clone()),
        ],
    );
    commit_snapshot(&m, &store).unwrap();
    assert!(
        m.catalog.len() > 1,
        "the test needs a catalog of several chunks"
    );
    for (name, data) in [("sda", &sda), ("sdb", &sdb)] {
        let i = m.images.iter().find(|i| i.name == name).unwrap().clone();
        let r = ImageReader::open(&store, m.catalog.clone(), i).unwrap();
        let mut all = vec![1u8; data.len()];
        r.read_at(0, &mut all).unwrap();
        assert_eq!(&all, data, "{name}");
        // Reads across chunk and segment boundaries, and a tail read.
        for (off, len) in [
            (4000u64, 300usize),
            (16_000, 9000),
            (data.len() as u64 - 5, 5),
        ] {
            let mut buf = vec![9u8; len];
            r.read_at(off, &mut buf)
                .unwrap_or_else(|e| panic!("{name} {off}: {e}"));
            assert_eq!(
                &buf[..],
                &data[off as usize..off as usize + len],
                "{name} {off}"
            );
        }
        let mut past = vec![0u8; 2];
        assert!(r.read_at(data.len() as u64 - 1, &mut past).is_err());
    }
}

#[test]
fn commit_refuses_a_catalog_that_does_not_match_its_images() {
    let (_dir, store) = new_store();
    let sda = image_bytes(5 * CHUNK as usize, 3);
    let good = store_images(&store, &[(info("sda", sda.len() as u64), sda)]);

    let mut wrong_size = good.clone();
    wrong_size.images[0].size += u64::from(CHUNK);
    assert!(commit_snapshot(&wrong_size, &store).is_err());

    let mut no_images = good.clone();
    no_images.images.clear();
    assert!(commit_snapshot(&no_images, &store).is_err());

    let mut files_with_images = good.clone();
    files_with_images.kind = SnapshotKind::Files;
    assert!(commit_snapshot(&files_with_images, &store).is_err());

    let mut renamed = good.clone();
    renamed.images[0].name = "sdz".into();
    assert!(commit_snapshot(&renamed, &store).is_err());

    let mut bad_name = good.clone();
    bad_name.images[0].name = "../x".into();
    assert!(commit_snapshot(&bad_name, &store).is_err());

    assert!(
        crate::snapshot::list_snapshots(&store, "pc-1")
            .unwrap()
            .is_empty()
    );
    commit_snapshot(&good, &store).unwrap();
}

#[test]
fn unaligned_extents_are_refused() {
    let i = info("sda", 2 * u64::from(CHUNK));
    let mut seg = Entry::new(segment_path("sda", 0), EntryKind::File);
    seg.size = 2 * u64::from(CHUNK);
    seg.extents.push(Extent {
        digest: Digest([1; 32]),
        chunk_offset: 0,
        len: 100,
        file_offset: 10,
    });
    let entries = vec![Ok(image_dir_entry(&i, 0)), Ok(seg)];
    assert!(check_image_entries(&[i], entries).is_err());
}

#[test]
fn image_info_is_validated() {
    let good = info("disk-0.img", 1 << 20);
    good.validate().unwrap();
    for bad in [
        ImageInfo {
            size: 0,
            ..good.clone()
        },
        ImageInfo {
            chunk_size: 1000,
            ..good.clone()
        },
        ImageInfo {
            segment_size: 5000,
            ..good.clone()
        },
        ImageInfo {
            name: ".hidden".into(),
            ..good.clone()
        },
        ImageInfo {
            name: "a b".into(),
            ..good.clone()
        },
        ImageInfo {
            volumes: vec![ImageVolume {
                number: 1,
                start: 1 << 19,
                size: 1 << 20,
                type_id: String::new(),
                label: String::new(),
                fs: String::new(),
                used_bytes: None,
            }],
            ..good.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}
