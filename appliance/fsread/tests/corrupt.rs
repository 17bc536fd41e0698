//! Damaged and hostile images give errors, never panics: hand-made corruptions and
//! random byte flips in the metadata of real images.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use abri_fsread::{
    EntryKind, FileSystem, ReadAt, detect, open_fs, read_partition_table, used_ranges,
};
use common::*;
use proptest::prelude::*;

/// A base image with a few bytes overwritten.
struct Patched {
    base: Arc<Vec<u8>>,
    patches: Vec<(u64, u8)>,
}

impl ReadAt for Patched {
    fn size(&self) -> u64 {
        self.base.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.base.read_at(offset, buf)?;
        for &(at, byte) in &self.patches {
            if at >= offset && at < offset + buf.len() as u64 {
                buf[(at - offset) as usize] = byte;
            }
        }
        Ok(())
    }
}

/// Everything a caller might do with an image, bounded so a corrupted directory cycle
/// cannot make the walk itself endless. Errors are fine; panics are not.
fn exercise(src: Arc<dyn ReadAt>) {
    let _ = read_partition_table(&*src);
    let _ = detect(&*src);
    let _ = used_ranges(&*src);
    if let Ok(fs) = open_fs(src) {
        let mut budget = 400;
        walk_bounded(&*fs, b"/".to_vec(), 0, &mut budget);
    }
}

fn walk_bounded(fs: &dyn FileSystem, dir: Vec<u8>, depth: usize, budget: &mut usize) {
    let Ok(entries) = fs.list_dir(&dir) else {
        return;
    };
    for entry in entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let mut path = dir.clone();
        if path.len() > 1 {
            path.push(b'/');
        }
        path.extend_from_slice(&entry.raw_name);
        let _ = fs.stat(&path);
        match entry.kind {
            EntryKind::Dir if depth < 4 => walk_bounded(fs, path, depth + 1, budget),
            EntryKind::Symlink => {
                let _ = fs.read_link(&path);
            }
            EntryKind::File => {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = fs.read_at(&path, 0, &mut buf);
                let _ = fs.read_at(&path, entry.size.saturating_sub(100), &mut buf);
            }
            _ => {}
        }
    }
}

fn small_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b")).unwrap();
    fs::write(root.join("a/b/c.txt"), b"hello").unwrap();
    fs::write(root.join("big.bin"), noise(7, 300_000)).unwrap();
    for i in 0..40 {
        fs::write(root.join(format!("a/f{i}")), format!("{i}")).unwrap();
    }
    std::os::unix::fs::symlink("a/b/c.txt", root.join("link")).unwrap();
}

/// A small ext4 image, or `None` when mke2fs is missing.
fn ext4_image() -> Option<Arc<Vec<u8>>> {
    static IMAGE: OnceLock<Option<Arc<Vec<u8>>>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            tool("mke2fs", "ext4 corruption tests")?;
            let dir = tempfile::tempdir().unwrap();
            small_tree(&dir.path().join("tree"));
            let image = dir.path().join("fs.img");
            run(Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-b", "1024", "-d"])
                .arg(dir.path().join("tree"))
                .arg(&image)
                .arg("4M"));
            Some(Arc::new(fs::read(&image).unwrap()))
        })
        .clone()
}

/// A small NTFS image (files written with ntfscp, no mount needed), or `None`.
fn ntfs_image() -> Option<Arc<Vec<u8>>> {
    static IMAGE: OnceLock<Option<Arc<Vec<u8>>>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            tool("mkntfs", "NTFS corruption tests")?;
            tool("ntfscp", "NTFS corruption tests")?;
            let dir = tempfile::tempdir().unwrap();
            let image = dir.path().join("ntfs.img");
            fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
            run(Command::new("mkntfs").args(["-F", "-Q", "-q"]).arg(&image));
            let payload = dir.path().join("payload");
            for (name, data) in [
                ("small.txt", b"hello".to_vec()),
                ("big.bin", noise(8, 300_000)),
            ] {
                fs::write(&payload, data).unwrap();
                run(Command::new("ntfscp")
                    .arg("-f")
                    .arg(&image)
                    .arg(&payload)
                    .arg(name));
            }
            Some(Arc::new(fs::read(&image).unwrap()))
        })
        .clone()
}

/// Offsets where an NTFS image keeps metadata: the boot sector and the start of the MFT.
fn ntfs_metadata_span(image: &[u8]) -> (u64, u64) {
    let bytes_per_sector = u64::from(u16::from_le_bytes([image[11], image[12]]));
    let cluster = bytes_per_sector * u64::from(image[13]);
    let mft_lcn = u64::from_le_bytes(image[0x30..0x38].try_into().unwrap());
    (mft_lcn * cluster, 64 * 1024)
}

#[test]
fn the_unpatched_images_read_cleanly() {
    // The property tests below only mean something if the base images work.
    for image in [ext4_image(), ntfs_image()].into_iter().flatten() {
        let fs = open_fs(image.clone()).unwrap();
        let names: Vec<String> = fs
            .list_dir(b"/")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.iter().any(|n| n == "big.bin"), "{names:?}");
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut fs.read_file(b"/big.bin").unwrap(), &mut data).unwrap();
        assert_eq!(data.len(), 300_000);
        assert!(used_ranges(&*image).unwrap().is_some());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, ..ProptestConfig::default() })]

    #[test]
    fn damaged_ext4_metadata_never_panics(
        patches in proptest::collection::vec((0u64..96 * 1024, any::<u8>()), 1..24)
    ) {
        let Some(base) = ext4_image() else { return Ok(()) };
        exercise(Arc::new(Patched { base, patches }));
    }

    #[test]
    fn damaged_ntfs_metadata_never_panics(
        patches in proptest::collection::vec((any::<bool>(), 0u64..64 * 1024, any::<u8>()), 1..24)
    ) {
        let Some(base) = ntfs_image() else { return Ok(()) };
        let (mft, mft_len) = ntfs_metadata_span(&base);
        let patches = patches
            .into_iter()
            .map(|(in_boot, at, byte)| if in_boot { (at % 512, byte) } else { (mft + at % mft_len, byte) })
            .collect();
        exercise(Arc::new(Patched { base, patches }));
    }

    #[test]
    fn truncated_images_never_panic(cut in 0usize..4 << 20) {
        for base in [ext4_image(), ntfs_image()].into_iter().flatten() {
            let short = base[..cut.min(base.len())].to_vec();
            exercise(Arc::new(short));
        }
    }
}

/// Regression: an NTFS image cut inside its boot sector (11 bytes, found by the property
/// test above) made the `ntfs` crate panic; such a source is not NTFS at all.
#[test]
fn an_ntfs_image_cut_inside_its_boot_sector_is_not_ntfs() {
    let Some(base) = ntfs_image() else {
        return;
    };
    for cut in [11, 100, 511] {
        let short = Arc::new(base[..cut].to_vec());
        assert!(detect(&*short).is_none(), "cut at {cut}");
        exercise(short);
    }
}

/// A GPT header with a valid checksum claiming a huge entry array.
#[test]
fn a_gpt_header_claiming_huge_arrays_is_refused() {
    let mut disk = vec![0u8; 1 << 20];
    let header = &mut disk[512..1024];
    header[0..8].copy_from_slice(b"EFI PART");
    header[8..12].copy_from_slice(&[0, 0, 1, 0]);
    header[12..16].copy_from_slice(&92u32.to_le_bytes());
    header[24..32].copy_from_slice(&1u64.to_le_bytes());
    header[72..80].copy_from_slice(&2u64.to_le_bytes());
    header[80..84].copy_from_slice(&u32::MAX.to_le_bytes());
    header[84..88].copy_from_slice(&128u32.to_le_bytes());
    let crc = crc32fast::hash(&header[..92]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    let err = read_partition_table(&disk).unwrap_err();
    assert!(err.to_string().contains("partition entries"), "{err}");

    // An entry size other than 128 (which other parsers assert on) with an array past the end.
    let header = &mut disk[512..1024];
    header[80..84].copy_from_slice(&4u32.to_le_bytes());
    header[84..88].copy_from_slice(&256u32.to_le_bytes());
    header[72..80].copy_from_slice(&u64::MAX.to_le_bytes());
    header[16..20].fill(0);
    let crc = crc32fast::hash(&header[..92]);
    header[16..20].copy_from_slice(&crc.to_le_bytes());
    let err = read_partition_table(&disk).unwrap_err();
    assert!(err.to_string().contains("outside the disk"), "{err}");
}

/// An EBR chain that points back at itself ends in an error.
#[test]
fn a_looping_ebr_chain_is_refused() {
    let mut disk = vec![0u8; 1 << 20];
    disk[510] = 0x55;
    disk[511] = 0xAA;
    // Entry 1: extended partition at sector 100, 1000 sectors.
    let e = &mut disk[446..462];
    e[4] = 0x05;
    e[8..12].copy_from_slice(&100u32.to_le_bytes());
    e[12..16].copy_from_slice(&1000u32.to_le_bytes());
    for (ebr, next) in [(100u64, 50u32), (150, 50)] {
        let at = (ebr * 512) as usize;
        disk[at + 510] = 0x55;
        disk[at + 511] = 0xAA;
        let logical = &mut disk[at + 446..at + 462];
        logical[4] = 0x83;
        logical[8..12].copy_from_slice(&1u32.to_le_bytes());
        logical[12..16].copy_from_slice(&10u32.to_le_bytes());
        let link = &mut disk[at + 462..at + 478];
        link[4] = 0x05;
        link[8..12].copy_from_slice(&next.to_le_bytes());
        link[12..16].copy_from_slice(&20u32.to_le_bytes());
    }
    let err = read_partition_table(&disk).unwrap_err();
    assert!(err.to_string().contains("backwards"), "{err}");
}

#[test]
fn garbage_is_not_a_file_system() {
    let garbage = noise(11, 4 << 20);
    assert_eq!(detect(&garbage), None);
    assert_eq!(used_ranges(&garbage).unwrap(), None);
    assert!(matches!(
        open_fs(Arc::new(garbage)),
        Err(abri_fsread::Error::UnknownFileSystem)
    ));
    // An ext4 magic number alone is not enough.
    let mut fake = vec![0u8; 4 << 20];
    fake[1024 + 0x38..1024 + 0x3A].copy_from_slice(&0xEF53u16.to_le_bytes());
    assert!(used_ranges(&fake).is_err());
    assert!(open_fs(Arc::new(fake)).is_err());
}
