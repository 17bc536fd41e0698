//! Partition tables made by sfdisk on sparse files read back as sfdisk reports them.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use abri_fsread::{
    FsKind, ReadAt, Slice, TableKind, detect, open_fs, read_partition_table, used_ranges,
};
use common::*;

fn sfdisk(image: &Path, script: &str) {
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(image)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sfdisk: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sfdisk_json(image: &Path) -> serde_json::Value {
    let out = run(Command::new("sfdisk").arg("--json").arg(image));
    serde_json::from_str::<serde_json::Value>(&out).unwrap()["partitiontable"].clone()
}

fn sparse_disk(path: &Path, bytes: u64) {
    let _ = fs::remove_file(path);
    fs::File::create(path).unwrap().set_len(bytes).unwrap();
}

/// Checks every partition against sfdisk's own report of the table.
fn assert_matches_sfdisk(image: &Path, table: &abri_fsread::PartitionTable) {
    let json = sfdisk_json(image);
    let expected = json["partitions"].as_array().unwrap();
    assert_eq!(table.partitions.len(), expected.len(), "{table:#?}");
    let prefix = image.to_string_lossy().into_owned();
    for (p, e) in table.partitions.iter().zip(expected) {
        let node = e["node"].as_str().unwrap();
        assert_eq!(p.number.to_string(), node.strip_prefix(&prefix).unwrap());
        assert_eq!(p.start, e["start"].as_u64().unwrap() * 512);
        assert_eq!(p.size, e["size"].as_u64().unwrap() * 512);
        let kind = e["type"].as_str().unwrap();
        match table.kind {
            TableKind::Gpt => {
                assert_eq!(p.type_id, kind);
                assert_eq!(p.uuid.as_deref(), e["uuid"].as_str());
                assert_eq!(p.name, e["name"].as_str().unwrap_or(""));
            }
            _ => {
                assert_eq!(
                    p.type_id,
                    format!("0x{:02x}", u8::from_str_radix(kind, 16).unwrap())
                );
                assert_eq!(
                    p.attributes == 0x80,
                    e["bootable"].as_bool().unwrap_or(false)
                );
            }
        }
    }
    let id = json["id"].as_str().unwrap();
    assert_eq!(table.disk_id.as_deref(), Some(id));
}

#[test]
fn gpt_reads_back_and_falls_back_to_the_backup_header() {
    let test = "gpt_reads_back_and_falls_back_to_the_backup_header";
    if tool("sfdisk", test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("gpt.img");
    sparse_disk(&image, 64 << 20);
    sfdisk(
        &image,
        "label: gpt\nunit: sectors\n\
         start=2048, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root fs\"\n\
         start=22528, size=10240, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI\"\n\
         start=40960, size=20480, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=\"données\"\n",
    );
    let table = read_partition_table(&*open_file(&image)).unwrap();
    assert_eq!(table.kind, TableKind::Gpt);
    assert_eq!(table.sector_size, 512);
    assert_matches_sfdisk(&image, &table);
    assert_eq!(table.partitions[2].name, "données");
    // Serialised with the snapshot.
    let json = serde_json::to_string(&table).unwrap();
    assert_eq!(
        serde_json::from_str::<abri_fsread::PartitionTable>(&json).unwrap(),
        table
    );

    // A damaged primary header: the backup at the end of the disk gives the same table.
    let disk = fs::OpenOptions::new().write(true).open(&image).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&disk, &[0xFF; 16], 512 + 24).unwrap();
    assert_eq!(read_partition_table(&*open_file(&image)).unwrap(), table);
    // Both damaged, behind a protective MBR: an error, not an empty or MBR table.
    let last = (64 << 20) - 512;
    std::os::unix::fs::FileExt::write_all_at(&disk, &[0xFF; 16], last + 24).unwrap();
    let err = read_partition_table(&*open_file(&image)).unwrap_err();
    assert!(err.to_string().contains("GPT"), "{err}");
}

#[test]
fn mbr_with_logical_partitions_reads_back() {
    let test = "mbr_with_logical_partitions_reads_back";
    if tool("sfdisk", test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("mbr.img");
    sparse_disk(&image, 64 << 20);
    sfdisk(
        &image,
        "label: dos\n\
         start=2048, size=10240, type=83, bootable\n\
         start=12288, size=10240, type=7\n\
         start=22528, size=81920, type=5\n\
         start=24576, size=8192, type=83\n\
         start=34816, size=8192, type=82\n\
         start=45056, size=8192, type=c\n",
    );
    let table = read_partition_table(&*open_file(&image)).unwrap();
    assert_eq!(table.kind, TableKind::Mbr);
    assert_matches_sfdisk(&image, &table);
    let numbers: Vec<u32> = table.partitions.iter().map(|p| p.number).collect();
    assert_eq!(numbers, [1, 2, 3, 5, 6, 7]);
    assert!(table.partitions[2].is_extended_container());
    assert!(!table.partitions[3].is_extended_container());
}

#[test]
fn a_file_system_inside_a_partition_is_read_through_a_slice() {
    let test = "a_file_system_inside_a_partition_is_read_through_a_slice";
    if tool("sfdisk", test).is_none() || tool("mke2fs", test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    sparse_disk(&image, 64 << 20);
    sfdisk(
        &image,
        "label: gpt\nstart=2048, size=40960, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    );
    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("hello.txt"), b"inside a partition\n").unwrap();
    // mke2fs writes the file system at the partition's offset inside the disk image.
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-E", "offset=1048576", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("20M"));

    let disk: Arc<dyn ReadAt> = open_file(&image);
    assert_eq!(detect(&*disk), None, "the disk itself holds no file system");
    assert_eq!(
        used_ranges(&*disk).unwrap(),
        None,
        "unknown: the caller reads everything"
    );
    let table = read_partition_table(&*disk).unwrap();
    let p = &table.partitions[0];
    let part = Slice::new(disk.clone(), p.start, p.size).unwrap();
    assert_eq!(detect(&part), Some(FsKind::Ext4));
    let ranges = used_ranges(&part).unwrap().unwrap();
    assert!(ranges.last().unwrap().end <= 20 << 20, "{ranges:?}");
    let fs = open_fs(Arc::new(part)).unwrap();
    let mut buf = [0u8; 64];
    let n = fs.read_at(b"/hello.txt", 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"inside a partition\n");
    assert!(
        Slice::new(disk.clone(), 60 << 20, 8 << 20).is_err(),
        "a window past the disk's end"
    );
}

#[test]
fn blank_and_tiny_disks_have_no_table() {
    let blank: Vec<u8> = vec![0u8; 1 << 20];
    assert_eq!(read_partition_table(&blank).unwrap().kind, TableKind::None);
    let tiny: Vec<u8> = vec![0u8; 100];
    assert_eq!(read_partition_table(&tiny).unwrap().kind, TableKind::None);
    assert_eq!(
        read_partition_table(&Vec::<u8>::new()).unwrap().kind,
        TableKind::None
    );
}
