//! qcow2 files written by abri-vdisk, judged by QEMU's own `qemu-img` (Debian's
//! qemu-utils): `check` finds no error or leak, `info` reads the right size, `compare`
//! against a raw file holding the same bytes says identical, and `map` shows exactly the
//! allocated clusters, each where the plan put it.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use abri_vdisk::{Qcow2Plan, write_qcow2};
use serde_json::Value;

const GIB: u64 = 1 << 30;

/// Bytes of guest cluster `index`: different for every cluster, never all zero.
fn fill_cluster(index: u64, buffer: &mut [u8]) {
    let mut state = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for chunk in buffer.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
}

fn qemu_img(args: &[&str]) -> Output {
    Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img runs (Debian package qemu-utils, listed in scripts/apt/vdisk.txt)")
}

fn qemu_img_ok(args: &[&str]) -> String {
    let out = qemu_img(args);
    assert!(
        out.status.success(),
        "qemu-img {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes the qcow2 and a sparse raw file of the same disk into `dir`.
fn write_both(dir: &Path, plan: &Qcow2Plan) -> (String, String) {
    let qcow2 = dir.join("disk.qcow2");
    let raw = dir.join("disk.raw");
    let mut out = BufWriter::new(File::create(&qcow2).unwrap());
    let mut calls = Vec::new();
    write_qcow2(plan, &mut out, |index, buffer| {
        calls.push(index);
        fill_cluster(index, buffer);
        Ok(())
    })
    .unwrap();
    out.flush().unwrap();
    drop(out);
    assert_eq!(calls, plan.allocated_clusters().collect::<Vec<_>>());
    assert_eq!(std::fs::metadata(&qcow2).unwrap().len(), plan.total_len());

    let raw_file = File::create(&raw).unwrap();
    raw_file.set_len(plan.virtual_size()).unwrap();
    let mut buffer = vec![0; plan.cluster_size() as usize];
    for index in plan.allocated_clusters() {
        let data = &mut buffer[..plan.cluster_len(index) as usize];
        fill_cluster(index, data);
        raw_file
            .write_all_at(data, index * plan.cluster_size())
            .unwrap();
    }
    (
        qcow2.to_str().unwrap().to_owned(),
        raw.to_str().unwrap().to_owned(),
    )
}

/// Writes the disk and has qemu-img judge it.
fn check_shape(virtual_size: u64, cluster_bits: u32, clusters: &[u64]) -> Qcow2Plan {
    let plan = Qcow2Plan::new(virtual_size, cluster_bits, clusters.iter().copied()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (qcow2, raw) = write_both(dir.path(), &plan);

    let report = qemu_img_ok(&["check", "-f", "qcow2", &qcow2]);
    assert!(report.contains("No errors were found"), "{report}");

    let info: Value = serde_json::from_str(&qemu_img_ok(&[
        "info",
        "--output=json",
        "-f",
        "qcow2",
        &qcow2,
    ]))
    .unwrap();
    assert_eq!(info["virtual-size"], virtual_size, "{info}");
    assert_eq!(info["cluster-size"], 1u64 << cluster_bits, "{info}");
    assert_eq!(info["format-specific"]["data"]["compat"], "1.1", "{info}");
    assert_eq!(
        info["format-specific"]["data"]["refcount-bits"], 16,
        "{info}"
    );
    assert_eq!(info["format-specific"]["data"]["corrupt"], false, "{info}");
    assert_eq!(info["dirty-flag"], false, "{info}");

    let compared = qemu_img(&["compare", "-f", "qcow2", "-F", "raw", &qcow2, &raw]);
    assert_eq!(
        compared.status.code(),
        Some(0),
        "compare: {}{}",
        String::from_utf8_lossy(&compared.stdout),
        String::from_utf8_lossy(&compared.stderr)
    );

    let map: Value = serde_json::from_str(&qemu_img_ok(&[
        "map",
        "--output=json",
        "-f",
        "qcow2",
        &qcow2,
    ]))
    .unwrap();
    assert_eq!(mapped_clusters(&map, &plan), expected_clusters(&plan));
    plan
}

/// (guest cluster, bytes inside the disk, host offset) of every cluster `map` says holds data.
fn mapped_clusters(map: &Value, plan: &Qcow2Plan) -> Vec<(u64, u64, u64)> {
    let size = plan.cluster_size();
    let mut found = Vec::new();
    for extent in map.as_array().unwrap() {
        if extent["data"] != true {
            continue;
        }
        let start = extent["start"].as_u64().unwrap();
        let length = extent["length"].as_u64().unwrap();
        let offset = extent["offset"].as_u64().unwrap();
        assert_eq!(start % size, 0, "{extent}");
        let mut at = 0;
        while at < length {
            let len = (length - at).min(size);
            found.push(((start + at) / size, len, offset + at));
            at += size;
        }
    }
    found
}

fn expected_clusters(plan: &Qcow2Plan) -> Vec<(u64, u64, u64)> {
    plan.allocated_clusters()
        .zip(0..)
        .map(|(index, rank)| {
            (
                index,
                plan.cluster_len(index),
                plan.data_offset() + rank * plan.cluster_size(),
            )
        })
        .collect()
}

/// `count` distinct cluster indexes below `clusters`, spread by a fixed-seed generator.
fn scattered(count: usize, clusters: u64, seed: u64) -> Vec<u64> {
    let mut state = seed;
    let mut set = BTreeSet::new();
    while set.len() < count {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        set.insert((state >> 11) % clusters);
    }
    set.into_iter().collect()
}

/// Refcount blocks the file's refcount table points to (read back from the file).
fn refcount_blocks_in_file(plan: &Qcow2Plan) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let (qcow2, _) = write_both(dir.path(), plan);
    let mut file = File::open(qcow2).unwrap();
    let mut header = [0; 64];
    file.read_exact(&mut header).unwrap();
    let table_offset = u64::from_be_bytes(header[48..56].try_into().unwrap());
    let table_clusters = u32::from_be_bytes(header[56..60].try_into().unwrap());
    let mut table = vec![0; table_clusters as usize * plan.cluster_size() as usize];
    file.seek(SeekFrom::Start(table_offset)).unwrap();
    file.read_exact(&mut table).unwrap();
    table
        .chunks(8)
        .filter(|e| e.iter().any(|&b| b != 0))
        .count()
}

#[test]
fn zero_size_disk() {
    check_shape(0, 16, &[]);
}

#[test]
fn disk_without_data() {
    check_shape(GIB, 16, &[]);
}

#[test]
fn one_cluster() {
    check_shape(10 << 20, 16, &[7]);
}

#[test]
fn first_and_last_cluster() {
    check_shape(GIB, 16, &[0, GIB / 65536 - 1]);
}

#[test]
fn scattered_clusters() {
    check_shape(4 * GIB, 16, &scattered(300, 4 * GIB / 65536, 1));
}

#[test]
fn size_not_a_multiple_of_the_cluster_size() {
    // 10 MiB + 1536 bytes: cluster 160 holds only 1536 bytes of the disk.
    check_shape((10 << 20) + 1536, 16, &[0, 1, 2, 100, 159, 160]);
}

#[test]
fn sparse_20_gib_with_many_l2_tables_and_refcount_blocks() {
    // 4 KiB clusters: an L2 table maps 2 MiB and a refcount block counts 2048 clusters,
    // so 1200 clusters in mostly distinct L2 tables need two refcount blocks (~10 MB file).
    let cluster_bits = 12;
    let clusters = scattered(1200, (20 * GIB) >> cluster_bits, 2);
    let plan = check_shape(20 * GIB, cluster_bits, &clusters);
    assert!(
        refcount_blocks_in_file(&plan) >= 2,
        "{}",
        refcount_blocks_in_file(&plan)
    );
}

#[test]
fn sparse_20_gib_default_clusters() {
    let clusters = scattered(200, 20 * GIB / 65536, 3);
    let l2_tables: BTreeSet<u64> = clusters.iter().map(|c| c / 8192).collect();
    assert!(l2_tables.len() > 30);
    check_shape(20 * GIB, 16, &clusters);
}

#[test]
fn fully_allocated_with_multi_cluster_tables() {
    // 512-byte clusters: the L1 table takes 8 clusters and the refcount table 3.
    let clusters: Vec<u64> = (0..(16u64 << 20) / 512).collect();
    let plan = check_shape(16 << 20, 9, &clusters);
    assert!(refcount_blocks_in_file(&plan) > 64);
}

#[test]
fn two_mib_clusters() {
    check_shape(100 << 20, 21, &[0, 3, 49]);
}

#[test]
fn two_tib_sparse() {
    let last = (2u64 << 40) / 65536 - 1;
    check_shape(2 << 40, 16, &[0, 1, last / 2, last]);
}

#[test]
fn compare_notices_a_changed_byte() {
    // The judge of the other tests can fail: one byte off in the raw file is reported.
    let plan = Qcow2Plan::new(GIB, 16, [3, 4]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (qcow2, raw) = write_both(dir.path(), &plan);
    let raw_file = File::options().write(true).open(&raw).unwrap();
    raw_file.write_all_at(&[0x5a], 4 * 65536 + 1000).unwrap();
    let compared = qemu_img(&["compare", "-f", "qcow2", "-F", "raw", &qcow2, &raw]);
    assert_eq!(compared.status.code(), Some(1));
}
