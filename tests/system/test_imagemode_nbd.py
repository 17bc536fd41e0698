"""VM disks over NBD: a qcow2 served by a real qemu-nbd is imaged through the agent's
userspace NBD client, restored and checked with `qemu-img compare`. With a persistent
dirty bitmap exported by qemu-nbd, the next backup reads only the changed blocks."""

from __future__ import annotations

from imagemode_support import (CHUNK, KiB, MiB, QemuNbd, im, image_backup,  # noqa: F401
                               make_raw_disk, qemu_compare, qemu_io, restore_image, sh)


def test_qcow2_over_nbd_with_and_without_dirty_bitmap(im):
    # a disk without a file system Abri reads, so every allocated byte is kept and the
    # restores can be compared byte for byte (file systems: test_imagemode_layout.py)
    raw = im.tmp / "seed.img"
    make_raw_disk(raw, seed=5)
    sh("truncate", "-s", "48M", raw)
    vm = im.tmp / "vm.qcow2"
    sh("qemu-img", "convert", "-O", "qcow2", raw, vm)
    # unallocated space at the end of the virtual disk: never read, never sent
    sh("qemu-img", "resize", vm, "80M")
    sock = im.tmp / "vm.sock"
    agent = im.agent()

    with QemuNbd(vm, sock) as nbd:
        im.image_plan(nbd.uri())
        first = image_backup(agent)
    info = first["snapshot"]["images"][0]
    assert info["name"] == "vm1" and info["size"] == 80 * MiB, info
    assert "allocated" in info["read"], info
    assert first["bytes_read"] < 48 * MiB, first

    out = im.tmp / "restored.raw"
    restore_image(agent, first["snapshot"]["id"], out)
    qemu_compare(out, vm)

    # the hypervisor starts tracking writes after the backup, then the guest writes
    sh("qemu-img", "bitmap", "--add", "--enable", vm, "bm0")
    qemu_io(vm, "write -P 0xab 5M 64k", "write -P 0xcd 20M 4k", "write -P 0x11 70M 128k")
    with QemuNbd(vm, sock, bitmap="bm0") as nbd:
        im.image_plan(nbd.uri("bm0"))
        second = image_backup(agent)
    info2 = second["snapshot"]["images"][0]
    assert "changed-blocks" in info2["read"], info2
    # only the dirty granules were read (64 KiB + 64 KiB + 128 KiB at the bitmap's
    # 64 KiB granularity), and only their chunks travelled
    assert second["bytes_read"] <= 256 * KiB, second
    assert 4 <= second["stats"]["new_chunks"] <= 4 + 2, second["stats"]

    restore_image(agent, second["snapshot"]["id"], out, "--overwrite")
    qemu_compare(out, vm)
    # the older snapshot still restores to the disk as it was
    restore_image(agent, first["snapshot"]["id"], out, "--overwrite")
    old = im.tmp / "old.raw"
    sh("qemu-img", "convert", "-O", "raw", raw, old)
    sh("truncate", "-s", "80M", old)
    qemu_compare(out, old)
