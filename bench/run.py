#!/usr/bin/env python3
"""`make bench`: Abri (abri-agent -> abrid over HTTPS on loopback) against restic and borg on
the same real data, on the same machine, in one run. Not a test: it measures and reports.

File scenario, for every tool, on the same tree (a sample of /usr):
  1. first backup          (data as gathered)
  2. unchanged re-run      (same data)
  3. re-run after change   (~1 % of the files rewritten in part, added, removed; seeded)
  4. full restore          (latest snapshot into an empty directory, then verified)

Image scenario, for every tool, on the same ext4 image file (mke2fs -d from a sample of
/usr, then files removed inside it so it has free, non-zero blocks):
  1. first backup, 2. unchanged re-run,
  3. re-run after ~1 % of the blocks rewritten in place as 64 KiB runs,
  4. re-run after ~1 % rewritten as scattered 4 KiB blocks,
  5. restore (verified: restic's and borg's byte for byte; Abri's with e2fsck and block by
     block, free blocks excepted: Abri does not keep them);
  then, Abri only, the image as a qcow2 behind qemu-nbd: a first backup of the export and a
  re-run with a persistent dirty bitmap (only the marked blocks are read).

Measured per step: wall time, throughput (data size / wall), CPU time (user+sys) and peak RSS
of the client process (abri-agent / restic / borg, through /usr/bin/time), for Abri also the
box's CPU time and peak RSS (VmHWM of abrid, reset before each step through
/proc/PID/clear_refs), and the repository size (and, for images, its growth) after each
backup.

Python 3 standard library only. See bench/README.md; results go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import hashlib
import http.cookiejar
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# cargo puts release binaries under $CARGO_TARGET_DIR (relative to the workspace) when set.
RELEASE = (ROOT / os.environ.get("CARGO_TARGET_DIR", "target")) / "release"
ABRID = RELEASE / "abrid"
AGENT = RELEASE / "abri-agent"
PROVISION = RELEASE / "abri-provision"
TIME = "/usr/bin/time"
MIB = 1024 * 1024
GIB = 1024 * MIB
STEPS = [
    ("first", "first backup"),
    ("unchanged", "unchanged re-run"),
    ("changed", "re-run after change"),
    ("restore", "full restore"),
]
STEP_NAME = dict(STEPS)
RESTIC_PASSWORD = "abri-bench-restic"
BORG_PASSPHRASE = "abri-bench-borg"
BOX_RSS_TARGET = 256 * MIB


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class BenchError(Exception):
    pass


# --- child processes: every one is tracked and ended at exit, whatever happens ---------------

LIVE: set[subprocess.Popen] = set()


def end_process(p: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the process group we created for it (it has its own session), then
    SIGKILL. Only processes this script started are ever signalled."""
    if p.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                break
            try:
                p.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
    LIVE.discard(p)


def end_all() -> None:
    for p in list(LIVE):
        end_process(p)


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_quiet(argv, **kw) -> subprocess.CompletedProcess:
    """A setup command (not measured); fails loudly with its output."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run(argv, **kw)
    if p.returncode != 0:
        raise BenchError(f"{' '.join(map(str, argv))} exited with {p.returncode}:\n"
                         f"{p.stdout}\n{p.stderr}")
    return p


# --- measurement -----------------------------------------------------------------------------

@dataclass
class Measure:
    wall: float = 0.0
    user: float = 0.0
    sys: float = 0.0
    rss: int = 0  # bytes, peak RSS of the client process
    box_cpu: float | None = None
    box_rss: int | None = None
    box_rss_exact: bool = True  # False: VmHWM could not be reset, it is the max so far
    repo_alloc: int | None = None
    repo_apparent: int | None = None
    load: str = ""
    data_bytes: int = 0
    ok: bool = True
    note: str = ""
    stdout: str = ""
    report: dict | None = None  # abri-agent's --json output, parsed
    growth_alloc: int | None = None  # repository growth over the previous backup step
    growth_apparent: int | None = None
    written: int | None = None  # bytes the change before this step wrote

    @property
    def cpu(self) -> float:
        return self.user + self.sys


def run_measured(name: str, argv: list[str], logs: Path, env=None, cwd=None) -> Measure:
    """Runs argv under /usr/bin/time in its own session; wall time from here, CPU and peak
    RSS of the process from time(1)."""
    tfile = logs / f"{name}.time"
    out = open(logs / f"{name}.out", "w")
    err = open(logs / f"{name}.err", "w")
    cmd = [TIME, "-o", str(tfile), "-f", "%e %U %S %M", *argv]
    # Dirty pages of the previous step (a restore writes the whole tree) are written back
    # now, not during this step's measurement.
    os.sync()
    m = Measure(load=Path("/proc/loadavg").read_text().split()[0])
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                         cwd=cwd, start_new_session=True)
    LIVE.add(p)
    try:
        rc = p.wait()
    finally:
        end_process(p)
        out.close()
        err.close()
    m.wall = time.monotonic() - t0
    m.stdout = (logs / f"{name}.out").read_text(errors="replace")
    lines = [ln for ln in tfile.read_text().splitlines() if ln.strip()]
    e, u, s, r = lines[-1].split()
    m.user, m.sys, m.rss = float(u), float(s), int(r) * 1024
    if rc != 0:
        tail = (logs / f"{name}.err").read_text(errors="replace")[-3000:]
        raise BenchError(f"{name}: {' '.join(argv)} exited with {rc}; stderr:\n{tail}\n"
                         f"stdout:\n{m.stdout[-2000:]}")
    return m


class BoxMonitor:
    """abrid's CPU time and peak RSS per step. VmHWM is reset before each step by writing 5 to
    /proc/PID/clear_refs (Linux >= 4.0, needs to own the process or be root); if that is
    refused, the reported peak is the maximum since abrid started. A 50 ms VmRSS sampler runs
    as a cross-check."""

    def __init__(self, pid: int):
        self.pid = pid
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sampled = 0
        self.exact = True
        self._cpu0 = 0.0

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def _cpu(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.sampled = max(self.sampled, self._status("VmRSS"))
            except OSError:
                return

    def start(self) -> None:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            self.exact = False
        self.sampled = self._status("VmRSS")
        self._cpu0 = self._cpu()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self, m: Measure) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        m.box_cpu = self._cpu() - self._cpu0
        m.box_rss = max(self._status("VmHWM"), self.sampled)
        m.box_rss_exact = self.exact


def disk_usage(path: Path) -> tuple[int, int]:
    """(allocated bytes like du, apparent bytes), hard links counted once."""
    alloc = apparent = 0
    seen = set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            alloc += st.st_blocks * 512
            apparent += st.st_size
    return alloc, apparent


# --- the data set ------------------------------------------------------------------------------

@dataclass
class DataStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0


def tree_stats(root: Path) -> DataStats:
    s = DataStats()
    for dirpath, dirnames, filenames in os.walk(root):
        s.dirs += len(dirnames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                s.files += 1
                s.bytes += st.st_size
            elif stat.S_ISLNK(st.st_mode):
                s.symlinks += 1
    # links to directories appear in dirnames but are not descended into
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                s.symlinks += 1
                s.dirs -= 1
    return s


def source_entries(src: Path):
    """(path, lstat) of regular files and symlinks below src, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        entries = sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in sorted(entries):
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                yield p, st


def gather(sources: list[Path], data: Path, cap: int) -> DataStats:
    """Copies a deterministic sample of the sources into data: every file whose path hashes
    below a fraction is taken (so the sample spreads over the whole tree rather than being a
    prefix of it), up to cap bytes. The fraction starts at cap/total and grows pass after pass
    until the sample is within 5 % of cap (a few large files make one pass land short).
    Modes and times are kept."""
    total = 0
    for src in sources:
        for _, st in source_entries(src):
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    frac = min(1.0, cap / total) if total else 1.0
    log(f"sources hold {total / MIB:.0f} MiB; taking at most {cap / MIB:.0f} MiB")
    taken = 0
    done: set[str] = set()
    while True:
        threshold = int(frac * 2**32)
        for src in sources:
            for p, st in source_entries(src):
                if p in done or (frac < 1.0 and zlib.crc32(p.encode()) >= threshold):
                    continue
                if stat.S_ISREG(st.st_mode) and taken + st.st_size > cap:
                    continue
                done.add(p)
                dest = data / src.name / os.path.relpath(p, src)
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    if stat.S_ISLNK(st.st_mode):
                        os.symlink(os.readlink(p), dest)
                    else:
                        shutil.copy2(p, dest, follow_symlinks=False)
                        taken += st.st_size
                except OSError as e:  # unreadable file: leave it out
                    log(f"skipped {p}: {e}")
                    try:
                        dest.unlink()
                    except FileNotFoundError:
                        pass
        log(f"sample of {frac:.1%} of the files: {taken / MIB:.0f} MiB")
        if taken >= 0.95 * cap or frac >= 1.0:
            break
        frac = min(1.0, frac * min(2.0, max(1.2, cap / max(taken, 1))))
    return tree_stats(data)


def regular_files(data: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(data):
        dirnames.sort()
        for name in sorted(filenames):
            p = os.path.join(dirpath, name)
            if stat.S_ISREG(os.lstat(p).st_mode):
                out.append(os.path.relpath(p, data))
    return out


def modify(data: Path, pct: float, seed: int) -> dict:
    """Changes ~pct % of the files, deterministically from the seed: half of the count
    rewritten in part (a 4-64 KiB random block at a random offset, sometimes appended), a
    quarter added (half fresh random bytes, half a copy of another file with a random 4 KiB
    block inserted: a "new version"), a quarter removed."""
    rng = random.Random(seed)
    files = regular_files(data)
    n = max(4, round(len(files) * pct / 100))
    n_mod, n_add = n // 2, n // 4
    n_del = n - n_mod - n_add
    chosen = rng.sample(files, n_mod + n_del)
    to_mod, to_del = chosen[:n_mod], chosen[n_mod:]
    written = 0
    for rel in to_mod:
        p = data / rel
        size = p.stat().st_size
        block = rng.randbytes(rng.randint(4096, 65536))
        with open(p, "r+b") as f:
            if size == 0 or rng.random() < 0.2:
                f.seek(0, os.SEEK_END)
            else:
                f.seek(rng.randrange(size))
            f.write(block)
        written += len(block)
    for rel in to_del:
        (data / rel).unlink()
    dirs = sorted({str(Path(r).parent) for r in files})
    for i in range(n_add):
        d = data / rng.choice(dirs)
        if i % 2 == 0:
            size = min(8 * MIB, (data / rng.choice(to_mod)).stat().st_size or 4096)
            body = rng.randbytes(size)
        else:
            src = rng.choice(files)
            try:
                body = (data / src).read_bytes()[: 8 * MIB]
            except FileNotFoundError:  # removed above
                body = b""
            cut = rng.randrange(len(body) + 1)
            body = body[:cut] + rng.randbytes(4096) + body[cut:]
        (d / f"abri-bench-new-{i:05d}.bin").write_bytes(body)
        written += len(body)
    return {"files_before": len(files), "modified": n_mod, "added": n_add, "removed": n_del,
            "bytes_written": written}


# --- restore verification --------------------------------------------------------------------

def listing(root: Path) -> dict[str, tuple]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p), None, None)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", None, stat.S_IMODE(st.st_mode), None)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("f", st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns // 10**9)
            else:
                out[rel] = ("o", None, None, None)
    return out


def file_hash(p: Path) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify(src: Path, dst: Path, full: bool, seed: int, hashes: dict[str, str]) -> tuple[bool, str]:
    """Same entries, types, symlink targets, sizes, modes; content compared by hash for every
    file (full) or for a seeded sample of 2000 files plus every changed one."""
    if not dst.is_dir():
        return False, f"restored tree not found at {dst}"
    a, b = listing(src), listing(dst)
    missing = sorted(set(a) - set(b))
    extra = sorted(set(b) - set(a))
    wrong = [k for k in set(a) & set(b) if a[k][:2] != b[k][:2]]
    modes = [k for k in set(a) & set(b) if a[k][0] != "l" and a[k][2] != b[k][2]]
    mtimes = [k for k in set(a) & set(b) if a[k][0] == "f" and a[k][3] != b[k][3]]
    files = sorted(k for k in set(a) & set(b) if a[k][0] == "f" == b[k][0])
    if full:
        sample = files
    else:
        rng = random.Random(seed)
        sample = set(rng.sample(files, min(2000, len(files))))
        sample |= {f for f in files if "abri-bench-new-" in f}
        sample = sorted(sample)
    content = []
    for rel in sample:
        if rel not in hashes:
            hashes[rel] = file_hash(src / rel)
        if file_hash(dst / rel) != hashes[rel]:
            content.append(rel)
    ok = not (missing or extra or wrong or content)
    parts = [f"{len(sample)} files hashed" + (" (all)" if full else " (sample)")]
    for label, lst in (("missing", missing), ("extra", extra), ("type/size/target differ", wrong),
                       ("content differs", content), ("mode differs", modes),
                       ("mtime differs", mtimes)):
        if lst:
            parts.append(f"{len(lst)} {label} (e.g. {lst[0]})")
    return ok, "; ".join(parts)


# --- the tools ----------------------------------------------------------------------------------

class Tool:
    name = ""
    client = ""

    def __init__(self, work: Path, data: Path, logs: Path, box: Path | None = None):
        self.work = work
        # Where the repository lives: the box's data file system (see LoopFs), or the
        # tool's work directory when there is none.
        self.box = box or work
        self.box.mkdir(parents=True, exist_ok=True)
        self.data = data
        self.logs = logs
        self.commands: list[str] = []

    def setup(self) -> None: ...
    def backup(self, step: str) -> Measure: ...
    def restore(self, target: Path) -> Measure: ...
    def repo(self) -> Path: ...
    def stop(self) -> None: ...
    def monitor(self) -> BoxMonitor | None:
        return None


class Restic(Tool):
    name = "restic"
    client = "restic"

    def __init__(self, *a, box: Path | None = None):
        super().__init__(*a, box=box)
        self.env = dict(os.environ, RESTIC_REPOSITORY=str(self.box / "repo"),
                        RESTIC_PASSWORD_FILE=str(self.work / "password"),
                        RESTIC_CACHE_DIR=str(self.work / "cache"))
        self.commands = [
            "restic init --repository-version 2   # compression: auto (restic's default)",
            "restic backup --host bench DATA",
            "restic restore latest --target RESTORE",
        ]

    def repo(self) -> Path:
        return self.box / "repo"

    def setup(self) -> None:
        (self.work / "password").write_text(RESTIC_PASSWORD + "\n")
        run_quiet(["restic", "init", "--repository-version", "2"], env=self.env)

    def backup(self, step: str) -> Measure:
        return run_measured(f"restic-{step}", ["restic", "backup", "--host", "bench",
                                               str(self.data)], self.logs, env=self.env)

    def restore(self, target: Path) -> Measure:
        return run_measured("restic-restore", ["restic", "restore", "latest", "--target",
                                               str(target)], self.logs, env=self.env)


class Borg(Tool):
    name = "borg"
    client = "borg"

    def __init__(self, *a, encryption: str = "repokey-blake2", box: Path | None = None):
        super().__init__(*a, box=box)
        self.encryption = encryption
        self.env = dict(os.environ, BORG_REPO=str(self.box / "repo"),
                        BORG_PASSPHRASE=BORG_PASSPHRASE, BORG_BASE_DIR=str(self.work / "home"),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        self.commands = [
            f"borg init -e {encryption}   # BORG_PASSPHRASE in the environment",
            "borg create -C zstd,3 ::STEP DATA",
            "cd RESTORE && borg extract ::changed",
        ]
        self.last = ""
        self.extract_args: list[str] = []

    def repo(self) -> Path:
        return self.box / "repo"

    def setup(self) -> None:
        run_quiet(["borg", "init", "-e", self.encryption], env=self.env)

    def backup(self, step: str) -> Measure:
        self.last = step
        return run_measured(f"borg-{step}", ["borg", "create", "-C", "zstd,3", f"::{step}",
                                             str(self.data)], self.logs, env=self.env)

    def restore(self, target: Path) -> Measure:
        return run_measured("borg-restore", ["borg", "extract", *self.extract_args,
                                             f"::{self.last}"], self.logs,
                            env=self.env, cwd=target)


BOX_MKFS = ["mkfs.ext4", "-q", "-F", "-L", "data", "-b", "4096", "-O", "meta_bg,^resize_inode"]
# A protected machine's disk as Debian's installer makes it: ext4 with mke2fs's defaults.
CLIENT_MKFS = ["mkfs.ext4", "-q", "-F", "-L", "client"]


class LoopFs:
    """An ext4 file system in a sparse file on the scratch disk, on a loop device with
    direct I/O (no second page cache), mounted at SCRATCH/NAME.

    Two of them: `box`, made as the box makes its data partition
    (board/common/rootfs-overlay/usr/libexec/abri/data-format: BOX_MKFS, with a journal),
    holds every tool's repository; `client`, made as Debian makes a disk (CLIENT_MKFS),
    holds every tool's restores. So each writes to the kind of file system it would in use,
    whatever the scratch disk's own file system is: an ext4 without a journal, for one,
    checks every inode it hands out against recent deletions, which costs a store of many
    files, and a restore of many files, seconds."""

    def __init__(self, scratch: Path, name: str, mkfs: list[str], size: int):
        self.file = scratch / f"{name}.ext4"
        self.mnt = scratch / name
        self.loop = ""
        with open(self.file, "wb") as f:
            f.truncate(size)
        run_quiet([*mkfs, str(self.file)])
        self.loop = subprocess.run(["losetup", "--find", "--show", "--direct-io=on",
                                    str(self.file)], capture_output=True, text=True,
                                   check=True).stdout.strip()
        self.mnt.mkdir()
        run_quiet(["mount", self.loop, str(self.mnt)])
        opts = " ".join(a for a in mkfs[1:] if a not in ("-q", "-F"))
        self.describe = (f"ext4 (`mkfs.ext4 {opts}`), {size / GIB:.0f} GiB sparse file on the "
                         "scratch disk, loop device with direct I/O")

    @staticmethod
    def possible() -> str:
        """Why the tools cannot get file systems of their own here, or ''."""
        if os.geteuid() != 0:
            return "not root (loop devices and mount need it)"
        for tool in ("losetup", "mount", "umount", "mkfs.ext4"):
            if shutil.which(tool) is None:
                return f"{tool} is missing"
        if not Path("/dev/loop-control").exists():
            return "no /dev/loop-control"
        return ""

    @staticmethod
    def clear_stale(scratch: Path) -> None:
        """Unmounts and detaches what a killed earlier run left."""
        for name in ("box", "client"):
            mnt = scratch / name
            if os.path.ismount(mnt):
                subprocess.run(["umount", str(mnt)], check=False)
            img = scratch / f"{name}.ext4"
            if img.exists():
                out = subprocess.run(["losetup", "-j", str(img)], capture_output=True,
                                     text=True).stdout
                for line in out.splitlines():
                    subprocess.run(["losetup", "-d", line.split(":", 1)[0]], check=False)

    def close(self) -> None:
        if os.path.ismount(self.mnt):
            subprocess.run(["umount", str(self.mnt)], check=False)
        if self.loop:
            subprocess.run(["losetup", "-d", self.loop], check=False)
            self.loop = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Abri(Tool):
    name = "abri"
    client = "abri-agent"

    def __init__(self, *a, plan: str = "files", box: Path | None = None):
        super().__init__(*a, box=box)
        self.plan = plan
        self.state = self.box / "state"
        self.config = self.work / "agent.toml"
        self.https = free_port()
        self.http = free_port()
        self.base = f"https://127.0.0.1:{self.https}"
        self.proc: subprocess.Popen | None = None
        self.mon: BoxMonitor | None = None
        self.csrf = ""
        self.commands = [
            "abrid --dev --state-dir STATE --https 127.0.0.1:PORT --http 127.0.0.1:PORT2 "
            "--no-mdns --mac 52:54:00:be:0c:01   # free loopback ports picked at start",
            "abri-provision activate https://127.0.0.1:PORT --fingerprint FP --claim-code CODE --json",
            "POST /api/v1/login; POST /api/v1/enrolment-tokens; "
            + ("PUT /api/v1/plans/files {selections: [DATA], excludes: []}" if plan == "files"
               else "PUT /api/v1/plans/image {enabled: true, selections: [IMAGE]}"),
            "abri-agent --config CONFIG enroll --box https://127.0.0.1:PORT --token T "
            "--fingerprint FP --state-dir AGENT_STATE",
        ]
        if plan == "files":
            self.commands += [
                "abri-agent --config CONFIG --json backup --now",
                "abri-agent --config CONFIG --json restore latest --to RESTORE",
            ]
        else:
            self.commands += [
                "abri-agent --config CONFIG --json backup --now --plan image",
                "abri-agent --config CONFIG --json restore-image SNAPSHOT --to RESTORE/disk.img",
            ]

    def repo(self) -> Path:
        return self.state / "store"

    def monitor(self) -> BoxMonitor | None:
        return self.mon

    def _api(self, method: str, path: str, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.base}/api/v1/{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.csrf and method != "GET":
            req.add_header("X-CSRF-Token", self.csrf)
        try:
            with self.opener.open(req, timeout=30) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raise BenchError(f"{method} {path}: HTTP {e.code} {e.read()[:500]!r}") from None
        return json.loads(raw) if raw else None

    def setup(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        cmd = [str(ABRID), "--dev", "--state-dir", str(self.state),
               "--https", f"127.0.0.1:{self.https}", "--http", f"127.0.0.1:{self.http}",
               "--no-mdns", "--mac", "52:54:00:be:0c:01"]
        boxlog = open(self.logs / "abrid.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=boxlog, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        LIVE.add(self.proc)
        boxlog.close()
        ca = self.state / "tls" / "ca.pem"
        deadline = time.monotonic() + 60
        ctx = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"abrid exited with {self.proc.returncode}; see "
                                 f"{self.logs / 'abrid.log'}")
            if ca.is_file():
                try:
                    ctx = ssl.create_default_context(cafile=str(ca))
                    with urllib.request.urlopen(f"{self.base}/api/v1/status", context=ctx,
                                                timeout=2) as r:
                        if r.status == 200:
                            break
                except (OSError, ssl.SSLError, urllib.error.URLError):
                    pass
            time.sleep(0.2)
        else:
            raise BenchError("abrid did not answer within 60 s")
        self.mon = BoxMonitor(self.proc.pid)
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ctx),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        fp = hashlib.sha256(ssl.PEM_cert_to_DER_cert(ca.read_text())).hexdigest()
        code = (self.state / "dev-claim-code").read_text().strip()
        out = run_quiet([str(PROVISION), "activate", self.base, "--fingerprint", fp, "--json"],
                        env=dict(os.environ, ABRI_CLAIM_CODE=code)).stdout
        password = json.loads(out)["password"]
        self.csrf = self._api("POST", "login", {"user": "admin", "password": password})["csrf_token"]
        token = self._api("POST", "enrolment-tokens", {"name": "bench", "days": 1})["token"]
        if self.plan == "files":
            self.edit_plan("files", selections=[str(self.data)], excludes=[])
        else:
            self.edit_plan(self.plan, enabled=True, selections=[str(self.data)])
        run_quiet([str(AGENT), "--config", str(self.config), "enroll", "--box", self.base,
                   "--token", token, "--fingerprint", fp, "--state-dir",
                   str(self.work / "agent-state")])

    def edit_plan(self, plan_id: str, **changes) -> None:
        plan = self._api("GET", f"plans/{plan_id}")
        plan = {k: v for k, v in plan.items() if k not in ("id", "kind")}
        plan.update(changes)
        self._api("PUT", f"plans/{plan_id}", plan)

    def backup(self, step: str) -> Measure:
        argv = [str(AGENT), "--config", str(self.config), "--json", "backup", "--now"]
        if self.plan != "files":
            argv += ["--plan", self.plan]
        m = run_measured(f"abri-{step}", argv, self.logs)
        try:
            rep = json.loads(m.stdout)
            m.report = rep
            s = rep["stats"]
            if self.plan == "files":
                m.note = (f"{s['files']} files, {s['reused_files']} not re-read, "
                          f"{s['new_bytes'] / MIB:.1f} MiB new in {s['new_chunks']} chunks; "
                          f"{rep.get('bytes_read', 0) / MIB:.1f} MiB read")
            else:
                reads = ", ".join(i.get("read", "?") for i in rep["snapshot"]["images"])
                m.note = (f"read {rep.get('bytes_read', 0) / MIB:.1f} MiB ({reads}); "
                          f"{s['new_bytes'] / MIB:.1f} MiB new in {s['new_chunks']} chunks")
                if s.get("reused_files"):
                    m.note += f"; {s['reused_files']} slots taken unread from the previous image"
        except (ValueError, KeyError, TypeError) as e:
            m.note = f"(report not parsed: {e})"
        return m

    def restore_image(self, snapshot: str, target: Path) -> Measure:
        m = run_measured("abri-restore", [str(AGENT), "--config", str(self.config), "--json",
                                          "restore-image", snapshot, "--to", str(target)],
                         self.logs)
        try:
            m.report = json.loads(m.stdout)
        except ValueError:
            m.report = None
        return m

    def restore(self, target: Path) -> Measure:
        return run_measured("abri-restore", [str(AGENT), "--config", str(self.config), "--json",
                                             "restore", "latest", "--to", str(target)], self.logs)

    def stop(self) -> None:
        if self.proc is not None:
            end_process(self.proc)


# --- report ------------------------------------------------------------------------------------

def fmt_mib(n: int | None) -> str:
    return "—" if n is None else f"{n / MIB:,.1f}"


def machine_info(scratch: Path) -> dict:
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    df = subprocess.run(["df", "-hT", str(scratch)], capture_output=True, text=True).stdout
    dev_line = df.strip().splitlines()[-1].split() if df.strip() else []
    disk = ""
    if dev_line:
        dev, fstype, size = dev_line[0], dev_line[1], dev_line[2]
        rot = ""
        base = os.path.basename(os.path.realpath(dev))
        for cand in (base, base.rstrip("0123456789")):
            f = Path(f"/sys/block/{cand}/queue/rotational")
            if f.is_file():
                rot = ", rotational" if f.read_text().strip() == "1" else ", non-rotational"
                break
        disk = f"{dev} ({fstype}, {size}{rot})"
    return {"nproc": os.cpu_count(), "mem": mem, "cpu": cpu, "disk": disk,
            "kernel": platform.release()}


def versions() -> dict:
    def out(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        except OSError:
            return "?"
    rev = out(["git", "rev-parse", "--short", "HEAD"])
    # BENCHMARKS.md is what the run writes (a run of both scenarios has written the
    # first section when it looks here for the second): not a change to the code measured.
    dirty = out(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                 ":(exclude)BENCHMARKS.md"])
    return {"restic": out(["restic", "version"]), "borg": out(["borg", "--version"]),
            "abri": rev + (" (with uncommitted changes)" if dirty else ""),
            "rustc": out(["rustc", "--version"])}


def targets(res: dict) -> list[tuple[str, str, str]]:
    """(target, detail, verdict) for each target of issue 3; strict comparisons, no rounding."""
    out = []
    a, r = res.get("abri", {}), res.get("restic", {})
    if not a or not r:
        return [("all targets", "need both abri and restic results", "not measured")]
    for key, label in STEPS:
        if key in a and key in r and a[key].ok and r[key].ok:
            lim = r[key].wall / 2
            out.append((f"{label}: wall ≤ ½ restic's",
                        f"{a[key].wall:.2f} s vs limit {lim:.2f} s (restic {r[key].wall:.2f} s; "
                        f"{a[key].wall / r[key].wall:.2f}× restic)",
                        "met" if a[key].wall <= lim else "not met"))
        else:
            out.append((f"{label}: wall ≤ ½ restic's", "step failed", "not met"))
    for key, label in STEPS[:3]:
        if key in a and key in r and a[key].repo_alloc is not None:
            ok = a[key].repo_alloc <= r[key].repo_alloc
            out.append((f"repository after {label} ≤ restic's (du)",
                        f"{fmt_mib(a[key].repo_alloc)} MiB vs {fmt_mib(r[key].repo_alloc)} MiB "
                        f"(apparent {fmt_mib(a[key].repo_apparent)} vs "
                        f"{fmt_mib(r[key].repo_apparent)})", "met" if ok else "not met"))
    worst = [(k, a[k].rss, r[k].rss) for k, _ in STEPS if k in a and k in r]
    bad = [w for w in worst if w[1] > w[2]]
    out.append(("agent peak RSS ≤ restic's (every step)",
                "; ".join(f"{STEP_NAME[k]} {x / MIB:.1f} vs {y / MIB:.1f} MiB" for k, x, y in worst),
                "met" if worst and not bad else "not met"))
    box = [a[k].box_rss for k, _ in STEPS if k in a and a[k].box_rss is not None]
    exact = all(a[k].box_rss_exact for k, _ in STEPS if k in a)
    if box:
        out.append(("box peak RSS ≤ 256 MiB", f"max {max(box) / MIB:.1f} MiB"
                    + ("" if exact else " (VmHWM could not be reset: max since start)"),
                    "met" if max(box) <= BOX_RSS_TARGET else "not met"))
    return out


def restore_runs_line(ctx: dict) -> str:
    """The header line that says how the restores were timed."""
    n = ctx.get("restore_runs", 1)
    if n <= 1:
        return "- restores: one run per tool"
    return (f"- restores: {n} runs per tool, the tools taking turns (each tool once, then "
            "again); the table shows each tool's run of median wall time, and its notes "
            "every run's wall time (so that one slow minute of the machine does not decide "
            "a target)")


def render(ctx: dict) -> str:
    res, L = ctx["results"], []
    mi, ve, ds = ctx["machine"], ctx["versions"], ctx["data_stats"]
    quick = ctx["size_gb"] < 3
    L.append(f"## File mode: run of {ctx['date']}"
             + (" (quick run, smaller than the issue's ~3 GB)" if quick else ""))
    L.append("")
    L.append(f"- machine: {mi['nproc']} CPUs ({mi['cpu']}), {mi['mem'] / 2**30:.1f} GiB RAM, "
             f"scratch disk {mi['disk']}, kernel {mi['kernel']}")
    if mi.get("repo_fs"):
        L.append(f"- repositories (Abri's box state, restic's and borg's repositories): on "
                 f"{mi['repo_fs']}; restores: on {mi['client_fs']}; data and client "
                 "caches on the scratch disk")
    L.append(f"- load average (1 min) at start {ctx['load_start']}, at end {ctx['load_end']}"
             " (other work on the machine shares its CPUs; the load at the start of each step "
             "is in the table)")
    L.append(f"- versions: {ve['restic']}; {ve['borg']}; abri {ve['abri']} ({ve['rustc']}, "
             "release profile)")
    L.append(f"- data: {ds.bytes / MIB:,.1f} MiB in {ds.files:,} files, {ds.dirs:,} directories, "
             f"{ds.symlinks:,} symlinks, sampled from {', '.join(ctx['sources'])} "
             f"(`--size-gb {ctx['size_gb']}`); after the change {ctx['data_after'].bytes / MIB:,.1f} "
             f"MiB in {ctx['data_after'].files:,} files")
    ch = ctx["change"]
    L.append(f"- change (seed {ctx['seed']}): {ch['modified']} files rewritten in part, "
             f"{ch['added']} added, {ch['removed']} removed, of {ch['files_before']:,} "
             f"({ch['bytes_written'] / MIB:.1f} MiB written)")
    L.append("- page cache: warm for the backups (data copied just before; caches not "
             "dropped), every tool reading the same tree in the same state; "
             + ("emptied before every restore (`drop_caches`), so each tool reads its "
                "repository from the disk" if COLD_RESTORES["all"] else
                "**not** emptied before the restores (not root?): each restore reads what of "
                "its repository is still cached"))
    L.append(restore_runs_line(ctx))
    L.append("- compression: restic `auto` (its default, zstd, repository version 2); borg "
             "`zstd,3`; Abri zstd level 2 (`ZSTD_LEVEL`, stored compressed only when smaller)")
    L.append(f"- encryption: restic AES-256/Poly1305 (always); borg `{ctx['borg_enc']}`; Abri "
             "HTTPS on loopback (TLS), keyed BLAKE3 chunk digests")
    L.append("- restic and borg read and write their repository on the local disk; Abri's "
             "agent talks to abrid over HTTPS on 127.0.0.1 and abrid verifies every chunk "
             "(decompress + hash) before storing it")
    L.append("")
    L.append("| step | tool | wall s | MiB/s | client CPU s | box CPU s | client peak RSS MiB | "
             "box peak RSS MiB | repo MiB (du) | repo MiB (apparent) | load | notes |")
    L.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    for key, label in STEPS:
        for tool in ctx["tools"]:
            m = res.get(tool, {}).get(key)
            if m is None:
                L.append(f"| {label} | {tool} | failed or not run | | | | | | | | | |")
                continue
            thr = m.data_bytes / MIB / m.wall if m.wall else 0
            box_cpu = "—" if m.box_cpu is None else f"{m.box_cpu:.2f}"
            box_rss = "—" if m.box_rss is None else fmt_mib(m.box_rss) + ("" if m.box_rss_exact else "*")
            note = m.note.replace("|", "/")
            if not m.ok:
                note = "**FAILED** " + note
            L.append(f"| {label} | {tool} | {m.wall:.2f} | {thr:,.1f} | {m.cpu:.2f} | {box_cpu} | "
                     f"{m.rss / MIB:.1f} | {box_rss} | {fmt_mib(m.repo_alloc)} | "
                     f"{fmt_mib(m.repo_apparent)} | {m.load} | {note} |")
    L.append("")
    L.append("Client = `abri-agent`, `restic` or `borg` (CPU = user + sys and peak RSS from "
             "`/usr/bin/time`). Box = `abrid` (CPU from `/proc/PID/stat`; peak RSS = VmHWM "
             "after resetting it through `/proc/PID/clear_refs` at the start of the step, "
             "cross-checked by sampling VmRSS every 50 ms; `*` = reset refused, max since "
             "start). Throughput = data size / wall time. Repository: Abri `STATE/store`, "
             "restic and borg their repository directory, after the step.")
    if ctx.get("abri_state"):
        a_alloc, a_app = ctx["abri_state"]
        L.append(f"Abri's whole state directory (store + LMDB + TLS) at the end: "
                 f"{fmt_mib(a_alloc)} MiB du, {fmt_mib(a_app)} MiB apparent.")
    L.append("")
    L.append("### File-mode targets (issue 3, on 2 cores)")
    L.append("")
    L.append("| target | measured | verdict |")
    L.append("|---|---|---|")
    for t, d, v in targets(res):
        L.append(f"| {t} | {d} | **{v}** |")
    L.append("")
    L.append("### File-mode commands")
    L.append("")
    L.append("```")
    for tool in ctx["tools"]:
        for c in ctx["commands"].get(tool, []):
            L.append(c)
    L.append("```")
    L.append("")
    L.append(f"Run with: `{ctx['argv']}`. Logs of every step: `{ctx['logs']}`.")
    L.append("")
    return "\n".join(L)


# --- image scenario ------------------------------------------------------------------------------
#
# One ext4 image file, made by mke2fs -d from a sample of /usr, with a share of its files
# removed inside it (their data stays in the free blocks). Abri images it through the
# "image" plan; restic and borg back up the same file. Then ~1 % of the image's blocks are
# rewritten in place inside file data, once as 64 KiB runs and once as scattered 4 KiB
# blocks, and every tool runs again. Last, the image is converted to qcow2 and served by
# qemu-nbd: a first backup of the export, a change through qemu-io tracked by a persistent
# dirty bitmap, and a re-run that reads only what the bitmap marks.

IMAGE_STEPS = [
    ("first", "first backup"),
    ("unchanged", "unchanged re-run"),
    ("extents", "re-run after 64 KiB runs rewritten"),
    ("scattered", "re-run after scattered 4 KiB rewritten"),
    ("restore", "restore"),
]
IMAGE_STEP_NAME = dict(IMAGE_STEPS)
IMAGE_BACKUPS = [k for k, _ in IMAGE_STEPS if k != "restore"]
NBD_STEPS = [
    ("nbd-first", "NBD: first backup of the export"),
    ("nbd-bitmap", "NBD: re-run with dirty bitmap"),
    ("nbd-full", "NBD: same data, no bitmap"),
]
NBD_STEP_NAME = dict(NBD_STEPS)
NBD_EXPORT = "bench-vm"
BITMAP = "bm0"
FS_BLOCK = 4096
CHUNK_MODEL_KIB = (16, 32, 64, 128, 256, 1024)
# Paths debugfs's command parser takes without quoting.
SAFE_PATH = re.compile(r"^[A-Za-z0-9._+@,=:/-]+$")
# A leaf row of debugfs `ex -l`: level, entries, logical a - b, physical a - b, length, flags.
EXTENT_ROW = re.compile(
    r"^\s*\d+/\s*\d+\s+\d+/\s*\d+\s+\d+\s+-\s+\d+\s+(\d+)\s+-\s+(\d+)\s+(\d+)\s*(.*)$")


def system_tool(exe: str) -> str:
    """A tool that Debian installs in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/sbin")
    if not found:
        raise BenchError(f"{exe} is missing")
    return found


def store_chunk_bytes() -> int:
    """CHUNK_BYTES of appliance/store/src/image.rs, for the report; the measured runs take
    the chunk size the agent reports per image."""
    text = (ROOT / "appliance" / "store" / "src" / "image.rs").read_text()
    m = re.search(r"pub const CHUNK_BYTES: u32 = (\d+) \* 1024;", text)
    if not m:
        raise BenchError("CHUNK_BYTES not found in appliance/store/src/image.rs")
    return int(m.group(1)) * 1024


@dataclass
class Ext4Info:
    block_size: int
    blocks: int
    free_blocks: int
    free: list[tuple[int, int]]  # byte ranges [start, end) of the free blocks, sorted

    @property
    def used_bytes(self) -> int:
        return (self.blocks - self.free_blocks) * self.block_size

    @property
    def free_bytes(self) -> int:
        return self.free_blocks * self.block_size


def ext4_info(img: Path) -> Ext4Info:
    """Block size, count and the free blocks of every group, from dumpe2fs."""
    out = run_quiet([system_tool("dumpe2fs"), str(img)]).stdout
    head: dict[str, int] = {}
    free: list[tuple[int, int]] = []
    for line in out.splitlines():
        for key in ("Block size", "Block count", "Free blocks"):
            if line.startswith(key + ":"):
                head[key] = int(line.split(":", 1)[1])
        if line.startswith("  Free blocks:"):
            for part in line.split(":", 1)[1].split(","):
                part = part.strip()
                if part:
                    a, _, b = part.partition("-")
                    free.append((int(a), int(b or a) + 1))
    if len(head) != 3:
        raise BenchError(f"dumpe2fs {img}: no block size/count/free count in its output")
    bs = head["Block size"]
    free.sort()
    merged: list[list[int]] = []
    for a, b in free:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    counted = sum(b - a for a, b in merged)
    if counted != head["Free blocks"]:
        raise BenchError(f"dumpe2fs {img}: the groups list {counted} free blocks, the "
                         f"superblock {head['Free blocks']}")
    return Ext4Info(bs, head["Block count"], counted, [(a * bs, b * bs) for a, b in merged])


def data_extents(img: Path, paths: list[str], work: Path) -> list[tuple[int, int]]:
    """(first block, block count) of the initialised leaf extents of the given files, from
    debugfs: the blocks that hold file data, where a rewrite keeps the file system sound."""
    cmds = work / "extents.debugfs"
    cmds.write_text("".join(f"ex -l /{p}\n" for p in paths))
    out = run_quiet([system_tool("debugfs"), "-f", str(cmds), str(img)]).stdout
    found = set()
    for line in out.splitlines():
        m = EXTENT_ROW.match(line)
        if m and "Uninit" not in m.group(4):
            first, last, count = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if count and last - first + 1 == count:
                found.add((first, count))
    return sorted(found)


def nonzero_bytes(path: Path, ranges: list[tuple[int, int]], block: int = FS_BLOCK) -> int:
    """Bytes of the non-zero `block`s inside the byte ranges of a file."""
    zero = bytes(MIB)
    total = 0
    with open(path, "rb") as f:
        for a, b in ranges:
            pos = a
            while pos < b:
                f.seek(pos)
                buf = f.read(min(MIB, b - pos))
                if not buf:
                    break
                if buf != zero[:len(buf)]:
                    mv = memoryview(buf)
                    total += sum(len(mv[i:i + block]) for i in range(0, len(buf), block)
                                 if mv[i:i + block] != zero[:len(mv[i:i + block])])
                pos += len(buf)
    return total


def pick_runs(extents: list[tuple[int, int]], n_runs: int, run_blocks: int,
              rng: random.Random, taken: set[int]) -> list[int]:
    """First blocks of `n_runs` runs of `run_blocks` contiguous file-data blocks, uniform
    over the data, starting at any 4 KiB block (not aligned to anything larger), never
    overlapping each other or the blocks in `taken` (updated)."""
    eligible = [(a, n) for a, n in extents if n >= run_blocks]
    if not eligible:
        raise BenchError(f"no file extent of {run_blocks} blocks in the image")
    cum = list(itertools.accumulate(n - run_blocks + 1 for _, n in eligible))
    out: list[int] = []
    attempts = 0
    while len(out) < n_runs and attempts < 100 * n_runs:
        attempts += 1
        r = rng.randrange(cum[-1])
        i = bisect.bisect_right(cum, r)
        a, _ = eligible[i]
        start = a + r - (cum[i - 1] if i else 0)
        blocks = range(start, start + run_blocks)
        if any(b in taken for b in blocks):
            continue
        taken.update(blocks)
        out.append(start)
    if len(out) < n_runs:
        raise BenchError(f"only {len(out)} of {n_runs} runs of {run_blocks} blocks found in "
                         "the image's file data")
    return sorted(out)


def write_runs(img: Path, starts: list[int], run_blocks: int, rng: random.Random) -> int:
    """Overwrites each run in place with random bytes; returns the bytes written."""
    with open(img, "r+b") as f:
        for s in starts:
            f.seek(s * FS_BLOCK)
            f.write(rng.randbytes(run_blocks * FS_BLOCK))
        f.flush()
        os.fsync(f.fileno())
    return len(starts) * run_blocks * FS_BLOCK


def chunks_touched(starts: list[int], run_blocks: int, chunk: int) -> int:
    touched = set()
    for s in starts:
        a, b = s * FS_BLOCK, (s + run_blocks) * FS_BLOCK
        touched.update(range(a // chunk, (b - 1) // chunk + 1))
    return len(touched)


def files_equal(a: Path, b: Path) -> tuple[bool, str]:
    if not b.is_file():
        return False, f"{b} not found"
    if a.stat().st_size != b.stat().st_size:
        return False, f"size {b.stat().st_size} != {a.stat().st_size}"
    with open(a, "rb") as fa, open(b, "rb") as fb:
        pos = 0
        while True:
            x, y = fa.read(4 * MIB), fb.read(4 * MIB)
            if x != y:
                i = next(k for k in range(min(len(x), len(y))) if x[k] != y[k])
                return False, f"first difference at byte {pos + i:,}"
            if not x:
                return True, "byte-identical to the source"
            pos += len(x)


def compare_used(src: Path, dst: Path, free: list[tuple[int, int]]) -> tuple[int, int]:
    """Compares dst with src outside the free ranges and checks dst is zero inside them.
    Returns (differing bytes in used blocks, non-zero bytes of dst in free blocks), both
    counted in 4 KiB blocks."""
    size = src.stat().st_size
    zero = bytes(FS_BLOCK)
    used_diff = free_dirty = 0
    fi = 0
    window = 4 * MIB
    with open(src, "rb") as fa, open(dst, "rb") as fb:
        pos = 0
        while pos < size:
            x = bytearray(fa.read(window))
            y = fb.read(window)
            end = pos + len(x)
            while fi < len(free) and free[fi][1] <= pos:
                fi += 1
            spans = []
            j = fi
            while j < len(free) and free[j][0] < end:
                a, b = max(free[j][0], pos) - pos, min(free[j][1], end) - pos
                x[a:b] = bytes(b - a)
                spans.append((a, b))
                j += 1
            if x != y:
                for k in range(0, len(x), FS_BLOCK):
                    if x[k:k + FS_BLOCK] == y[k:k + FS_BLOCK]:
                        continue
                    in_free = any(a <= k < b for a, b in spans)
                    if in_free and y[k:k + FS_BLOCK] != zero[:len(y[k:k + FS_BLOCK])]:
                        free_dirty += FS_BLOCK
                    elif not in_free:
                        used_diff += FS_BLOCK
            pos = end
            if not x:
                break
    return used_diff, free_dirty


class QemuNbd:
    """qemu-nbd serving one qcow2 file read-only on a Unix socket, optionally exporting a
    persistent dirty bitmap (-B)."""

    def __init__(self, disk: Path, sock: Path, logs: Path, bitmap: str | None = None):
        self.sock = sock
        argv = [shutil.which("qemu-nbd") or "qemu-nbd", "--socket", str(sock), "--export-name",
                NBD_EXPORT, "--format", "qcow2", "--read-only", "--persistent", "--shared", "4"]
        if bitmap:
            argv += ["--bitmap", bitmap]
        argv.append(str(disk))
        if sock.exists():
            sock.unlink()
        self.log = logs / f"qemu-nbd{'-' + bitmap if bitmap else ''}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        LIVE.add(self.proc)
        deadline = time.monotonic() + 30
        while not sock.exists():
            if self.proc.poll() is not None:
                raise BenchError(f"qemu-nbd exited with {self.proc.returncode}: "
                                 f"{self.log.read_text()[-1000:]}")
            if time.monotonic() > deadline:
                raise BenchError("qemu-nbd did not create its socket within 30 s")
            time.sleep(0.05)

    def uri(self, bitmap: str | None = None) -> str:
        return f"nbd+unix:///{NBD_EXPORT}?socket={self.sock}" + (
            f"&bitmap={bitmap}" if bitmap else "")

    def stop(self) -> None:
        end_process(self.proc)


def drop_caches() -> bool:
    """Writes dirty pages back and empties the page cache, dentries and inodes (root only);
    False if the kernel refused."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError as e:
        log(f"caches not dropped: {e}")
        return False


# Whether every restore so far started with empty caches (see `measured(cold=True)`).
COLD_RESTORES = {"all": True}


def measured(o: Tool, label: str, fn, cold: bool = False) -> Measure:
    """Runs one measured step of a tool with the box monitor around it; a failed step
    becomes a Measure with ok=False and the first line of the error. `cold`: the page cache
    is emptied first (restores: a restore after a loss reads a repository that is not in
    memory, whatever tool wrote it)."""
    if cold and not drop_caches():
        COLD_RESTORES["all"] = False
    mon = o.monitor()
    if mon:
        mon.start()
    log(f"{o.name}: {label}")
    try:
        m = fn()
    except BenchError as e:
        if mon:
            mon.stop(Measure())
        log(f"{o.name}: {label} FAILED: {e}")
        return Measure(ok=False, note=str(e).splitlines()[0][:200])
    if mon:
        mon.stop(m)
    return m


def repeated_restores(tools: list[str], runs: int, one) -> dict[str, Measure]:
    """Each tool's restore `runs` times, the tools taking turns (every tool once, then again),
    so that a slow minute of the machine falls on all of them; `one(tool, is_last)` runs
    and checks one restore. A tool's result is its run of median wall time (the slower middle
    one for an even count), with every run's wall time in its note; a failed run is the
    result instead."""
    done: dict[str, list[Measure]] = {t: [] for t in tools}
    for r in range(runs):
        for t in tools:
            m = one(t, r == runs - 1)
            done[t].append(m)
            log(f"{t}: restore {r + 1}/{runs}: {m.wall:.2f} s, {m.note}")
    result = {}
    for t, ms in done.items():
        failed = [m for m in ms if not m.ok]
        pick = failed[0] if failed else sorted(ms, key=lambda m: m.wall)[len(ms) // 2]
        if runs > 1:
            walls = ", ".join(f"{m.wall:.2f}" for m in ms)
            pick.note += f"; median of {runs} runs (wall s: {walls})"
        result[t] = pick
    return result


def fresh_dir(path: Path) -> None:
    """`path` as an empty directory (a previous run's restore removed first)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def build_image(args, sources: list[Path], work: Path) -> dict:
    """The image file and what it holds."""
    size = int(args.image_size_gb * 2**30) // MIB * MIB
    tree = work / "tree"
    tree.mkdir(parents=True)
    fill = int(size * args.image_fill_pct / 100)
    log(f"gathering ~{fill / MIB:.0f} MiB from {', '.join(map(str, sources))} into {tree}")
    ds = gather(sources, tree, fill)
    img = work / "disk.img"
    t0 = time.monotonic()
    run_quiet([system_tool("mke2fs"), "-q", "-F", "-t", "ext4", "-b", str(FS_BLOCK), "-L",
               "abri-bench", "-d", str(tree), str(img), f"{size // 1024}k"])
    log(f"mke2fs -d: {size / MIB:.0f} MiB image from {ds.bytes / MIB:.0f} MiB in {ds.files} "
        f"files ({time.monotonic() - t0:.0f} s)")

    # Remove a seeded share of the files' bytes inside the image: their blocks become free
    # but keep their bytes.
    sizes = {rel: (tree / rel).stat().st_size for rel in regular_files(tree)}
    safe = sorted(rel for rel in sizes if SAFE_PATH.match(rel))
    rng = random.Random(args.seed)
    rng.shuffle(safe)
    goal = sum(sizes.values()) * args.image_delete_pct / 100
    removed: list[str] = []
    removed_bytes = 0
    for rel in safe:
        if removed_bytes >= goal:
            break
        removed.append(rel)
        removed_bytes += sizes[rel]
    cmds = work / "rm.debugfs"
    cmds.write_text("".join(f"rm /{rel}\n" for rel in removed))
    debugfs = system_tool("debugfs")
    p = run_quiet([debugfs, "-w", "-f", str(cmds), str(img)])
    if "rm:" in p.stderr:
        raise BenchError(f"debugfs rm failed: {p.stderr[-1000:]}")
    e2fsck = system_tool("e2fsck")
    fsck = subprocess.run([e2fsck, "-fn", str(img)], capture_output=True, text=True)
    fixed = False
    if fsck.returncode != 0:
        # debugfs left something e2fsck wants to fix: fix it (not measured), then require clean.
        subprocess.run([e2fsck, "-fy", str(img)], capture_output=True, text=True)
        run_quiet([e2fsck, "-fn", str(img)])
        fixed = True
    kept = sorted(set(safe) - set(removed))
    extents = data_extents(img, kept, work)
    if not args.keep:
        shutil.rmtree(tree)
    info = ext4_info(img)
    st = img.stat()
    free_nonzero = nonzero_bytes(img, info.free)
    data_blocks = sum(n for _, n in extents)
    log(f"image: {size / MIB:.0f} MiB, used {info.used_bytes / MIB:.0f} MiB, free "
        f"{info.free_bytes / MIB:.0f} MiB ({free_nonzero / MIB:.0f} MiB of it non-zero), "
        f"allocated {st.st_blocks * 512 / MIB:.0f} MiB; {len(removed)} files removed "
        f"({removed_bytes / MIB:.0f} MiB)")
    return {"path": img, "size": size, "tree": ds, "removed": len(removed),
            "removed_bytes": removed_bytes, "fsck_fixed": fixed, "ext4": info,
            "allocated": st.st_blocks * 512, "free_nonzero": free_nonzero,
            "extents": extents, "data_blocks": data_blocks}


def run_image(args, tools: list[str], sources: list[Path], scratch: Path,
              logs: Path) -> tuple[str, list[str]]:
    """The image scenario; returns its BENCHMARKS.md section and the failed steps."""
    work = scratch / "image"
    work.mkdir()
    load_start = Path("/proc/loadavg").read_text().split()[0]
    im = build_image(args, sources, work)
    img, size = im["path"], im["size"]
    total_blocks = size // FS_BLOCK
    target_blocks = max(16, round(total_blocks * args.image_change_pct / 100))
    taken: set[int] = set()

    objs: dict[str, Tool] = {}
    for t in tools:
        w = work / t
        w.mkdir()
        box = args.box_root / "image" / t if args.box_root else None
        if t == "abri":
            objs[t] = Abri(w, img, logs, plan="image", box=box)
        elif t == "restic":
            objs[t] = Restic(w, img, logs, box=box)
            objs[t].commands = [
                "restic init --repository-version 2   # compression: auto (restic's default)",
                "restic backup --host bench IMAGE",
                "restic restore latest --target RESTORE   # 0.14 has no sparse restore",
            ]
        else:
            b = Borg(w, img, logs, encryption=args.borg_encryption, box=box)
            b.extract_args = ["--sparse"]
            b.commands = [
                f"borg init -e {args.borg_encryption}   # BORG_PASSPHRASE in the environment",
                "borg create -C zstd,3 ::STEP IMAGE",
                "cd RESTORE && borg extract --sparse ::scattered",
            ]
            objs[t] = b
    # Every tool logs under its own name; keep the two scenarios' logs apart.
    for o in objs.values():
        o.logs = logs / "image"
    (logs / "image").mkdir(exist_ok=True)
    results: dict[str, dict[str, Measure]] = {t: {} for t in tools}
    last: dict[str, tuple[int, int]] = {}
    ctx: dict = {"restore_runs": args.restore_runs, "results": results, "tools": tools,
                 "image": im, "argv":
                 "python3 bench/run.py " + " ".join(sys.argv[1:]), "logs": str(logs / "image"),
                 "borg_enc": args.borg_encryption, "seed": args.seed, "sources":
                 [str(s) for s in sources], "size_gb": args.image_size_gb,
                 "commands": {t: o.commands for t, o in objs.items()}, "changes": {},
                 "store_chunk": store_chunk_bytes(), "nbd": {}}

    def backup(t: str, step: str, written: int | None) -> None:
        o = objs[t]
        m = measured(o, IMAGE_STEP_NAME.get(step) or NBD_STEP_NAME[step], lambda: o.backup(step))
        if m.ok:
            m.data_bytes = size
            m.written = written
            m.repo_alloc, m.repo_apparent = disk_usage(o.repo())
            if t in last:
                m.growth_alloc = m.repo_alloc - last[t][0]
                m.growth_apparent = m.repo_apparent - last[t][1]
            last[t] = (m.repo_alloc, m.repo_apparent)
            log(f"{t}: {step}: {m.wall:.2f} s, cpu {m.cpu:.2f} s, rss {m.rss / MIB:.1f} MiB, "
                f"repo {m.repo_alloc / MIB:.1f} MiB, growth "
                f"{(m.growth_alloc or 0) / MIB:.1f} MiB {m.note}")
        results[t][step] = m

    def change(key: str, run_blocks: int, seed: int) -> int:
        rng = random.Random(seed)
        n_runs = max(1, round(target_blocks / run_blocks))
        starts = pick_runs(im["extents"], n_runs, run_blocks, rng, taken)
        written = write_runs(img, starts, run_blocks, rng)
        ctx["changes"][key] = {"starts": starts, "run_blocks": run_blocks, "written": written,
                               "seed": seed}
        log(f"change {key}: {len(starts)} runs of {run_blocks * FS_BLOCK // 1024} KiB, "
            f"{written / MIB:.1f} MiB written")
        return written

    for t in tools:
        log(f"{t}: setup")
        objs[t].setup()
        last[t] = disk_usage(objs[t].repo())
    for t in tools:
        backup(t, "first", None)
    for t in tools:
        backup(t, "unchanged", 0)
    written = change("extents", 16, args.seed + 1)
    for t in tools:
        backup(t, "extents", written)
    written = change("scattered", 1, args.seed + 2)
    for t in tools:
        backup(t, "scattered", written)

    # The change wrote file data only: the free blocks are those of the start.
    info = ext4_info(img)
    ctx["free_after"] = info
    def restore_one(t: str, is_last: bool) -> Measure:
        o = objs[t]
        target = (args.client_root / "image" if args.client_root else work / "restore") / t
        fresh_dir(target)
        if t == "abri":
            out = target / "disk.img"
            rep = results[t].get("scattered")
            snap = (rep.report or {}).get("snapshot", {}).get("id", "latest") if rep else "latest"
            m = measured(o, "restore", lambda: o.restore_image(snap, out), cold=True)
        else:
            out = target / img.relative_to("/")
            m = measured(o, "restore", lambda: o.restore(target), cold=True)
        m.data_bytes = size
        if m.ok:
            alloc = out.stat().st_blocks * 512 if out.is_file() else 0
            if t == "abri":
                fsck = subprocess.run([system_tool("e2fsck"), "-fn", str(out)],
                                      capture_output=True, text=True)
                used_diff, free_dirty = compare_used(img, out, info.free)
                m.ok = fsck.returncode == 0 and used_diff == 0 and free_dirty == 0
                m.note = (f"e2fsck -fn {'clean' if fsck.returncode == 0 else 'FAILED'}; "
                          + ("every used block equal to the source, free blocks zero"
                             if used_diff == 0 and free_dirty == 0 else
                             f"{used_diff / MIB:.2f} MiB of used blocks differ, "
                             f"{free_dirty / MIB:.2f} MiB non-zero in free blocks")
                          + f"; {alloc / MIB:.0f} MiB allocated")
                rr = (m.report or {}).get("report") or {}
                if rr:
                    m.note += (f"; {rr.get('chunks', 0):,} chunks fetched, "
                               f"{rr.get('bytes_written', 0) / MIB:.1f} MiB written, "
                               f"{rr.get('hole_bytes', 0) / MIB:.1f} MiB left as holes")
            else:
                ok, why = files_equal(img, out)
                m.ok = ok
                m.note = f"{why}; {alloc / MIB:.0f} MiB allocated"
            if not m.ok:
                m.note = "verify FAILED: " + m.note
        if not (args.keep and is_last):
            shutil.rmtree(target, ignore_errors=True)
        return m

    for t, m in repeated_restores(tools, args.restore_runs, restore_one).items():
        results[t]["restore"] = m

    if "abri" in objs and not args.no_nbd:
        run_nbd(args, objs["abri"], work, logs / "image", im, ctx, backup, target_blocks, taken)

    if "abri" in objs:
        ctx["abri_state"] = disk_usage(objs["abri"].state)
    for o in objs.values():
        o.stop()
    ctx["date"] = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    ctx["machine"] = machine_info(scratch)
    ctx["machine"]["repo_fs"] = args.repo_fs_note
    ctx["machine"]["client_fs"] = args.client_fs_note
    ctx["versions"] = versions()
    ctx["load_start"] = load_start
    ctx["load_end"] = Path("/proc/loadavg").read_text().split()[0]
    section = render_image(ctx)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
        if args.box_root:
            shutil.rmtree(args.box_root / "image", ignore_errors=True)
    failed = [f"image {t} {s}" for t in tools for s, _ in IMAGE_STEPS
              if s not in results[t] or not results[t][s].ok]
    if "abri" in objs and not args.no_nbd:
        failed += [f"image abri {s}" for s, _ in NBD_STEPS
                   if s not in results["abri"] or not results["abri"][s].ok]
    return section, failed


def run_nbd(args, abri: "Abri", work: Path, logs: Path, im: dict, ctx: dict, backup,
            target_blocks: int, taken: set[int]) -> None:
    """The dirty-bitmap steps (Abri only): the image as a qcow2 VM disk behind qemu-nbd."""
    qcow = work / "vm.qcow2"
    sock = work / "nbd.sock"
    log("converting the image to qcow2")
    run_quiet(["qemu-img", "convert", "-O", "qcow2", str(im["path"]), str(qcow)])
    nbd = QemuNbd(qcow, sock, logs)
    try:
        abri.edit_plan("image", enabled=True, selections=[nbd.uri()])
        backup("abri", "nbd-first", None)
    finally:
        nbd.stop()
    # The hypervisor starts tracking writes after the backup; then the guest writes.
    run_quiet(["qemu-img", "bitmap", "--add", "--enable", str(qcow), BITMAP])
    rng = random.Random(args.seed + 3)
    starts = pick_runs(im["extents"], target_blocks, 1, rng, taken)
    pattern = work / "pattern.bin"
    pattern.write_bytes(rng.randbytes(FS_BLOCK))
    argv = ["qemu-io", "-f", "qcow2"]
    for s in starts:
        argv += ["-c", f"write -q -s {pattern} {s * FS_BLOCK} {FS_BLOCK}"]
    run_quiet(argv + [str(qcow)])
    qinfo = json.loads(run_quiet(["qemu-img", "info", "--output=json", str(qcow)]).stdout)
    bitmaps = qinfo.get("format-specific", {}).get("data", {}).get("bitmaps", [])
    gran = next((b.get("granularity") for b in bitmaps if b.get("name") == BITMAP), None)
    if not gran:
        raise BenchError(f"qemu-img info {qcow}: no bitmap {BITMAP}: {bitmaps}")
    ctx["nbd"] = {"starts": starts, "written": len(starts) * FS_BLOCK, "granularity": gran,
                  "granules": chunks_touched(starts, 1, gran), "seed": args.seed + 3}
    log(f"qemu-io: {len(starts)} scattered 4 KiB writes; bitmap granularity {gran // 1024} KiB, "
        f"{ctx['nbd']['granules']} granules dirty")
    nbd = QemuNbd(qcow, sock, logs, bitmap=BITMAP)
    try:
        abri.edit_plan("image", enabled=True, selections=[nbd.uri(BITMAP)])
        backup("abri", "nbd-bitmap", len(starts) * FS_BLOCK)
        abri.edit_plan("image", enabled=True, selections=[nbd.uri()])
        backup("abri", "nbd-full", 0)
    finally:
        nbd.stop()
    # The bitmap run's snapshot must restore to the disk as it now is (used blocks).
    m = ctx["results"]["abri"].get("nbd-bitmap")
    if m is not None and m.ok and m.report:
        raw = work / "vm.raw"
        run_quiet(["qemu-img", "convert", "-O", "raw", str(qcow), str(raw)])
        out = work / "vm-restored.raw"
        run_quiet([str(AGENT), "--config", str(abri.config), "--json", "restore-image",
                   m.report["snapshot"]["id"], "--to", str(out)])
        used_diff, free_dirty = compare_used(raw, out, ext4_info(raw).free)
        fsck = subprocess.run([system_tool("e2fsck"), "-fn", str(out)], capture_output=True)
        good = used_diff == 0 and free_dirty == 0 and fsck.returncode == 0
        ctx["nbd"]["verified"] = good
        m.note += ("; its restore: e2fsck clean, used blocks equal to the disk" if good else
                   f"; its restore DIFFERS: {used_diff} B in used blocks, {free_dirty} B "
                   f"non-zero in free blocks, e2fsck rc {fsck.returncode}")
        m.ok = good
        for f in (raw, out):
            f.unlink(missing_ok=True)


def image_targets(ctx: dict) -> list[tuple[str, str, str]]:
    """(target, detail, verdict) for each image target of issue 4; exact values."""
    res = ctx["results"]
    a, r = res.get("abri", {}), res.get("restic", {})
    if not a or not r:
        return [("all targets", "need both abri and restic results", "not measured")]
    out = []
    for key, label in IMAGE_STEPS:
        if key in a and key in r and a[key].ok and r[key].ok:
            lim = r[key].wall / 2
            out.append((f"{label}: wall ≤ ½ restic's",
                        f"{a[key].wall:.2f} s vs limit {lim:.2f} s (restic {r[key].wall:.2f} s; "
                        f"{a[key].wall / r[key].wall:.2f}× restic)",
                        "met" if a[key].wall <= lim else "not met"))
        else:
            out.append((f"{label}: wall ≤ ½ restic's", "step failed", "not met"))
    for key in IMAGE_BACKUPS:
        if key in a and key in r and a[key].repo_alloc is not None and r[key].repo_alloc is not None:
            out.append((f"stored size after {IMAGE_STEP_NAME[key]} ≤ restic's (du)",
                        f"{fmt_mib(a[key].repo_alloc)} MiB vs {fmt_mib(r[key].repo_alloc)} MiB",
                        "met" if a[key].repo_alloc <= r[key].repo_alloc else "not met"))
    k = "scattered"
    if k in a and k in r and a[k].growth_alloc is not None and r[k].growth_alloc is not None:
        lim = r[k].growth_alloc / 2
        out.append(("growth after scattered 4 KiB ≤ ½ restic's",
                    f"{fmt_mib(a[k].growth_alloc)} MiB vs limit {fmt_mib(int(lim))} MiB "
                    f"(restic {fmt_mib(r[k].growth_alloc)} MiB)",
                    "met" if a[k].growth_alloc <= lim else "not met"))
    else:
        out.append(("growth after scattered 4 KiB ≤ ½ restic's", "step failed", "not met"))
    nb = ctx.get("nbd") or {}
    m = a.get("nbd-bitmap")
    if nb and m is not None and m.report:
        read = m.report.get("bytes_read", 0)
        chunk = m.report["snapshot"]["images"][0]["chunk_size"]
        gran = nb["granularity"]
        # the agent reads whole chunk slots: the dirty granules rounded out to chunks
        step = max(chunk, gran)
        lim = chunks_touched(nb["starts"], 1, step) * step
        out.append(("dirty-bitmap re-run reads only the changed blocks",
                    f"{read / MIB:.2f} MiB read; {nb['written'] / MIB:.2f} MiB written in "
                    f"{len(nb['starts'])} blocks, {nb['granules']} dirty {gran // 1024} KiB "
                    f"granules = {lim / MIB:.2f} MiB of {step // 1024} KiB slots",
                    "met" if m.ok and read <= lim else "not met"))
    elif not ctx.get("nbd"):
        out.append(("dirty-bitmap re-run reads only the changed blocks", "not run", "not measured"))
    return out


def render_image(ctx: dict) -> str:
    res, L = ctx["results"], []
    mi, ve, im = ctx["machine"], ctx["versions"], ctx["image"]
    info: Ext4Info = im["ext4"]
    size = im["size"]
    quick = size < 2 * 2**30
    L.append(f"## Image mode: run of {ctx['date']}"
             + (" (quick run, smaller than the issue's ~2 GiB)" if quick else ""))
    L.append("")
    L.append(f"- machine: {mi['nproc']} CPUs ({mi['cpu']}), {mi['mem'] / 2**30:.1f} GiB RAM, "
             f"scratch disk {mi['disk']}, kernel {mi['kernel']}")
    if mi.get("repo_fs"):
        L.append(f"- repositories (Abri's box state, restic's and borg's repositories): on "
                 f"{mi['repo_fs']}; restores: on {mi['client_fs']}; data and client "
                 "caches on the scratch disk")
    L.append(f"- load average (1 min) at start {ctx['load_start']}, at end {ctx['load_end']}"
             " (other work on the machine shares its CPUs; the load at the start of each step "
             "is in the table)")
    L.append(f"- versions: {ve['restic']}; {ve['borg']}; abri {ve['abri']} ({ve['rustc']}, "
             "release profile); qemu-nbd/qemu-io from "
             + subprocess.run(["qemu-img", "--version"], capture_output=True,
                              text=True).stdout.splitlines()[0])
    ds = im["tree"]
    holes = size - im["allocated"]
    L.append(f"- image: {size / MIB:,.0f} MiB ext4 file, 4 KiB blocks, made with `mke2fs -t ext4 "
             f"-b 4096 -d TREE` from {ds.bytes / MIB:,.0f} MiB in {ds.files:,} files sampled from "
             f"{', '.join(ctx['sources'])} (`--image-size-gb {ctx['size_gb']}`); then "
             f"{im['removed']:,} files ({im['removed_bytes'] / MIB:,.0f} MiB) removed inside it "
             f"with `debugfs -w rm` (seed {ctx['seed']})"
             + ("; e2fsck -fy had to repair it after that" if im["fsck_fixed"] else
                "; e2fsck -fn clean after that"))
    L.append(f"- file system: {info.used_bytes / MIB:,.1f} MiB in used blocks, "
             f"{info.free_bytes / MIB:,.1f} MiB free, of which {im['free_nonzero'] / MIB:,.1f} "
             f"MiB non-zero (the removed files' data, which restic and borg store and Abri does "
             f"not); the sparse image file allocates {im['allocated'] / MIB:,.1f} MiB "
             f"({holes / MIB:,.1f} MiB of holes never written)")
    chunk = ctx["store_chunk"]
    for key, what in (("extents", "64 KiB runs (16 contiguous blocks)"),
                      ("scattered", "scattered single 4 KiB blocks")):
        ch = ctx["changes"].get(key)
        if not ch:
            continue
        blocks = len(ch["starts"]) * ch["run_blocks"]
        L.append(f"- change `{key}` (seed {ch['seed']}): {len(ch['starts']):,} {what} "
                 f"rewritten in place with random bytes inside file data = "
                 f"{ch['written'] / MIB:,.2f} MiB, {blocks / (size // FS_BLOCK):.2%} of the "
                 f"image's blocks ({blocks * FS_BLOCK / info.used_bytes:.2%} of the used ones); "
                 f"starts at any 4 KiB block, so they touch "
                 f"{chunks_touched(ch['starts'], ch['run_blocks'], chunk):,} image chunks of "
                 f"{chunk // 1024} KiB")
    L.append("- page cache: warm for the backups (the image was just written), every tool "
             "reading the same file in the same state; `sync` before every step; "
             + ("emptied before every restore (`drop_caches`)" if COLD_RESTORES["all"] else
                "**not** emptied before the restores (not root?)"))
    L.append(restore_runs_line(ctx))
    L.append("- compression: restic `auto` (zstd); borg `zstd,3` with its default chunker "
             "(buzhash, ~2 MiB chunks); Abri zstd level 1 (`IMAGE_ZSTD_LEVEL`) on fixed "
             f"{chunk // 1024} KiB chunks")
    L.append(f"- encryption: restic AES-256/Poly1305; borg `{ctx['borg_enc']}`; Abri HTTPS on "
             "loopback, keyed BLAKE3 chunk digests")
    L.append("- restore: Abri `restore-image` writes a sparse file; borg `extract --sparse`; "
             "restic 0.14 writes every byte (it has no sparse restore)")
    L.append("")
    L.append("| step | tool | wall s | MiB/s | client CPU s | box CPU s | client peak RSS MiB | "
             "box peak RSS MiB | stored MiB (du) | growth MiB (du) | growth ÷ written | load | "
             "notes |")
    L.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
    rows = [(k, lbl, ctx["tools"]) for k, lbl in IMAGE_STEPS]
    if ctx.get("nbd"):
        rows += [(k, lbl, ["abri"]) for k, lbl in NBD_STEPS]
    for key, label, tools in rows:
        for tool in tools:
            m = res.get(tool, {}).get(key)
            if m is None:
                L.append(f"| {label} | {tool} | failed or not run | | | | | | | | | | |")
                continue
            thr = m.data_bytes / MIB / m.wall if m.wall else 0
            box_cpu = "—" if m.box_cpu is None else f"{m.box_cpu:.2f}"
            box_rss = "—" if m.box_rss is None else fmt_mib(m.box_rss) + ("" if m.box_rss_exact else "*")
            growth = "—" if m.growth_alloc is None else fmt_mib(m.growth_alloc)
            ratio = ("—" if m.growth_alloc is None or not m.written
                     else f"{m.growth_alloc / m.written:.1f}×")
            note = m.note.replace("|", "/")
            if not m.ok:
                note = "**FAILED** " + note
            L.append(f"| {label} | {tool} | {m.wall:.2f} | {thr:,.1f} | {m.cpu:.2f} | {box_cpu} | "
                     f"{m.rss / MIB:.1f} | {box_rss} | {fmt_mib(m.repo_alloc)} | {growth} | "
                     f"{ratio} | {m.load} | {note} |")
    L.append("")
    L.append("Throughput = image size / wall time. Stored = Abri's `STATE/store`, restic's and "
             "borg's repository directory, after the step (allocated bytes); growth = stored "
             "after the step minus stored before it (the first backup's growth counts from the "
             "freshly initialised repository); growth ÷ written = growth / bytes the change "
             "rewrote. Client and box columns as in the file-mode table. Abri's restore is "
             "checked with `e2fsck -fn` and by comparing it with the source block by block: "
             "every used block must be equal and every free block zero — **the bytes in free "
             "blocks differ from the source by design**: Abri does not keep free blocks "
             "(the removed files' data above), so its restore is not byte-identical to the "
             "source file, while restic's and borg's must be and are compared with the source "
             "byte for byte.")
    if ctx.get("nbd"):
        nb = ctx["nbd"]
        L.append("")
        L.append(f"NBD steps (Abri only; restic and borg have no changed-block tracking): the "
                 f"image (as changed above) converted with `qemu-img convert -O qcow2` and "
                 f"served by `qemu-nbd --read-only --shared 4 --export-name {NBD_EXPORT}` on a "
                 f"Unix socket. After the first backup of the export, `qemu-img bitmap --add "
                 f"--enable vm.qcow2 {BITMAP}` (granularity {nb['granularity'] // 1024} KiB), "
                 f"then `qemu-io` wrote {len(nb['starts']):,} scattered 4 KiB blocks of file "
                 f"data (seed {nb['seed']}, {nb['written'] / MIB:.2f} MiB, {nb['granules']:,} "
                 f"dirty granules), and qemu-nbd served the bitmap (`-B {BITMAP}`) for "
                 f"`nbd+unix:///{NBD_EXPORT}?socket=PATH&bitmap={BITMAP}`. The last row backs "
                 "up the same data without the bitmap, for comparison. The export's image has a new "
                 "name (the export's), so its first backup has no previous image to compare "
                 "with: it reads every used block, but its chunks are already on the box from "
                 "the image-file backups, so the box stores next to nothing. The bitmap run's "
                 "snapshot was restored and compared with the disk (used blocks) — see its note. "
                 "qemu-nbd's own CPU is not counted.")
    if ctx.get("abri_state"):
        a_alloc, a_app = ctx["abri_state"]
        L.append("")
        L.append(f"Abri's whole state directory (store + LMDB + TLS) at the end: "
                 f"{fmt_mib(a_alloc)} MiB du, {fmt_mib(a_app)} MiB apparent.")
    L.append("")
    L.append("### Chunk size: what the measured growth says")
    L.append("")
    L.extend(chunk_model(ctx))
    L.append("")
    L.append("### Image-mode targets (issue 4, on 2 cores)")
    L.append("")
    L.append("| target | measured | verdict |")
    L.append("|---|---|---|")
    for t, d, v in image_targets(ctx):
        L.append(f"| {t} | {d} | **{v}** |")
    L.append("")
    L.append("### Image-mode commands")
    L.append("")
    L.append("```")
    L.append(f"mke2fs -q -F -t ext4 -b 4096 -L abri-bench -d TREE IMAGE {size // 1024}k")
    L.append("debugfs -w -f RM_COMMANDS IMAGE   # rm /PATH per removed file")
    for tool in ctx["tools"]:
        for c in ctx["commands"].get(tool, []):
            L.append(c)
    if ctx.get("nbd"):
        L.append("qemu-img convert -O qcow2 IMAGE vm.qcow2")
        L.append(f"qemu-nbd --socket SOCK --export-name {NBD_EXPORT} --format qcow2 --read-only "
                 "--persistent --shared 4 vm.qcow2")
        L.append(f"qemu-img bitmap --add --enable vm.qcow2 {BITMAP}")
        L.append("qemu-io -f qcow2 -c 'write -q -s PATTERN OFFSET 4096' ... vm.qcow2")
        L.append(f"qemu-nbd ... --bitmap {BITMAP} vm.qcow2   # plan selection "
                 f"nbd+unix:///{NBD_EXPORT}?socket=SOCK&bitmap={BITMAP}")
    L.append("```")
    L.append("")
    L.append(f"Run with: `{ctx['argv']}`. Logs of every step: `{ctx['logs']}`.")
    L.append("")
    return "\n".join(L)


def chunk_model(ctx: dict) -> list[str]:
    """Chunks touched by the measured changes at other chunk sizes. Only 64 KiB is measured
    (the store's chunk size is a constant); the other rows are computed from the same write
    offsets, scaled by the compression Abri achieved at 64 KiB."""
    L: list[str] = []
    a = ctx["results"].get("abri", {})
    chunk = ctx["store_chunk"]
    used = ctx["image"]["ext4"].used_bytes
    ch = ctx["changes"]
    if "scattered" not in ch or "extents" not in ch:
        return ["Not computed: a change step did not run."]
    touched = {k: {c: chunks_touched(ch[k]["starts"], ch[k]["run_blocks"], c * 1024)
                   for c in CHUNK_MODEL_KIB} for k in ("extents", "scattered")}
    factor = {}
    for k in ("extents", "scattered"):
        m = a.get(k)
        raw = touched[k][chunk // 1024] * chunk
        factor[k] = (m.growth_alloc / raw) if m and m.ok and m.growth_alloc and raw else None
    L.append(f"Only the store's chunk size ({chunk // 1024} KiB, `CHUNK_BYTES` in "
             "appliance/store/src/image.rs) is measured; it is a compile-time constant, so "
             "other sizes are not run. The rows below count, from the same write offsets, the "
             "chunks each change touches at other sizes; the modelled growth is touched × "
             "chunk size × the stored/raw ratio Abri measured at "
             f"{chunk // 1024} KiB for that change "
             + ", ".join(f"`{k}` {factor[k]:.2f}" for k in factor if factor[k] is not None)
             + " (compression of the unchanged part of each chunk, plus the catalog). Index "
             "entries = used bytes / chunk size (one digest per non-zero chunk).")
    L.append("")
    L.append("| chunk KiB | index entries | `extents`: chunks touched | modelled growth MiB | "
             "÷ written | `scattered`: chunks touched | modelled growth MiB | ÷ written |")
    L.append("|--:|--:|--:|--:|--:|--:|--:|--:|")
    for c in CHUNK_MODEL_KIB:
        cells = [f"{c}{' (measured)' if c * 1024 == chunk else ''}", f"{used // (c * 1024):,}"]
        for k in ("extents", "scattered"):
            n = touched[k][c]
            if c * 1024 == chunk and a.get(k) and a[k].growth_alloc is not None:
                g = a[k].growth_alloc
            elif factor[k] is not None:
                g = n * c * 1024 * factor[k]
            else:
                g = None
            cells += [f"{n:,}", "—" if g is None else f"{g / MIB:,.1f}",
                      "—" if g is None else f"{g / ch[k]['written']:.1f}×"]
        L.append("| " + " | ".join(cells) + " |")
    r = ctx["results"].get("restic", {}).get("scattered")
    if r is not None and r.growth_alloc is not None:
        L.append("")
        L.append(f"For comparison, restic grew {fmt_mib(r.growth_alloc)} MiB "
                 f"({r.growth_alloc / ch['scattered']['written']:.1f}× written) after the "
                 "scattered change: its content-defined chunks average ~1 MiB.")
    return L


# --- BENCHMARKS.md ---------------------------------------------------------------------------------

INTRO = ("Written by `make bench` (`bench/run.py`); rerun it to refresh this file (a run of one "
         "scenario replaces only its section). Every number below comes from one run on one "
         "machine; nothing is rounded in Abri's favour, and the targets of issue 3 (file mode) "
         "and issue 4 (image mode) are judged on the exact values.")


def write_section(out: Path, key: str, text: str) -> None:
    """Replaces the section `key` of BENCHMARKS.md (between <!-- bench:KEY --> markers),
    keeping the others. A file written before the markers existed is taken as the file-mode
    section."""
    sections: dict[str, str] = {}
    if out.is_file():
        old = out.read_text()
        found = re.findall(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->", old, re.S)
        if found:
            sections = {k: v.rstrip() + "\n" for k, v in found}
        elif "\n## " in old:
            body = old[old.index("\n## ") + 1:]
            body = body.replace("## Run of", "## File mode: run of", 1)
            body = body.replace("### Targets (issue 3", "### File-mode targets (issue 3", 1)
            body = body.replace("### Commands", "### File-mode commands", 1)
            sections["files"] = body.rstrip() + "\n"
    sections[key] = text.rstrip() + "\n"
    parts = ["# Benchmarks", "", INTRO, ""]
    for k in ("files", "image", *sorted(set(sections) - {"files", "image"})):
        if k in sections:
            parts += [f"<!-- bench:{k} -->", sections[k] + f"<!-- /bench:{k} -->", ""]
    out.write_text("\n".join(parts))


# --- the file scenario -------------------------------------------------------------------------

def run_files(args, tools: list[str], sources: list[Path], scratch: Path,
              logs: Path) -> tuple[str, list[str]]:
    """The file scenario; returns its BENCHMARKS.md section and the failed steps."""
    cap = int(args.size_gb * 1e9)
    argv = "python3 bench/run.py " + " ".join(sys.argv[1:])
    data = scratch / "data"
    data.mkdir(parents=True)
    load_start = Path("/proc/loadavg").read_text().split()[0]

    log(f"gathering ~{args.size_gb} GB from {', '.join(map(str, sources))} into {data}")
    t0 = time.monotonic()
    ds = gather(sources, data, cap)
    log(f"data: {ds.bytes / MIB:.1f} MiB, {ds.files} files, {ds.dirs} dirs, "
        f"{ds.symlinks} symlinks ({time.monotonic() - t0:.0f} s)")
    full_verify = args.verify == "full" or (args.verify == "auto" and ds.bytes < 1e9)

    classes = {"abri": Abri, "restic": Restic, "borg": Borg}
    objs: dict[str, Tool] = {}
    for t in tools:
        w = scratch / t
        w.mkdir()
        box = args.box_root / "files" / t if args.box_root else None
        objs[t] = (Borg(w, data, logs, encryption=args.borg_encryption, box=box)
                   if t == "borg" else classes[t](w, data, logs, box=box))
    results: dict[str, dict[str, Measure]] = {t: {} for t in tools}
    ctx = {"results": results, "tools": tools, "size_gb": args.size_gb, "seed": args.seed,
           "restore_runs": args.restore_runs,
           "sources": [str(s) for s in sources], "data_stats": ds, "argv": argv,
           "logs": str(logs), "borg_enc": args.borg_encryption,
           "commands": {t: o.commands for t, o in objs.items()}}

    def measure_backup(t: str, step: str, size: int) -> None:
        o = objs[t]
        m = measured(o, STEP_NAME[step], lambda: o.backup(step))
        if m.ok:
            m.data_bytes = size
            m.repo_alloc, m.repo_apparent = disk_usage(o.repo())
            log(f"{t}: {STEP_NAME[step]}: {m.wall:.2f} s, cpu {m.cpu:.2f} s, rss "
                f"{m.rss / MIB:.1f} MiB, repo {m.repo_alloc / MIB:.1f} MiB {m.note}")
        results[t][step] = m

    for t in tools:
        log(f"{t}: setup")
        objs[t].setup()
    for t in tools:
        measure_backup(t, "first", ds.bytes)
        measure_backup(t, "unchanged", ds.bytes)

    log(f"changing ~{args.change_pct} % of the files (seed {args.seed})")
    ctx["change"] = modify(data, args.change_pct, args.seed)
    after = tree_stats(data)
    ctx["data_after"] = after
    log(f"change: {ctx['change']}")

    hashes: dict[str, str] = {}
    for t in tools:
        measure_backup(t, "changed", after.bytes)
    def restore_one(t: str, is_last: bool) -> Measure:
        o = objs[t]
        target = (args.client_root / "files" if args.client_root else scratch / "restore") / t
        fresh_dir(target)
        m = measured(o, "full restore", lambda: o.restore(target), cold=True)
        if m.ok:
            m.data_bytes = after.bytes
            ok, summary = verify(data, target / data.relative_to("/"), full_verify,
                                 args.seed, hashes)
            m.ok = ok
            m.note = ("verified: " if ok else "verify FAILED: ") + summary
        if not (args.keep and is_last):
            t1 = time.monotonic()
            shutil.rmtree(target, ignore_errors=True)
            log(f"removed {target} ({time.monotonic() - t1:.0f} s)")
        return m

    for t, m in repeated_restores(tools, args.restore_runs, restore_one).items():
        results[t]["restore"] = m
    if "abri" in objs:
        ctx["abri_state"] = disk_usage(objs["abri"].state)
    for o in objs.values():
        o.stop()

    ctx["date"] = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    ctx["machine"] = machine_info(scratch)
    ctx["machine"]["repo_fs"] = args.repo_fs_note
    ctx["machine"]["client_fs"] = args.client_fs_note
    ctx["versions"] = versions()
    ctx["load_start"] = load_start
    ctx["load_end"] = Path("/proc/loadavg").read_text().split()[0]
    section = render(ctx)
    if not args.keep:
        for d in ["data", "restore", *tools]:
            shutil.rmtree(scratch / d, ignore_errors=True)
        if args.box_root:
            shutil.rmtree(args.box_root / "files", ignore_errors=True)
        log(f"removed the file scenario's data and repositories; logs stay in {logs}")
    failed = [f"files {t} {s}" for t in tools for s, _ in STEPS
              if s not in results[t] or not results[t][s].ok]
    return section, failed


# --- main --------------------------------------------------------------------------------------

def ensure_tools(image: bool) -> None:
    wanted = [("restic", "restic"), ("borgbackup", "borg"), ("time", TIME)]
    if image:
        wanted += [("e2fsprogs", exe) for exe in ("mke2fs", "debugfs", "dumpe2fs", "e2fsck")]
        wanted += [("qemu-utils", exe) for exe in ("qemu-img", "qemu-nbd", "qemu-io")]
    need = sorted({pkg for pkg, exe in wanted
                   if not (shutil.which(exe) or shutil.which(exe, path="/usr/sbin:/sbin"))})
    if need:
        if os.geteuid() != 0:
            raise BenchError(f"missing {', '.join(need)}: apt-get install {' '.join(need)} (as root)")
        log(f"installing {' '.join(need)} from Debian")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", *need], env=env).returncode != 0:
            run_quiet(["apt-get", "update"], env=env)
            run_quiet(["apt-get", "install", "-y", *need], env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", choices=("all", "files", "image"), default="all",
                    help="which scenario to run (default: both)")
    ap.add_argument("--scratch", type=Path,
                    default=Path(os.environ.get("ABRI_BENCH_DIR", "/var/tmp/abri-bench")),
                    help="scratch directory (data, repositories, restores, logs); "
                         "default /var/tmp/abri-bench or $ABRI_BENCH_DIR")
    ap.add_argument("--size-gb", type=float, default=3.0,
                    help="file scenario: data set size in GB (10^9 bytes), default 3")
    ap.add_argument("--source", action="append", type=Path,
                    help="source directory (repeatable); default /usr/lib /usr/share /usr/include")
    ap.add_argument("--change-pct", type=float, default=1.0,
                    help="file scenario: share of files changed, %%")
    ap.add_argument("--image-size-gb", type=float, default=2.0,
                    help="image scenario: image size in GiB (2^30 bytes), default 2")
    ap.add_argument("--image-fill-pct", type=float, default=70.0,
                    help="image scenario: files copied in, %% of the image size (default 70)")
    ap.add_argument("--image-delete-pct", type=float, default=35.0,
                    help="image scenario: share of those files' bytes removed inside the "
                         "image, %% (default 35)")
    ap.add_argument("--image-change-pct", type=float, default=1.0,
                    help="image scenario: blocks rewritten per change, %% of the image's blocks")
    ap.add_argument("--no-nbd", action="store_true",
                    help="image scenario: skip the qcow2/qemu-nbd dirty-bitmap steps")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--restore-runs", type=int, default=3,
                    help="restores per tool and scenario, the tools taking turns; the table "
                         "shows each tool's run of median wall time (default 3)")
    ap.add_argument("--tools", default="abri,restic,borg")
    ap.add_argument("--borg-encryption", default="repokey-blake2",
                    help="borg init -e MODE (default repokey-blake2; `none` for none)")
    ap.add_argument("--verify", choices=("auto", "full", "sample"), default="auto",
                    help="file scenario: content check of restores: all files, a sample, or "
                         "auto (all when the data is under 1 GB)")
    ap.add_argument("--repo-fs", choices=("auto", "box", "scratch"), default="auto",
                    help="where the repositories live: `box`, an ext4 made as the box makes "
                         "its data partition, on a loop device; `scratch`, the scratch "
                         "directory; `auto` (default), box when possible (root, loop devices)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    ap.add_argument("--keep", action="store_true",
                    help="keep data, repositories and restores (logs are always kept)")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    if args.restore_runs < 1:
        ap.error("--restore-runs: at least 1")

    signal.signal(signal.SIGINT, on_signal)  # also when started in the background
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in ("abri", "restic", "borg"):
            ap.error(f"unknown tool {t}")
    if args.image_size_gb < 0.25 and args.scenario != "files":
        ap.error("--image-size-gb must be at least 0.25")
    if not 0 < args.image_delete_pct < 100 or not 10 <= args.image_fill_pct <= 85:
        ap.error("--image-delete-pct must be in (0, 100) and --image-fill-pct in [10, 85]")
    sources = [s.resolve() for s in (args.source or [Path("/usr/lib"), Path("/usr/share"),
                                                      Path("/usr/include")])]
    scratch = args.scratch.resolve()
    if scratch == Path("/") or str(scratch) in ("/var/tmp", "/tmp", str(Path.home())):
        ap.error("--scratch must be a directory of its own (it is wiped)")
    scenarios = ["files", "image"] if args.scenario == "all" else [args.scenario]
    args.box_root = None
    args.client_root = None
    args.repo_fs_note = args.client_fs_note = ""
    loopfs: list[LoopFs] = []

    try:
        ensure_tools("image" in scenarios)
        if not args.no_build:
            log("building release binaries")
            subprocess.run(["cargo", "build", "--release", "-p", "abrid", "-p", "abri-agent",
                            "-p", "abri-provision"], cwd=ROOT, check=True)
        for b in (ABRID, AGENT, PROVISION):
            if not os.access(b, os.X_OK):
                raise BenchError(f"missing {b}")

        # Fresh scratch: only what a previous run of this script left there.
        marker = scratch / ".abri-bench"
        if scratch.exists() and any(scratch.iterdir()):
            if not marker.is_file():
                raise BenchError(f"{scratch} is not empty and was not made by this script "
                                 "(no .abri-bench marker): give another --scratch")
            log(f"clearing {scratch}")
            LoopFs.clear_stale(scratch)
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        marker.write_text("scratch directory of bench/run.py; wiped at every run\n")
        logs = scratch / "logs"
        logs.mkdir(parents=True)
        why_not = LoopFs.possible() if args.repo_fs != "scratch" else "--repo-fs scratch"
        if args.repo_fs == "box" and why_not:
            raise BenchError(f"--repo-fs box: {why_not}")
        if not why_not:
            # Room for every tool's repositories (restores) of both scenarios, with a margin.
            need = max(4 * GIB, int(4 * (args.size_gb * 1e9 + args.image_size_gb * GIB)))
            box = LoopFs(scratch, "box", BOX_MKFS, need // GIB * GIB)
            loopfs.append(box)
            client = LoopFs(scratch, "client", CLIENT_MKFS, need // GIB * GIB)
            loopfs.append(client)
            args.box_root, args.client_root = box.mnt, client.mnt
            args.repo_fs_note, args.client_fs_note = box.describe, client.describe
            log(f"repositories on {box.loop} at {box.mnt}: {box.describe}")
            log(f"restores on {client.loop} at {client.mnt}: {client.describe}")
        else:
            args.repo_fs_note = args.client_fs_note = (
                f"the scratch directory (no file system of their own: {why_not})")
            log(f"repositories and restores in the scratch directory: {why_not}")

        failed: list[str] = []
        for sc in scenarios:
            log(f"=== {sc} scenario ===")
            run = run_files if sc == "files" else run_image
            section, bad = run(args, tools, sources, scratch, logs)
            failed += bad
            write_section(args.out, sc, section)
            print()
            print(section)
            log(f"wrote the {sc} section of {args.out}")
        if failed:
            log("FAILED steps: " + ", ".join(failed))
            return 1
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    except (BenchError, subprocess.CalledProcessError) as e:
        log(f"error: {e}")
        return 1
    finally:
        end_all()
        for fs in loopfs:
            fs.close()


if __name__ == "__main__":
    sys.exit(main())
