"""Helpers of the image-mode system tests: disk images made with Debian's tools, an
enrolled agent whose image plan points at them, and byte-exact comparisons."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from filemode_support import Agent, FileModeEnv, edit_plan, kill_group  # noqa: F401

KiB = 1024
MiB = 1024 * KiB
CHUNK = 64 * KiB


def need(tool: str) -> str:
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not path:
        pytest.fail(f"{tool} is missing: run ./scripts/install-test-deps.sh")
    return path


def sh(*argv, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 120)
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{' '.join(map(str, argv))}: {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def make_tree(root: Path, seed: int, files: int = 60) -> None:
    """A small tree of text-like and random files."""
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"dir{i % 7}" / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        if i % 2:
            data = ("line %d of file %d\n" % (i, i) * rng.randint(50, 4000)).encode()
        else:
            data = rng.randbytes(rng.randint(1, 400) * KiB)
        (d / f"file{i}.bin").write_bytes(data)
    (root / "notes.txt").write_text("hello from an image\n")


def make_ext4(path: Path, tree: Path, size_mib: int, label: str = "data") -> None:
    need("mke2fs")
    if path.exists():
        path.unlink()
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-L", label, "-d", tree, path, f"{size_mib}M")


def make_raw_disk(path: Path, seed: int) -> None:
    """A 64 MiB sparse raw disk that holds no file system: two random data regions, an
    explicitly written zero region, holes elsewhere."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        for start, length in ((0, 8 * MiB), (20 * MiB, 8 * MiB)):
            f.seek(start)
            f.write(rng.randbytes(length))
        f.seek(40 * MiB)
        f.write(bytes(1 * MiB))


def scatter_writes(path: Path, count: int, seed: int, block: int = 4 * KiB,
                   start: int = 0, end: int | None = None) -> list[int]:
    """Overwrites `count` random `block`-sized blocks in place with random bytes; returns
    their offsets."""
    rng = random.Random(seed)
    size = path.stat().st_size if end is None else end
    offsets = sorted({rng.randrange(start // block, size // block) * block for _ in range(count)})
    with open(path, "r+b") as f:
        for off in offsets:
            f.seek(off)
            f.write(rng.randbytes(block))
    return offsets


def chunks_touched(offsets: list[int], block: int) -> int:
    touched = set()
    for off in offsets:
        touched.update(range(off // CHUNK, (off + block - 1) // CHUNK + 1))
    return len(touched)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(4 * MiB):
            h.update(b)
    return h.hexdigest()


def allocated_bytes(path: Path) -> int:
    return os.stat(path).st_blocks * 512


class ImageEnv(FileModeEnv):
    """A file-mode environment whose image plan is un-paused and points at test images."""

    def image_plan(self, *selections, **changes) -> dict:
        return edit_plan(self.api, "image", enabled=True,
                         selections=[str(s) for s in selections], **changes)


def image_backup(agent: Agent, *extra: str) -> dict:
    report = agent.backup("--plan", "image", *extra)
    assert report["snapshot"]["kind"] == "image", report
    return report


def restore_image(agent: Agent, snapshot: str, to: Path, *extra: str,
                  check: bool = True) -> subprocess.CompletedProcess:
    return agent.run("restore-image", snapshot, "--to", str(to), *extra, check=check)


@pytest.fixture
def im(active_box, tmp_path, request):
    env = ImageEnv(active_box, tmp_path)
    yield env
    for p in env.procs:
        kill_group(p)
    for a in env.agents:
        a.stop_service()


class QemuNbd:
    """`qemu-nbd` serving one disk file read-only on a Unix socket, as a hypervisor would."""

    def __init__(self, disk: Path, sock: Path, export: str = "vm1", fmt: str = "qcow2",
                 bitmap: str | None = None):
        need("qemu-nbd")
        self.sock = sock
        self.export = export
        argv = ["qemu-nbd", "--socket", str(sock), "--export-name", export, "--format", fmt,
                "--read-only", "--persistent", "--shared", "4"]
        if bitmap:
            argv += ["--bitmap", bitmap]
        argv.append(str(disk))
        if sock.exists():
            sock.unlink()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        for _ in range(200):
            if sock.exists():
                break
            if self.proc.poll() is not None:
                raise AssertionError(f"qemu-nbd exited: {self.proc.stderr.read()!r}")
            time.sleep(0.05)
        else:
            raise AssertionError("qemu-nbd did not create its socket")

    def uri(self, bitmap: str | None = None) -> str:
        u = f"nbd+unix:///{self.export}?socket={self.sock}"
        return u + (f"&bitmap={bitmap}" if bitmap else "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def qemu_io(disk: Path, *commands: str, fmt: str = "qcow2") -> None:
    argv = ["qemu-io", "-f", fmt]
    for c in commands:
        argv += ["-c", c]
    sh(*argv, disk)


def qemu_compare(a: Path, b: Path) -> None:
    sh("qemu-img", "compare", a, b)
