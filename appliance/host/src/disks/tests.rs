use std::path::Path;

use super::*;

/// A container-like table: the root disk, its bind mounts, pseudo file systems, a data
/// disk, a USB stick with a space in its mount point, and an over-mounted directory.
const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334524k
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
60 27 254:0 /var/lib/docker/containers/abc/hosts /etc/hosts rw - ext4 /dev/vda rw
61 27 0:50 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw,lowerdir=a
70 27 8:1 / /srv/abri rw,noatime shared:7 - xfs /dev/sda1 rw
71 70 8:1 /snap /srv/abri/snap rw - xfs /dev/sda1 rw
80 27 8:17 / /media/usb\\040key rw - vfat /dev/sdb1 rw
90 70 0:60 / /srv/abri/tmp rw - tmpfs tmpfs rw
";

#[test]
fn keeps_one_entry_per_disk_sorted_by_mount_point() {
    let entries = parse_mountinfo(SAMPLE);
    let chosen: Vec<(&str, &str, &str)> = disk_mounts(&entries)
        .iter()
        .map(|e| {
            (
                e.mount_point.as_str(),
                e.source.as_str(),
                e.fs_type.as_str(),
            )
        })
        .collect();
    assert_eq!(
        chosen,
        [
            ("/", "/dev/vda", "ext4"),
            ("/media/usb key", "/dev/sdb1", "vfat"),
            ("/srv/abri", "/dev/sda1", "xfs"),
        ]
    );
}

#[test]
fn the_root_directory_mount_wins_over_an_earlier_bind_mount() {
    let text = "\
60 1 254:0 /var/lib/x/hosts /etc/hosts rw - ext4 /dev/vda rw
27 1 254:0 / /stateful rw - ext4 /dev/vda rw
28 1 254:0 / / rw - ext4 /dev/vda rw
";
    let entries = parse_mountinfo(text);
    let chosen = disk_mounts(&entries);
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0].mount_point, "/");
}

#[test]
fn finds_the_mount_holding_a_path() {
    let entries = parse_mountinfo(SAMPLE);
    let holding = |p: &str| mount_holding(&entries, Path::new(p)).map(|e| e.mount_point.clone());
    assert_eq!(
        holding("/srv/abri/db/data.mdb").as_deref(),
        Some("/srv/abri")
    );
    assert_eq!(holding("/srv/abri/tmp/x").as_deref(), Some("/srv/abri/tmp"));
    assert_eq!(
        holding("/srv/abrix").as_deref(),
        Some("/"),
        "prefix is by component"
    );
    assert_eq!(
        holding("/media/usb key/a").as_deref(),
        Some("/media/usb key")
    );
    assert_eq!(holding("/").as_deref(), Some("/"));
}

#[test]
fn a_later_mount_on_the_same_point_hides_the_earlier() {
    let text = "\
27 1 254:0 / / rw - ext4 /dev/vda rw
70 27 8:1 / /data rw - xfs /dev/sda1 rw
71 70 0:60 / /data rw - tmpfs tmpfs rw
";
    let entries = parse_mountinfo(text);
    let found = mount_holding(&entries, Path::new("/data/x")).unwrap();
    assert_eq!(found.fs_type, "tmpfs");
}

#[test]
fn measures_a_real_directory() {
    let dir = tempfile::tempdir().unwrap();
    let usage = usage_of(dir.path()).unwrap();
    assert!(usage.total_bytes > 0);
    assert!(usage.free_bytes <= usage.total_bytes);
    assert!(dir.path().canonicalize().unwrap().starts_with(&usage.mount));
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let err = usage_of(Path::new("/nonexistent/abri-test")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/abri-test"), "{err}");
}

#[test]
fn lists_this_machine_and_includes_a_given_path() {
    let all = disks();
    assert!(all.iter().all(|d| d.free_bytes <= d.total_bytes));
    let dir = tempfile::tempdir().unwrap();
    let with = disks_including(dir.path());
    let holder = usage_of(dir.path()).unwrap();
    assert!(with.iter().any(|d| d.mount == holder.mount));
}

#[test]
fn serializes_with_the_api_field_names() {
    let usage = DiskUsage {
        mount: "/".into(),
        device: "/dev/vda".into(),
        fs_type: "ext4".into(),
        total_bytes: 10,
        free_bytes: 4,
    };
    let json = serde_json::to_value(&usage).unwrap();
    assert_eq!(json["mount"], "/");
    assert_eq!(json["total_bytes"], 10);
    assert_eq!(json["free_bytes"], 4);
}
