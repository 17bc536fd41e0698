"""Image-mode backups end to end on loopback: a real abri-agent images a raw disk file that
holds no file system (so every allocated byte is kept), restores it with `restore-image`,
and the bytes are compared. Incremental runs send only the changed chunks; an image file
that has not changed is not read at all."""

from __future__ import annotations

import os

import pytest

from filemode_support import verify_store
from imagemode_support import (CHUNK, KiB, MiB, allocated_bytes, chunks_touched, im,  # noqa: F401
                               image_backup, make_raw_disk, restore_image, scatter_writes,
                               sh, sha256)


def test_raw_image_file_round_trip_and_incremental(im):
    disk = im.tmp / "disk.img"
    make_raw_disk(disk, seed=1)
    im.image_plan(disk)
    agent = im.agent()

    first = image_backup(agent)
    snap1 = first["snapshot"]
    assert [i["name"] for i in snap1["images"]] == ["disk.img"], snap1
    info = snap1["images"][0]
    assert info["size"] == disk.stat().st_size and info["chunk_size"] == CHUNK, info
    # holes and the zero region are neither read as data nor sent
    assert 16 * MiB <= first["stats"]["new_bytes"] < 16 * MiB + 256 * KiB, first["stats"]  # + catalog
    assert info["read"] == "allocated", info
    original = sha256(disk)

    out = im.tmp / "restored.img"
    p = restore_image(agent, snap1["id"], out)
    assert p.data["report"]["chunks"] > 0, p.stdout
    assert sha256(out) == original, "the restored image differs from the source"
    assert allocated_bytes(out) < disk.stat().st_size / 2, "holes are restored sparse"

    # an existing file is not replaced without --overwrite, and nothing changes
    before = sha256(out)
    p = restore_image(agent, snap1["id"], out, check=False)
    assert p.returncode != 0 and "--overwrite" in (p.stdout + p.stderr), p.stdout + p.stderr
    assert sha256(out) == before

    # scattered 4 KiB writes (in data and in holes): only the touched chunks travel
    offsets = scatter_writes(disk, 40, seed=2, start=1 * MiB, end=30 * MiB)
    touched = chunks_touched(offsets, 4 * KiB)
    second = image_backup(agent)
    s2 = second["stats"]
    assert s2["new_chunks"] <= touched + 2, (s2, touched)  # + catalog chunks
    assert s2["new_chunks"] >= touched, (s2, touched)
    changed = sha256(disk)

    # the newest and the older snapshot both restore exactly
    restore_image(agent, second["snapshot"]["id"], out, "--overwrite")
    assert sha256(out) == changed
    restore_image(agent, snap1["id"], out, "--overwrite")
    assert sha256(out) == original

    # an unchanged re-run reads nothing (same size, times and inode) and sends only the
    # catalog; the snapshot restores exactly
    third = image_backup(agent)
    assert third["stats"]["new_chunks"] <= 2, third["stats"]
    assert third["snapshot"]["images"][0]["read"] == "unchanged-file", third["snapshot"]
    assert third["bytes_read"] == 0, third
    restore_image(agent, third["snapshot"]["id"], out, "--overwrite")
    assert sha256(out) == changed

    # a change that puts the modification time back still changes the change time: the
    # file is read again and the change travels
    st = disk.stat()
    offsets = scatter_writes(disk, 3, seed=3, start=1 * MiB, end=30 * MiB)
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns))
    fourth = image_backup(agent)
    assert fourth["snapshot"]["images"][0]["read"] == "allocated", fourth["snapshot"]
    assert fourth["stats"]["new_chunks"] >= chunks_touched(offsets, 4 * KiB), fourth["stats"]
    restore_image(agent, fourth["snapshot"]["id"], out, "--overwrite")
    assert sha256(out) == sha256(disk)

    # a full re-read reads the unchanged file anyway
    fifth = image_backup(agent, "--full")
    assert fifth["snapshot"]["images"][0]["read"] == "allocated", fifth["snapshot"]
    assert fifth["bytes_read"] > 0 and fifth["stats"]["new_chunks"] <= 2, fifth
    verify_store(im.box)


def test_a_file_target_without_room_is_refused_before_data_is_written(im):
    """The restore allocates each segment's data ranges before it fetches their chunks, so
    a file system too small for the image's data fails at once, with a clear message."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = im.tmp / "disk.img"
    make_raw_disk(disk, seed=4)
    im.image_plan(disk)
    agent = im.agent()
    snap = image_backup(agent)["snapshot"]

    small = im.tmp / "small"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", small)
    try:
        target = small / "disk.img"
        p = restore_image(agent, snap["id"], target, check=False)
        said = p.stdout + p.stderr
        assert p.returncode != 0 and "no room" in said, said
        with open(target, "rb") as f:
            assert not any(f.read()), "no chunk data was written"
    finally:
        sh("umount", small)
