#!/usr/bin/env python3
"""`make bench`: Abri (abri-agent -> abrid over HTTPS on loopback) against restic and borg on
the same real data, on the same machine, in one run. Not a test: it measures and reports.

Steps, for every tool, on the same data:
  1. first backup          (data as gathered)
  2. unchanged re-run      (same data)
  3. re-run after change   (~1 % of the files rewritten in part, added, removed; seeded)
  4. full restore          (latest snapshot into an empty directory, then verified)

Measured per step: wall time, throughput (data size / wall), CPU time (user+sys) and peak RSS
of the client process (abri-agent / restic / borg, through /usr/bin/time), for Abri also the
box's CPU time and peak RSS (VmHWM of abrid, reset before each step through
/proc/PID/clear_refs), and the repository size after each backup.

Python 3 standard library only. See bench/README.md; results go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.cookiejar
import json
import os
import platform
import random
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
RELEASE = ROOT / "target" / "release"
ABRID = RELEASE / "abrid"
AGENT = RELEASE / "abri-agent"
PROVISION = RELEASE / "abri-provision"
TIME = "/usr/bin/time"
MIB = 1024 * 1024
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

    def __init__(self, work: Path, data: Path, logs: Path):
        self.work = work
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

    def __init__(self, *a):
        super().__init__(*a)
        self.env = dict(os.environ, RESTIC_REPOSITORY=str(self.work / "repo"),
                        RESTIC_PASSWORD_FILE=str(self.work / "password"),
                        RESTIC_CACHE_DIR=str(self.work / "cache"))
        self.commands = [
            "restic init --repository-version 2   # compression: auto (restic's default)",
            "restic backup --host bench DATA",
            "restic restore latest --target RESTORE",
        ]

    def repo(self) -> Path:
        return self.work / "repo"

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

    def __init__(self, *a, encryption: str = "repokey-blake2"):
        super().__init__(*a)
        self.encryption = encryption
        self.env = dict(os.environ, BORG_REPO=str(self.work / "repo"),
                        BORG_PASSPHRASE=BORG_PASSPHRASE, BORG_BASE_DIR=str(self.work / "home"),
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
                        BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        self.commands = [
            f"borg init -e {encryption}   # BORG_PASSPHRASE in the environment",
            "borg create -C zstd,3 ::STEP DATA",
            "cd RESTORE && borg extract ::changed",
        ]
        self.last = ""

    def repo(self) -> Path:
        return self.work / "repo"

    def setup(self) -> None:
        run_quiet(["borg", "init", "-e", self.encryption], env=self.env)

    def backup(self, step: str) -> Measure:
        self.last = step
        return run_measured(f"borg-{step}", ["borg", "create", "-C", "zstd,3", f"::{step}",
                                             str(self.data)], self.logs, env=self.env)

    def restore(self, target: Path) -> Measure:
        return run_measured("borg-restore", ["borg", "extract", f"::{self.last}"], self.logs,
                            env=self.env, cwd=target)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Abri(Tool):
    name = "abri"
    client = "abri-agent"

    def __init__(self, *a):
        super().__init__(*a)
        self.state = self.work / "state"
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
            "PUT /api/v1/plans/files {selections: [DATA], excludes: []}",
            "abri-agent --config CONFIG enroll --box https://127.0.0.1:PORT --token T "
            "--fingerprint FP --state-dir AGENT_STATE",
            "abri-agent --config CONFIG --json backup --now",
            "abri-agent --config CONFIG --json restore latest --to RESTORE",
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
        plan = self._api("GET", "plans/files")
        plan = {k: v for k, v in plan.items() if k not in ("id", "kind")}
        plan["selections"] = [str(self.data)]
        plan["excludes"] = []
        self._api("PUT", "plans/files", plan)
        run_quiet([str(AGENT), "--config", str(self.config), "enroll", "--box", self.base,
                   "--token", token, "--fingerprint", fp, "--state-dir",
                   str(self.work / "agent-state")])

    def backup(self, step: str) -> Measure:
        m = run_measured(f"abri-{step}", [str(AGENT), "--config", str(self.config), "--json",
                                          "backup", "--now"], self.logs)
        try:
            rep = json.loads(m.stdout)
            s = rep["stats"]
            m.note = (f"{s['files']} files, {s['reused_files']} not re-read, "
                      f"{s['new_bytes'] / MIB:.1f} MiB new in {s['new_chunks']} chunks; "
                      f"{rep.get('bytes_read', 0) / MIB:.1f} MiB read")
        except (ValueError, KeyError) as e:
            m.note = f"(report not parsed: {e})"
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
    dirty = out(["git", "status", "--porcelain", "--untracked-files=no"])
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


def render(ctx: dict) -> str:
    res, L = ctx["results"], []
    mi, ve, ds = ctx["machine"], ctx["versions"], ctx["data_stats"]
    L.append("# Benchmarks")
    L.append("")
    L.append("Written by `make bench` (`bench/run.py`); rerun it to refresh this file. "
             "Every number below comes from one run on one machine; nothing is rounded in "
             "Abri's favour, and the targets of issue 3 are judged on the exact values.")
    L.append("")
    quick = ctx["size_gb"] < 3
    L.append(f"## Run of {ctx['date']}" + (" (quick run, smaller than the issue's ~3 GB)" if quick else ""))
    L.append("")
    L.append(f"- machine: {mi['nproc']} CPUs ({mi['cpu']}), {mi['mem'] / 2**30:.1f} GiB RAM, "
             f"scratch disk {mi['disk']}, kernel {mi['kernel']}")
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
    L.append(f"- page cache: warm (data copied just before; caches not dropped); every tool "
             "reads the same tree in the same state")
    L.append("- compression: restic `auto` (its default, zstd, repository version 2); borg "
             "`zstd,3`; Abri zstd level 3 (`ZSTD_LEVEL`, stored compressed only when smaller)")
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
    L.append("### Targets (issue 3, on 2 cores)")
    L.append("")
    L.append("| target | measured | verdict |")
    L.append("|---|---|---|")
    for t, d, v in targets(res):
        L.append(f"| {t} | {d} | **{v}** |")
    L.append("")
    L.append("### Commands")
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


# --- main --------------------------------------------------------------------------------------

def ensure_tools() -> None:
    need = [pkg for pkg, exe in (("restic", "restic"), ("borgbackup", "borg"), ("time", TIME))
            if not shutil.which(exe)]
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
    ap.add_argument("--scratch", type=Path,
                    default=Path(os.environ.get("ABRI_BENCH_DIR", "/var/tmp/abri-bench")),
                    help="scratch directory (data, repositories, restores, logs); "
                         "default /var/tmp/abri-bench or $ABRI_BENCH_DIR")
    ap.add_argument("--size-gb", type=float, default=3.0,
                    help="data set size in GB (10^9 bytes), default 3")
    ap.add_argument("--source", action="append", type=Path,
                    help="source directory (repeatable); default /usr/lib /usr/share /usr/include")
    ap.add_argument("--change-pct", type=float, default=1.0, help="share of files changed, %%")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--tools", default="abri,restic,borg")
    ap.add_argument("--borg-encryption", default="repokey-blake2",
                    help="borg init -e MODE (default repokey-blake2; `none` for none)")
    ap.add_argument("--verify", choices=("auto", "full", "sample"), default="auto",
                    help="content check of restores: all files, a sample, or auto "
                         "(all when the data is under 1 GB)")
    ap.add_argument("--no-build", action="store_true", help="use the existing release binaries")
    ap.add_argument("--keep", action="store_true",
                    help="keep data, repositories and restores (logs are always kept)")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()

    signal.signal(signal.SIGINT, on_signal)  # also when started in the background
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    for t in tools:
        if t not in ("abri", "restic", "borg"):
            ap.error(f"unknown tool {t}")
    sources = [s.resolve() for s in (args.source or [Path("/usr/lib"), Path("/usr/share"),
                                                      Path("/usr/include")])]
    scratch = args.scratch.resolve()
    if scratch == Path("/") or str(scratch) in ("/var/tmp", "/tmp", str(Path.home())):
        ap.error("--scratch must be a directory of its own (it is wiped)")
    cap = int(args.size_gb * 1e9)
    argv = "python3 bench/run.py " + " ".join(sys.argv[1:])

    try:
        ensure_tools()
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
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        marker.write_text("scratch directory of bench/run.py; wiped at every run\n")
        data = scratch / "data"
        logs = scratch / "logs"
        for d in (data, logs):
            d.mkdir(parents=True)
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
            objs[t] = (Borg(w, data, logs, encryption=args.borg_encryption) if t == "borg"
                       else classes[t](w, data, logs))
        results: dict[str, dict[str, Measure]] = {t: {} for t in tools}
        ctx = {"results": results, "tools": tools, "size_gb": args.size_gb, "seed": args.seed,
               "sources": [str(s) for s in sources], "data_stats": ds, "argv": argv,
               "logs": str(logs), "borg_enc": args.borg_encryption,
               "commands": {t: o.commands for t, o in objs.items()}}

        def measure_backup(t: str, step: str, size: int) -> None:
            o = objs[t]
            mon = o.monitor()
            if mon:
                mon.start()
            log(f"{t}: {STEP_NAME[step]}")
            try:
                m = o.backup(step)
            except BenchError as e:
                log(f"{t}: {STEP_NAME[step]} FAILED: {e}")
                m = Measure(ok=False, note=str(e).splitlines()[0][:200])
                if mon:
                    mon.stop(Measure())
                results[t][step] = m
                return
            if mon:
                mon.stop(m)
            m.data_bytes = size
            m.repo_alloc, m.repo_apparent = disk_usage(o.repo())
            results[t][step] = m
            log(f"{t}: {STEP_NAME[step]}: {m.wall:.2f} s, cpu {m.cpu:.2f} s, rss "
                f"{m.rss / MIB:.1f} MiB, repo {m.repo_alloc / MIB:.1f} MiB {m.note}")

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
        for t in tools:
            o = objs[t]
            target = scratch / "restore" / t
            target.mkdir(parents=True)
            mon = o.monitor()
            if mon:
                mon.start()
            log(f"{t}: full restore")
            try:
                m = o.restore(target)
                if mon:
                    mon.stop(m)
                m.data_bytes = after.bytes
                ok, summary = verify(data, target / data.relative_to("/"), full_verify,
                                     args.seed, hashes)
                m.ok = ok
                m.note = ("verified: " if ok else "verify FAILED: ") + summary
            except BenchError as e:
                if mon:
                    mon.stop(Measure())
                m = Measure(ok=False, note=str(e).splitlines()[0][:200])
            results[t]["restore"] = m
            log(f"{t}: full restore: {m.wall:.2f} s, {m.note}")
            if not args.keep:
                t1 = time.monotonic()
                shutil.rmtree(target, ignore_errors=True)
                log(f"removed {target} ({time.monotonic() - t1:.0f} s)")
        if "abri" in objs:
            ctx["abri_state"] = disk_usage(objs["abri"].state)
        for o in objs.values():
            o.stop()

        ctx["date"] = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        ctx["machine"] = machine_info(scratch)
        ctx["versions"] = versions()
        ctx["load_start"] = load_start
        ctx["load_end"] = Path("/proc/loadavg").read_text().split()[0]
        report = render(ctx)
        args.out.write_text(report)
        print()
        print(report)
        log(f"wrote {args.out}")
        if not args.keep:
            for d in ["data", "restore", *tools]:
                shutil.rmtree(scratch / d, ignore_errors=True)
            log(f"removed data and repositories; logs stay in {logs}")
        failed = [f"{t} {s}" for t in tools for s, _ in STEPS
                  if s not in results[t] or not results[t][s].ok]
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


if __name__ == "__main__":
    sys.exit(main())
