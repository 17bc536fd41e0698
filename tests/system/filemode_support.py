"""Helpers for the file-mode system tests (tests/system/test_filemode_*.py): an enrolled
abri-agent driven as a real process, a generator of trees with every file kind, a
metadata-and-content scanner to compare a tree with its restore, the box's store checker,
and the byte formats of docs/formats.md (encoded chunks, keyed BLAKE3, postcard catalog
entries) to talk to the agent API directly."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
import requests

from conftest import HTTP_TIMEOUT, ROOT, ApiSession, Box

AGENT = ROOT / "target" / "debug" / "abri-agent"
AGENT_TIMEOUT = 180.0  # seconds for one agent command (backups of the bigger trees)
JOB_TIMEOUT = 120.0  # seconds for a job queued on the box to end


def require_agent() -> None:
    if not os.access(AGENT, os.X_OK):
        pytest.fail(f"missing binary {AGENT} (run `cargo build -p abri-agent` first)",
                    pytrace=False)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    """Calls `predicate` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# --- the box side ----------------------------------------------------------------------------

def edit_plan(api: ApiSession, plan_id: str, **changes) -> dict:
    r = api.get(f"plans/{plan_id}")
    assert r.status_code == 200, r.text
    body = {k: v for k, v in r.json().items() if k not in ("id", "kind")}
    body.update(changes)
    r = api.put(f"plans/{plan_id}", json=body)
    assert r.status_code == 200, f"PUT plans/{plan_id}: {r.status_code} {r.text}"
    return r.json()


def set_files_plan(api: ApiSession, selections: list[str], excludes: list[str] | None = None):
    return edit_plan(api, "files", selections=[str(s) for s in selections],
                     excludes=list(excludes or []))


def pause_image_plan(api: ApiSession) -> dict:
    """File-mode tests pause the default image plan: its default source is this machine's
    system disk, which no test may image."""
    return edit_plan(api, "image", enabled=False)


def enrolment_token(api: ApiSession, name: str = "tests") -> str:
    r = api.post("enrolment-tokens", json={"name": name})
    assert r.status_code in (200, 201), f"POST enrolment-tokens: {r.status_code} {r.text}"
    return r.json()["token"]


def snapshots(api: ApiSession, machine: str) -> list[dict]:
    r = api.get(f"machines/{machine}/snapshots")
    assert r.status_code == 200, f"GET snapshots: {r.status_code} {r.text}"
    return sorted(r.json(), key=lambda s: (s["started"], s["id"]))


def job(api: ApiSession, job_id: str) -> dict:
    r = api.get(f"jobs/{job_id}")
    assert r.status_code == 200, f"GET jobs/{job_id}: {r.status_code} {r.text}"
    return r.json()


def machine_jobs(api: ApiSession, machine: str) -> list[dict]:
    r = api.get(f"machines/{machine}/jobs")
    assert r.status_code == 200, r.text
    return r.json()


def wait_job_end(api: ApiSession, job_id: str, timeout: float = JOB_TIMEOUT) -> dict:
    def ended():
        j = job(api, job_id)
        return j if j["state"] in ("succeeded", "failed", "cancelled") else None
    return wait_until(ended, timeout, f"job {job_id} to end", interval=0.25)


def store_dir(box: Box) -> Path:
    return box.state_dir / "store"


def check_store(box: Box) -> list[dict]:
    """Every manifest under store/snapshots parses as JSON and names only chunks (its
    catalog) that exist under store/chunks; every chunk file name is its digest. Returns the
    manifests."""
    store = store_dir(box)
    manifests = []
    snapdir = store / "snapshots"
    for path in sorted(snapdir.rglob("*")) if snapdir.exists() else []:
        if path.is_dir():
            continue
        assert path.suffix == ".json", f"unexpected file in the snapshots directory: {path}"
        try:
            m = json.loads(path.read_text())
        except ValueError as e:
            raise AssertionError(f"{path} is not JSON: {e}") from e
        assert m.get("format") == 1, (path, m)
        assert m["id"] == path.stem and m["machine"] == path.parent.name, path
        for d in m["catalog"]:
            assert (store / "chunks" / d[:2] / d).is_file(), f"{path} names missing chunk {d}"
        manifests.append(m)
    return manifests


def chunk_files(box: Box) -> set[str]:
    root = store_dir(box) / "chunks"
    return {p.name for p in root.glob("*/*") if p.is_file()}


def chunk_bytes(box: Box) -> int:
    """Bytes of the chunk files the box has stored (whole files only: writes in progress
    live in the store's `tmp/`). A file may vanish while being looked at (GC)."""
    total = 0
    for p in (store_dir(box) / "chunks").glob("*/*"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:
            pass
    return total


# --- the agent -------------------------------------------------------------------------------

class Agent:
    """One enrolled abri-agent: its own config file and state directory."""

    def __init__(self, workdir: Path, box: Box):
        require_agent()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "agent.toml"
        self.state_dir = workdir / "state"
        self.box = box
        self.service: subprocess.Popen | None = None
        self.service_log = workdir / "service.log"
        self._service_out = None

    # -- commands
    def cmd(self, *args: str) -> list[str]:
        return [str(AGENT), "--config", str(self.config), *args]

    def run(self, *args: str, timeout: float = AGENT_TIMEOUT, check: bool = True,
            json_out: bool = True) -> subprocess.CompletedProcess:
        argv = self.cmd(*(["--json"] if json_out else []), *args)
        env = dict(os.environ, RUST_LOG=os.environ.get("ABRI_TEST_RUST_LOG", "warn"))
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        proc.data = None
        if json_out and proc.stdout.strip():
            try:
                proc.data = json.loads(proc.stdout)
            except ValueError:
                proc.data = None
        if check:
            assert proc.returncode == 0, (
                f"{' '.join(argv)} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                f"stderr:\n{proc.stderr[-3000:]}")
        return proc

    def popen(self, *args: str, json_out: bool = True) -> subprocess.Popen:
        argv = self.cmd(*(["--json"] if json_out else []), *args)
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

    def enroll(self, api: ApiSession) -> dict:
        token = enrolment_token(api, f"agent-{self.workdir.name}")
        p = self.run("enroll", "--box", self.box.base, "--token", token,
                     "--fingerprint", self.box.fingerprint(), "--state-dir", str(self.state_dir))
        return p.data

    @property
    def conf(self) -> dict:
        return tomllib.loads(self.config.read_text())

    @property
    def machine_id(self) -> str:
        return self.conf["machine_id"]

    @property
    def auth(self) -> dict:
        c = self.conf
        return {"Authorization": f"Machine {c['machine_id']}.{c['machine_key']}"}

    @property
    def chunk_key(self) -> bytes:
        return bytes.fromhex(self.conf["chunk_key"])

    def backup(self, *extra: str, timeout: float = AGENT_TIMEOUT) -> dict:
        p = self.run("backup", "--now", *extra, timeout=timeout)
        assert isinstance(p.data, dict) and "snapshot" in p.data, p.stdout
        return p.data

    def restore(self, snapshot: str, to: Path, *paths: str, overwrite: bool = False,
                check: bool = True) -> subprocess.CompletedProcess:
        args = ["restore", snapshot, *paths, "--to", str(to)]
        if overwrite:
            args.append("--overwrite")
        return self.run(*args, check=check)

    # -- the service
    def start_service(self) -> subprocess.Popen:
        self._service_out = open(self.service_log, "ab")
        env = dict(os.environ, RUST_LOG="info")
        self.service = subprocess.Popen(self.cmd("run"), stdout=self._service_out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, env=env)
        return self.service

    def stop_service(self) -> None:
        if self.service is not None and self.service.poll() is None:
            os.killpg(self.service.pid, signal.SIGKILL)
            self.service.wait(timeout=10)
        if self._service_out is not None:
            self._service_out.close()
            self._service_out = None

    def log(self) -> str:
        try:
            return self.service_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- the agent API, by hand
    def http(self, method: str, path: str, auth: dict | None = None, **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        headers.update(self.auth if auth is None else auth)
        kw.setdefault("timeout", HTTP_TIMEOUT)
        kw.setdefault("verify", str(self.box.ca_pem))
        return self.box.http.request(method, self.box.api("agent/" + path.lstrip("/")),
                                     headers=headers, **kw)


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


# --- trees -----------------------------------------------------------------------------------

BLOCK = 4096
BIG_SPARSE = 4 * 1024 ** 3  # the multi-GB-sized sparse file


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def set_times(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns - 7_000_000_123, mtime_ns), follow_symlinks=False)


def make_full_tree(root: Path, seed: int = 1) -> dict:
    """Every file kind the agent must back up. Returns facts the tests need (paths of the
    sparse files and their written regions)."""
    rnd = hashlib.sha256(str(seed).encode()).digest()

    def data(n: int, tag: str) -> bytes:
        # deterministic and incompressible enough, cheap for small sizes
        out = bytearray()
        h = hashlib.sha256(rnd + tag.encode()).digest()
        while len(out) < n:
            h = hashlib.sha256(h).digest()
            out += h
        return bytes(out[:n])

    root.mkdir(parents=True)
    (root / "docs").mkdir()
    _write(root / "docs" / "small.txt", b"hello abri\n")
    _write(root / "docs" / "medium.bin", data(200_000, "medium"))
    _write(root / "docs" / "large.bin", os.urandom(3 * 1024 * 1024 + 17))
    _write(root / "docs" / "compressible.txt", b"abri " * 300_000)
    _write(root / "empty", b"")
    # sparse: 10 MiB with data at 0 and at 5 MiB
    sparse = root / "sparse.img"
    with open(sparse, "wb") as f:
        f.write(data(BLOCK * 3, "sparse0"))
        f.seek(5 * 1024 * 1024)
        f.write(data(BLOCK * 2, "sparse1"))
        f.truncate(10 * 1024 * 1024)
    # multi-GB-sized sparse file: 4 GiB with a few written blocks
    big = root / "big-sparse.img"
    big_regions = [(0, 65536), (1024 ** 3 + 12288, 8192), (BIG_SPARSE - 65536, 65536)]
    with open(big, "wb") as f:
        f.truncate(BIG_SPARSE)
        for off, n in big_regions:
            f.seek(off)
            f.write(data(n, f"big{off}"))
    # hard links (one crosses directories)
    (root / "links").mkdir()
    _write(root / "links" / "original", data(5000, "hl"))
    os.link(root / "links" / "original", root / "links" / "second")
    os.link(root / "links" / "original", root / "docs" / "third-link")
    # symlinks: relative, absolute, dangling, to a directory
    os.symlink("original", root / "links" / "rel-symlink")
    os.symlink("/etc/hostname", root / "links" / "abs-symlink")
    os.symlink("does/not/exist", root / "links" / "dangling")
    os.symlink("../docs", root / "links" / "dir-symlink")
    # fifo
    os.mkfifo(root / "pipe")
    # unicode and 255-byte names
    (root / "names").mkdir()
    _write(root / "names" / "héllo wörld ✓ 日本語.txt", "unicode ✓\n".encode())
    _write(root / "names" / ("a" * 251 + ".txt"), b"long ascii name\n")
    long_utf8 = "é" * 127 + "x"  # 255 bytes of UTF-8
    assert len(long_utf8.encode()) == 255
    _write(root / "names" / long_utf8, b"long utf-8 name\n")
    _write(root / "names" / "with space and 'quote' \"dq\"", b"q\n")
    # deep path: 35 levels
    deep = root / "deep"
    for i in range(35):
        deep = deep / f"level{i:02d}"
    deep.mkdir(parents=True)
    _write(deep / "bottom.txt", b"deep down\n")
    # xattrs
    x = root / "xattrs.txt"
    _write(x, b"has xattrs\n")
    os.setxattr(x, "user.comment", b"a comment")
    os.setxattr(x, "user.binary", bytes(range(256)))
    os.setxattr(x, "user.empty", b"")
    os.setxattr(root / "docs", "user.dir-attr", "on a directory ✓".encode())
    # owners (as root), then modes (chown clears setuid)
    (root / "modes").mkdir()
    owned = root / "modes" / "owned-by-1234"
    _write(owned, b"owned\n")
    os.chown(owned, 1234, 5678)
    (root / "modes" / "dir-4321").mkdir()
    _write(root / "modes" / "dir-4321" / "inside", b"in\n")
    os.chown(root / "modes" / "dir-4321", 4321, 4321)
    os.symlink("owned-by-1234", root / "modes" / "symlink-1111")
    os.lchown(root / "modes" / "symlink-1111", 1111, 2222)
    setuid = root / "modes" / "setuid"
    _write(setuid, b"#!/bin/sh\n")
    os.chown(setuid, 0, 1234)
    os.chmod(setuid, 0o4755)
    setgid = root / "modes" / "setgid"
    _write(setgid, b"#!/bin/sh\n")
    os.chmod(setgid, 0o2711)
    _write(root / "modes" / "private", b"secret\n")
    os.chmod(root / "modes" / "private", 0o600)
    _write(root / "modes" / "no-perms", b"none\n")
    os.chmod(root / "modes" / "no-perms", 0o000)
    (root / "modes" / "sticky").mkdir()
    os.chmod(root / "modes" / "sticky", 0o1777)
    ro = root / "modes" / "read-only-dir"
    ro.mkdir()
    _write(ro / "child", b"child of a 0555 dir\n")
    os.chmod(ro, 0o555)
    # mtimes in ns: files first, directories bottom-up
    t0 = 1_600_000_000_123_456_789
    i = 0
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in sorted(filenames) + sorted(d for d in dirnames
                                            if os.path.islink(os.path.join(dirpath, d))):
            i += 1
            set_times(Path(dirpath) / n, t0 + i * 1_000_003_017)
        i += 1
        set_times(Path(dirpath), t0 + i * 999_999_937)
    return {"sparse": sparse, "big": big, "big_regions": big_regions}


def data_blocks(path: Path):
    """(offset, block) for every non-zero 4 KiB block of a file, reading only its data
    regions (SEEK_DATA/SEEK_HOLE): the same for a file and any equal copy whatever the
    copy's allocation."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # no data after pos
            end = os.lseek(fd, start, os.SEEK_HOLE)
            start -= start % BLOCK
            off = start
            while off < end:
                n = min(1 << 20, end - off)
                buf = os.pread(fd, n, off)
                if not buf:
                    break
                for k in range(0, len(buf), BLOCK):
                    b = buf[k:k + BLOCK]
                    if b.count(0) != len(b):
                        yield off + k, b
                off += len(buf)
            pos = end
    finally:
        os.close(fd)


def content_digest(path: Path) -> str:
    h = hashlib.sha256()
    for off, b in data_blocks(path):
        h.update(struct.pack("<Q", off))
        h.update(b)
    return h.hexdigest()


def user_xattrs(path: Path) -> dict:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False)
            for n in sorted(names) if n.startswith("user.")}


def scan(root: Path) -> dict:
    """Path (relative to `root`, "." for root) -> what must survive a backup and restore:
    type, mode, owner, size, mtime in ns, user xattrs, symlink target, content, and
    hard-link groups (the sorted paths sharing an inode inside the tree)."""
    entries: dict[str, dict] = {}
    inodes: dict[tuple, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dir_links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in [None, *sorted(filenames), *sorted(dir_links)]:
            p = Path(dirpath) if name is None else Path(dirpath) / name
            if name is None and p != root and p.is_symlink():
                continue
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            rec = {"type": stat.S_IFMT(st.st_mode), "mode": oct(st.st_mode), "uid": st.st_uid,
                   "gid": st.st_gid, "mtime_ns": st.st_mtime_ns, "xattrs": user_xattrs(p)}
            if stat.S_ISREG(st.st_mode):
                rec["size"] = st.st_size
                rec["content"] = content_digest(p)
                rec["nlink"] = st.st_nlink
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
                rec["size"] = st.st_size
            entries[rel] = rec
    for paths in inodes.values():
        for rel in paths:
            entries[rel]["links"] = sorted(paths)
    return entries


def compare(expected: dict, actual: dict, what: str = "restore") -> None:
    """Asserts two scans are equal, listing every difference."""
    problems = []
    for rel in sorted(set(expected) | set(actual)):
        e, a = expected.get(rel), actual.get(rel)
        if e is None:
            problems.append(f"{rel!r}: unexpected in the {what}")
        elif a is None:
            problems.append(f"{rel!r}: missing from the {what}")
        else:
            for k in sorted(set(e) | set(a)):
                if e.get(k) != a.get(k):
                    ev, av = e.get(k), a.get(k)
                    if k == "type":
                        ev, av = stat.filemode(ev), stat.filemode(av)
                    problems.append(f"{rel!r}: {k} expected {ev!r}, got {av!r}")
    assert not problems, f"{len(problems)} differences in the {what}:\n" + "\n".join(problems[:60])


def restored_root(target: Path, tree: Path) -> Path:
    """Where a restore with --to `target` puts the backed-up absolute path `tree`."""
    return target / str(tree).lstrip("/")


def make_random_tree(root: Path, total: int, file_size: int = 8 * 1024 * 1024) -> int:
    """`total` bytes of incompressible data in files of `file_size`; returns the total."""
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    i = 0
    while n < total:
        size = min(file_size, total - n)
        _write(root / f"random-{i:04d}.bin", os.urandom(size))
        n += size
        i += 1
    return n


# --- formats (docs/formats.md) ---------------------------------------------------------------

_IV = [0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
       0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19]
_PERM = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
_CHUNK_START, _CHUNK_END, _PARENT, _ROOT, _KEYED_HASH = 1, 2, 4, 8, 16
_M = 0xFFFFFFFF


def _rotr(x, n):
    return ((x >> n) | (x << (32 - n))) & _M


def _g(s, a, b, c, d, x, y):
    s[a] = (s[a] + s[b] + x) & _M
    s[d] = _rotr(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & _M
    s[b] = _rotr(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b] + y) & _M
    s[d] = _rotr(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & _M
    s[b] = _rotr(s[b] ^ s[c], 7)


def _compress(cv, block, counter, block_len, flags):
    m = list(struct.unpack("<16I", block))
    s = list(cv) + _IV[:4] + [counter & _M, (counter >> 32) & _M, block_len, flags]
    for r in range(7):
        _g(s, 0, 4, 8, 12, m[0], m[1])
        _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5])
        _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9])
        _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13])
        _g(s, 3, 4, 9, 14, m[14], m[15])
        if r < 6:
            m = [m[i] for i in _PERM]
    return [s[i] ^ s[i + 8] for i in range(8)]


def blake3_keyed(key: bytes, data: bytes) -> bytes:
    """BLAKE3 keyed hash (32 bytes), pure Python: fine for the few KiB the tests hash."""
    assert len(key) == 32
    kw = list(struct.unpack("<8I", key))
    base = _KEYED_HASH

    def chunk_state(chunk: bytes, index: int):
        """(cv input, last block, block_len, flags) of a chunk, before its last compression."""
        cv = kw
        blocks = [chunk[i:i + 64] for i in range(0, len(chunk), 64)] or [b""]
        for j, blk in enumerate(blocks):
            flags = base | (_CHUNK_START if j == 0 else 0)
            if j == len(blocks) - 1:
                return cv, blk.ljust(64, b"\0"), len(blk), flags | _CHUNK_END, index
            cv = _compress(cv, blk, index, 64, flags)

    chunks = [data[i:i + 1024] for i in range(0, len(data), 1024)] or [b""]
    if len(chunks) == 1:
        cv, blk, n, flags, idx = chunk_state(chunks[0], 0)
        out = _compress(cv, blk, idx, n, flags | _ROOT)
        return struct.pack("<8I", *out)
    cvs = []
    for i, c in enumerate(chunks):
        cv, blk, n, flags, idx = chunk_state(c, i)
        cvs.append(_compress(cv, blk, idx, n, flags))
    # merge as the BLAKE3 tree: the left subtree is the largest power of two of chunks
    def subtree(lo, hi, root):
        if hi - lo == 1:
            return cvs[lo]
        n = hi - lo
        left = 1 << ((n - 1).bit_length() - 1)
        l_cv = subtree(lo, lo + left, False)
        r_cv = subtree(lo + left, hi, False)
        block = struct.pack("<8I", *l_cv) + struct.pack("<8I", *r_cv)
        return _compress(kw, block, 0, 64, base | _PARENT | (_ROOT if root else 0))
    return struct.pack("<8I", *subtree(0, len(cvs), True))


def encode_chunk_raw(raw: bytes) -> bytes:
    """An encoded chunk with codec 0 (raw)."""
    return b"ABC1" + bytes([0, 0, 0, 0]) + struct.pack("<I", len(raw)) + raw


def decode_chunk(encoded: bytes) -> bytes:
    assert encoded[:4] == b"ABC1", encoded[:12]
    codec = encoded[4]
    (n,) = struct.unpack("<I", encoded[8:12])
    if codec == 0:
        return encoded[12:12 + n]
    assert codec == 1, codec
    out = subprocess.run(["zstd", "-d", "-c"], input=encoded[12:], capture_output=True,
                         check=True, timeout=60).stdout
    assert len(out) == n
    return out


def varint(n: int) -> bytes:
    assert n >= 0
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def zigzag(n: int) -> bytes:
    return varint((n << 1) ^ (n >> 63))


def pc_bytes(b: bytes) -> bytes:
    return varint(len(b)) + b


def pc_entry(path: bytes, kind: int = 0, *, kind_data: bytes = b"", mode: int = 0o100644,
             uid: int = 0, gid: int = 0, size: int = 0, mtime_ns: int = 1_700_000_000 * 10**9,
             extents: list[tuple[bytes, int, int, int]] = ()) -> bytes:
    """A catalog Entry in postcard, fields in the order of docs/formats.md."""
    out = pc_bytes(path) + varint(kind) + kind_data + varint(mode) + varint(uid) + varint(gid)
    out += b"\0" + b"\0"  # user, group: None
    out += varint(size) + zigzag(mtime_ns) + zigzag(mtime_ns) + zigzag(mtime_ns)
    out += varint(1) + varint(1)  # inode, dev
    out += varint(1)  # nlink
    out += varint(0)  # xattrs
    out += varint(len(extents))
    for digest, chunk_offset, length, file_offset in extents:
        assert len(digest) == 32
        out += digest + varint(chunk_offset) + varint(length) + varint(file_offset)
    out += b"\0"  # windows: None
    return out


def catalog_stream(entries: list[bytes]) -> bytes:
    out = b"ABRICAT" + struct.pack("<H", 1)
    for e in entries:
        out += struct.pack("<I", len(e)) + e
    return out


# --- fixture ---------------------------------------------------------------------------------

class FileModeEnv:
    """An activated box, an admin session, and the agents of one test."""

    def __init__(self, box: Box, tmp: Path):
        self.box = box
        self.tmp = tmp
        self.api = box.session()
        pause_image_plan(self.api)
        self.agents: list[Agent] = []
        self.procs: list[subprocess.Popen] = []

    def agent(self, name: str = "agent") -> Agent:
        a = Agent(self.tmp / name, self.box)
        a.enroll(self.api)
        self.agents.append(a)
        return a

    def popen(self, agent: Agent, *args: str) -> subprocess.Popen:
        p = agent.popen(*args)
        self.procs.append(p)
        return p

    def plan(self, *selections: Path, excludes: list[str] | None = None) -> dict:
        return set_files_plan(self.api, [str(s) for s in selections], excludes)


@pytest.fixture
def fm(active_box, tmp_path, request):
    env = FileModeEnv(active_box, tmp_path)
    yield env
    for p in env.procs:
        kill_group(p)
    for a in env.agents:
        a.stop_service()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for a in env.agents:
            if a.service_log.exists():
                print(f"--- end of {a.service_log} ---\n{a.log()[-4000:]}")


# --- reading catalogs (docs/formats.md "Catalog") --------------------------------------------

class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        assert self.pos + n <= len(self.data), "truncated catalog record"
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def varint(self) -> int:
        n = shift = 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def bytes(self) -> bytes:
        return self.take(self.varint())

    def option(self, read):
        flag = self.take(1)[0]
        assert flag in (0, 1), flag
        return read() if flag else None


def parse_entry(raw: bytes) -> dict:
    r = _Reader(raw)
    e = {"path": r.bytes(), "kind": r.varint()}
    if e["kind"] in (2, 3):
        e["target"] = r.bytes()
    elif e["kind"] in (6, 7):
        e["rdev"] = r.varint()
    for k in ("mode", "uid", "gid"):
        e[k] = r.varint()
    e["user"] = r.option(r.bytes)
    e["group"] = r.option(r.bytes)
    e["size"] = r.varint()
    for k in ("mtime_ns", "ctime_ns", "atime_ns"):
        e[k] = r.zigzag()
    for k in ("inode", "dev", "nlink"):
        e[k] = r.varint()
    e["xattrs"] = [(r.bytes(), r.bytes()) for _ in range(r.varint())]
    e["extents"] = [(r.take(32), r.varint(), r.varint(), r.varint()) for _ in range(r.varint())]
    e["windows"] = r.option(lambda: (r.varint(), r.zigzag(), r.bytes()))
    assert r.pos == len(raw), f"{len(raw) - r.pos} bytes left after the entry {e['path']!r}"
    return e


def read_catalog(store: Path, digests: list[str]) -> list[dict]:
    stream = b"".join(decode_chunk((store / "chunks" / d[:2] / d).read_bytes())
                      for d in digests)
    assert stream[:7] == b"ABRICAT" and struct.unpack("<H", stream[7:9])[0] == 1, stream[:9]
    r = _Reader(stream)
    r.pos = 9
    entries = []
    while r.pos < len(stream):
        (n,) = struct.unpack("<I", r.take(4))
        entries.append(parse_entry(r.take(n)))
    return entries


def verify_store(box: Box) -> list[dict]:
    """check_store plus: every catalog decodes, its paths are relative without `..`, and
    every extent's chunk exists and is long enough (what a `verify` would check)."""
    manifests = check_store(box)
    store = store_dir(box)
    for m in manifests:
        for e in read_catalog(store, m["catalog"]):
            parts = e["path"].split(b"/")
            assert e["path"] and not e["path"].startswith(b"/") and b".." not in parts, e
            for digest, chunk_off, n, _ in e["extents"]:
                d = digest.hex()
                p = store / "chunks" / d[:2] / d
                assert p.is_file(), f"snapshot {m['id']}: {e['path']!r} needs missing chunk {d}"
                (raw_len,) = struct.unpack("<I", p.read_bytes()[8:12])
                assert chunk_off + n <= raw_len, (m["id"], e["path"], d)
    return manifests


def box_verify(api: ApiSession) -> dict | None:
    """The box's own verify (`POST /api/v1/maintenance/verify`: re-reads and re-hashes every
    chunk, checks every snapshot's chunks exist) must be clean. None when the box has no such
    route (older abrid)."""
    r = api.post("maintenance/verify", timeout=120)
    if r.status_code in (404, 405):
        return None
    assert r.status_code == 200, f"verify: {r.status_code} {r.text}"
    body = r.json()
    assert body.get("clean") is True, f"verify is not clean: {body}"
    return body
