"""Block devices: a loop device is imaged and restored to another loop device; a mounted
or too-small target is refused and left untouched. An LVM logical volume is imaged
through a snapshot the agent creates and removes, where the kernel has device-mapper
(skipped with the reason otherwise)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from imagemode_support import (MiB, im, image_backup, make_ext4, make_tree,  # noqa: F401
                               restore_image, sh, sha256)


class Loop:
    def __init__(self, backing: Path):
        if os.geteuid() != 0:
            pytest.skip("loop devices need root")
        p = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                           text=True, timeout=30)
        if p.returncode != 0:
            pytest.skip(f"no loop device here: {p.stderr.strip()}")
        self.dev = Path(p.stdout.strip())

    def close(self):
        subprocess.run(["losetup", "-d", str(self.dev)], timeout=30)


@pytest.fixture
def loops():
    made = []

    def make(backing: Path) -> Path:
        lo = Loop(backing)
        made.append(lo)
        return lo.dev
    yield make
    for lo in made:
        subprocess.run(["umount", str(lo.dev)], capture_output=True, timeout=30)
        lo.close()


def test_loop_device_round_trip_and_target_checks(im, loops):
    tree = im.tmp / "tree"
    make_tree(tree, seed=11)
    src_file = im.tmp / "src.img"
    make_ext4(src_file, tree, 32)
    src = loops(src_file)
    im.image_plan(src)
    agent = im.agent()
    report = image_backup(agent)
    sid = report["snapshot"]["id"]
    info = report["snapshot"]["images"][0]
    assert info["name"] == src.name and info["size"] == 32 * MiB, info

    # a target that is too small is refused and untouched
    small_file = im.tmp / "small.img"
    sh("truncate", "-s", "16M", small_file)
    small = loops(small_file)
    p = restore_image(agent, sid, small, check=False)
    assert p.returncode != 0 and "needs" in p.stdout + p.stderr, p.stdout + p.stderr
    assert small_file.stat().st_blocks == 0, "nothing was written"

    # a mounted target is refused and untouched
    busy_file = im.tmp / "busy.img"
    make_ext4(busy_file, tree, 40, label="busy")
    busy = loops(busy_file)
    mnt = im.tmp / "mnt"
    mnt.mkdir()
    sh("mount", busy, mnt)
    try:
        p = restore_image(agent, sid, busy, check=False)
        assert p.returncode != 0 and "mounted" in p.stdout + p.stderr, p.stdout + p.stderr
    finally:
        sh("umount", mnt)
    # (mounting itself updates the superblock: the file system, not the bytes, is checked)
    sh("e2fsck", "-fn", busy_file)
    assert sh("debugfs", "-R", "stat /", busy_file).stdout and \
        sh("e2label", busy_file).stdout.strip() == "busy"

    # a free device of the right size gets the exact bytes, old data included in holes
    dst_file = im.tmp / "dst.img"
    with open(dst_file, "wb") as f:
        f.write(os.urandom(32 * MiB))
    dst = loops(dst_file)
    restore_image(agent, sid, dst)
    assert sha256(dst_file) == sha256(src_file)
    sh("e2fsck", "-fn", dst)


def test_lvm_volume_through_a_snapshot(im, loops):
    if subprocess.run(["which", "lvcreate"], capture_output=True).returncode != 0:
        pytest.skip("LVM tools are missing (lvm2)")
    if not Path("/sys/module/dm_mod").exists():
        pytest.skip("the kernel has no device-mapper: LVM cannot run here")
    pv_file = im.tmp / "pv.img"
    sh("truncate", "-s", "128M", pv_file)
    pv = loops(pv_file)
    vg = f"abrit{os.getpid()}"
    sh("pvcreate", "-q", pv)
    sh("vgcreate", "-q", vg, pv)
    try:
        sh("lvcreate", "-q", "-y", "-L", "48M", "-n", "data", vg)
        lv = Path(f"/dev/{vg}/data")
        tree = im.tmp / "tree"
        make_tree(tree, seed=12)
        sh("mke2fs", "-q", "-F", "-t", "ext4", "-d", tree, lv)
        im.image_plan(lv)
        agent = im.agent()
        report = image_backup(agent)
        # the snapshot was made and removed again
        lvs = sh("lvs", "--noheadings", "-o", "lv_name", vg).stdout.split()
        assert lvs == ["data"], lvs
        out = im.tmp / "lv.img"
        restore_image(agent, report["snapshot"]["id"], out)
        sh("e2fsck", "-fn", out)
        got = sh("debugfs", "-R", "cat /notes.txt", out).stdout
        assert got == (tree / "notes.txt").read_text()
    finally:
        subprocess.run(["vgremove", "-q", "-f", vg], capture_output=True, timeout=60)
        subprocess.run(["pvremove", "-q", "-f", str(pv)], capture_output=True, timeout=60)
