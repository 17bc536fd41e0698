//! NTFS images made by mkntfs and filled through ntfs-3g: browsing and used clusters.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use abri_fsread::{EntryKind, FsKind, detect, open_fs, used_ranges};
use common::*;

/// An ntfs-3g FUSE mount run in the foreground, so that unmounting can wait for it to
/// finish writing.
struct Mount {
    child: Option<Child>,
    dir: PathBuf,
}

fn is_mounted(dir: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let dir = dir.to_string_lossy().replace(' ', "\\040");
    mounts
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir.as_str()))
}

fn mount(image: &Path, dir: &Path, read_only: bool) -> Result<Mount, String> {
    fs::create_dir_all(dir).unwrap();
    let options = if read_only {
        "no_detach,ro"
    } else {
        "no_detach"
    };
    let mut child = Command::new("ntfs-3g")
        .args(["-o", options])
        .arg(image)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ntfs-3g: {e}"))?;
    for _ in 0..200 {
        if is_mounted(dir) {
            return Ok(Mount {
                child: Some(child),
                dir: dir.to_path_buf(),
            });
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            return Err(format!("ntfs-3g exited with {status}: {err}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    Err("ntfs-3g did not mount within 10 s".into())
}

impl Mount {
    fn unmount(mut self) {
        run(Command::new("umount").arg(&self.dir));
        let mut child = self.child.take().unwrap();
        for _ in 0..600 {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "ntfs-3g ended with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("ntfs-3g did not exit within 30 s of the unmount");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// NTFS link targets use Windows separators; the host shows them with `/`.
fn with_slashes(
    tree: std::collections::BTreeMap<String, Node>,
) -> std::collections::BTreeMap<String, Node> {
    tree.into_iter()
        .map(|(path, node)| match node {
            Node::Link(t) => (
                path,
                Node::Link(
                    t.iter()
                        .map(|&b| if b == b'\\' { b'/' } else { b })
                        .collect(),
                ),
            ),
            other => (path, other),
        })
        .collect()
}

#[test]
fn ntfs_image_reads_back_and_survives_zeroing_its_unused_clusters() {
    let test = "ntfs_image_reads_back_and_survives_zeroing_its_unused_clusters";
    if tool("mkntfs", test).is_none()
        || tool("ntfs-3g", test).is_none()
        || tool("ntfsfix", test).is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ntfs.img");
    fs::File::create(&image).unwrap().set_len(64 << 20).unwrap();
    run(Command::new("mkntfs")
        .args(["-F", "-Q", "-q", "-L", "abri-test"])
        .arg(&image));
    let mnt = dir.path().join("mnt");
    let mounted = match mount(&image, &mnt, false) {
        Ok(m) => m,
        Err(why) => {
            eprintln!(
                "SKIP {test}: ntfs-3g cannot mount here (FUSE needs /dev/fuse and root): {why}"
            );
            return;
        }
    };
    make_tree(&mnt, true);
    let expected = walk_host(&mnt);
    mounted.unmount();

    let src = open_file(&image);
    assert_eq!(detect(&*src), Some(FsKind::Ntfs));
    let fs = open_fs(src.clone()).unwrap();
    assert_same_tree(&expected, &with_slashes(walk_image(&*fs, &[])));
    let root: Vec<String> = fs
        .list_dir(b"/")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(
        !root.iter().any(|n| n.starts_with('$')),
        "metadata files listed: {root:?}"
    );
    assert!(matches!(
        fs.stat(b"/$MFT"),
        Err(abri_fsread::Error::NotFound { .. })
    ));
    // Windows looks names up case-insensitively, and so does this reader.
    assert_eq!(
        fs.stat(b"/DIR/Nested/DEEPER/FILE.TXT").unwrap().name,
        "file.txt"
    );
    let link = fs.stat(b"/short-link").unwrap();
    assert_eq!(link.kind, EntryKind::Symlink);
    let file = fs.stat(b"/large.bin").unwrap();
    assert!(file.mtime_ns.is_some() && file.btime_ns.is_some() && file.ntfs_attributes.is_some());
    let mut buf = vec![0xAAu8; 8192];
    assert_eq!(
        fs.read_at(b"/sparse.bin", (5 << 20) - 4096, &mut buf)
            .unwrap(),
        8192
    );
    assert!(buf[..4096].iter().all(|&b| b == 0));
    assert_eq!(&buf[4096..], &noise(4, 8192)[..4096]);

    let ranges = used_ranges(&*src)
        .unwrap()
        .expect("NTFS is a known file system");
    assert_well_formed(&ranges);
    let zeroed = dir.path().join("zeroed.img");
    let used = copy_only_ranges(&image, &zeroed, &ranges);
    let total = fs::metadata(&image).unwrap().len();
    assert!(used < total / 2, "{used} of {total} bytes used");
    let check = run(Command::new("ntfsfix").arg("-n").arg(&zeroed));
    assert!(
        !check.contains("FAILED") && !check.contains("corrupt"),
        "ntfsfix -n:\n{check}"
    );
    let fs = open_fs(open_file(&zeroed)).unwrap();
    assert_same_tree(&expected, &with_slashes(walk_image(&*fs, &[])));
    // The real driver reads the zeroed copy the same.
    let mnt2 = dir.path().join("mnt2");
    let copy = mount(&zeroed, &mnt2, true).expect("the zeroed copy mounts");
    assert_same_tree(&expected, &walk_host(&mnt2));
    copy.unmount();
    eprintln!("NTFS: {used} of {total} bytes used, zeroed copy checks clean");

    // Deleting the large file frees its clusters.
    let mounted = mount(&image, &mnt, false).unwrap();
    fs::remove_file(mnt.join("large.bin")).unwrap();
    mounted.unmount();
    let after: u64 = used_ranges(&*open_file(&image))
        .unwrap()
        .unwrap()
        .iter()
        .map(|r| r.end - r.start)
        .sum();
    assert!(
        after + (3 << 20) <= used,
        "deleting 3 MiB took the used set from {used} to {after} bytes"
    );
}
