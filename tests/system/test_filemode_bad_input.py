"""Bad input on the agent API, each refused with nothing stored or changed: chunks whose
content does not match their digest, commits naming missing chunks, catalogs with `..` or
absolute paths, wrong and revoked machine keys, one machine reading or deleting another's
backups. The requests are made by hand with the machine key from the agent's config file;
chunks and catalogs are built in Python from docs/formats.md."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from filemode_support import (  # noqa: F401 (fm is a fixture)
    blake3_keyed, box_verify, catalog_stream, check_store, chunk_files, encode_chunk_raw, fm,
    machine_jobs, pc_bytes, pc_entry, snapshots, store_dir)

ZERO_STATS = {"files": 0, "dirs": 0, "bytes": 0, "new_bytes": 0, "chunks": 0, "new_chunks": 0,
              "reused_files": 0}


def _store_files(box) -> dict:
    """Every file of the store with its size and mtime-independent identity (bytes hash)."""
    root = store_dir(box)
    out = {}
    for p in root.rglob("*"):
        if p.is_file() and p.parent.name != "tmp":
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _put_chunk(agent, digest: str, body: bytes):
    return agent.http("PUT", f"chunks/{digest}", data=body,
                      headers={"Content-Type": "application/octet-stream"})


def zstd_chunk(raw: bytes, declared: int | None = None) -> bytes:
    """An encoded chunk with codec 1 (one zstd frame), made with the zstd command."""
    frame = subprocess.run(["zstd", "-q", "-c", "-3"], input=raw, capture_output=True,
                           check=True, timeout=30).stdout
    n = len(raw) if declared is None else declared
    return b"ABC1" + bytes([1, 0, 0, 0]) + n.to_bytes(4, "little") + frame


def _start_job(agent) -> str:
    r = agent.http("POST", "jobs", json={"plan": "files"})
    assert r.status_code == 201, r.text
    return r.json()["job_id"]


def _end_job(agent, job_id: str) -> None:
    r = agent.http("POST", f"jobs/{job_id}/finish", json={"status": "failed", "error": "test"})
    assert r.status_code in (204, 404, 422), r.text


def _commit(agent, job_id: str, catalog: list[str]):
    return agent.http("POST", "snapshots", json={
        "job_id": job_id, "plan": "files", "full": False, "started": int(time.time()),
        "catalog": catalog, "source": "crafted", "stats": ZERO_STATS})


def _upload_catalog(agent, entries: list[bytes]) -> str:
    stream = catalog_stream(entries)
    digest = blake3_keyed(agent.chunk_key, stream).hex()
    r = _put_chunk(agent, digest, encode_chunk_raw(stream))
    assert r.status_code in (200, 201), f"catalog chunk refused: {r.status_code} {r.text}"
    return digest


@pytest.fixture
def two_machines(fm):
    """Machine A with a real snapshot of a small tree, machine B enrolled."""
    tree = fm.tmp / "data" / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "secret.txt").write_bytes(b"A's secret\n" * 1000)
    (tree / "r.bin").write_bytes(os.urandom(50_000))
    fm.plan(tree)
    a = fm.agent("a")
    snap = a.backup()["snapshot"]
    b = fm.agent("b")
    r = a.http("GET", f"snapshots/{snap['id']}")
    assert r.status_code == 200, r.text
    return fm, a, b, r.json()


def test_chunks_not_matching_their_digest_are_refused(two_machines):
    fm, a, b, snap = two_machines
    key = a.chunk_key
    data = b"chunk content " * 100
    good = blake3_keyed(key, data).hex()
    before = _store_files(fm.box)
    existing = sorted(chunk_files(fm.box))[0]
    existing_bytes = (store_dir(fm.box) / "chunks" / existing[:2] / existing).read_bytes()

    cases = {
        # a stored chunk's valid encoding under another digest
        "other digest": (os.urandom(32).hex(), existing_bytes),
        # right digest, other content
        "other content": (good, encode_chunk_raw(b"chunk CONTENT " * 100)),
        # right digest, content with one byte flipped
        "flipped byte": (good, encode_chunk_raw(data[:-1] + b"X")),
        # right digest, declared length longer than the payload
        "short payload": (good, encode_chunk_raw(data)[:-10]),
        "bad magic": (good, b"ABC2" + encode_chunk_raw(data)[4:]),
        "unknown codec": (good, encode_chunk_raw(data)[:4] + b"\x07" + encode_chunk_raw(data)[5:]),
        "not a chunk": (good, b"hello"),
        "raw length over 16 MiB": (good, encode_chunk_raw(data)[:8]
                                   + (16 * 1024 * 1024 + 1).to_bytes(4, "little") + data),
        # zstd: a frame of other content; a frame longer than its declared raw length
        "zstd other content": (good, zstd_chunk(b"chunk CONTENT " * 100)),
        "zstd longer than declared": (good, zstd_chunk(data + b"more", declared=len(data))),
        # overwriting an existing chunk with other bytes
        "overwrite": (existing, encode_chunk_raw(b"replacement")),
    }
    for name, (digest, body) in cases.items():
        r = _put_chunk(b, digest, body)
        assert r.status_code == 422, f"{name}: expected 422, got {r.status_code} {r.text}"
    assert _store_files(fm.box) == before, "a refused chunk changed the store"
    assert not (store_dir(fm.box) / "chunks" / good[:2] / good).exists()
    assert list((store_dir(fm.box) / "tmp").iterdir()) == [], "leftovers in store/tmp"
    box_verify(fm.api)

    # control: the right bytes under the right digest are stored, once
    r = _put_chunk(b, good, encode_chunk_raw(data))
    assert r.status_code == 201, r.text
    assert (store_dir(fm.box) / "chunks" / good[:2] / good).is_file()
    r = _put_chunk(b, good, encode_chunk_raw(data))
    assert r.status_code == 200, r.text
    data2 = b"compressible " * 500
    good2 = blake3_keyed(key, data2).hex()
    r = _put_chunk(b, good2, zstd_chunk(data2))
    assert r.status_code == 201, r.text
    r = b.http("POST", "chunks/missing", json={"digests": [good, os.urandom(32).hex()]})
    assert r.status_code == 200 and good not in r.json()["missing"], r.text


def _frames(chunks: list[tuple[str, bytes]]) -> bytes:
    """A chunk batch (docs/api.md): digest, u32 LE length, encoded chunk, repeated."""
    return b"".join(bytes.fromhex(d) + len(c).to_bytes(4, "little") + c for d, c in chunks)


def _put_batch(agent, body: bytes):
    return agent.http("POST", "chunks", data=body,
                      headers={"Content-Type": "application/x-abri-chunks"})


def test_a_chunk_batch_is_stored_whole_or_refused_whole(two_machines):
    fm, a, b, snap = two_machines
    key = b.chunk_key
    raws = [os.urandom(2000) for _ in range(3)] + [b"batch " * 3000]
    digests = [blake3_keyed(key, r).hex() for r in raws]
    encoded = [encode_chunk_raw(r) for r in raws[:3]] + [zstd_chunk(raws[3])]
    good = list(zip(digests, encoded))
    before = _store_files(fm.box)
    whole = _frames(good)
    cases = {
        "one chunk not matching its digest": _frames(
            good[:2] + [(digests[2], encode_chunk_raw(b"other"))] + good[3:]),
        "a frame cut short": whole[:-5],
        "a length past the end": whole + bytes(32) + (100).to_bytes(4, "little") + b"x",
        "a frame longer than any chunk": whole + bytes(32) + (1 << 30).to_bytes(4, "little"),
        "an empty batch": b"",
    }
    for name, body in cases.items():
        r = _put_batch(b, body)
        assert r.status_code == 422, f"{name}: expected 422, got {r.status_code} {r.text}"
        assert r.json()["error"] == "invalid", r.text
    assert _store_files(fm.box) == before, "a refused batch changed the store"
    assert list((store_dir(fm.box) / "tmp").iterdir()) == [], "leftovers in store/tmp"
    r = b.http("POST", "chunks/missing", json={"digests": digests})
    assert r.status_code == 200 and sorted(r.json()["missing"]) == sorted(digests), r.text

    # a missing-query may name the documented 4096 digests (the body is over 64 KiB), no more
    many = [os.urandom(32).hex() for _ in range(4096)]
    r = b.http("POST", "chunks/missing", json={"digests": many})
    assert r.status_code == 200 and len(r.json()["missing"]) == 4096, r.text[:300]
    r = b.http("POST", "chunks/missing", json={"digests": many + digests[:1]})
    assert r.status_code == 422, r.text[:300]

    # control: the whole batch is stored once; sent again, every chunk is already there
    r = _put_batch(b, whole)
    assert r.status_code == 200 and r.json() == {"stored": 4, "present": 0}, r.text
    r = _put_batch(b, whole)
    assert r.status_code == 200 and r.json() == {"stored": 0, "present": 4}, r.text
    r = b.http("POST", "chunks/missing", json={"digests": digests})
    assert r.status_code == 200 and r.json()["missing"] == [], r.text
    box_verify(fm.api)


def test_chunk_fetches_read_only_the_machines_own_snapshot(two_machines):
    fm, a, b, snap = two_machines
    sid = snap["id"]
    cat = snap["catalog"]
    r = a.http("POST", f"snapshots/{sid}/chunks", json={"digests": cat + cat[:1]})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-abri-chunks"
    body, at, got = r.content, 0, []
    while at < len(body):
        n = int.from_bytes(body[at + 32:at + 36], "little")
        got.append((body[at:at + 32].hex(), body[at + 36:at + 36 + n]))
        at += 36 + n
    assert [d for d, _ in got] == cat + cat[:1]
    for d, enc in got:
        single = a.http("GET", f"snapshots/{sid}/chunks/{d}")
        assert single.status_code == 200 and single.content == enc

    own = b.run("backup", "--now").data["snapshot"]["id"]
    refusals = {
        "B through A's snapshot": (b, sid, cat, 404),
        "B through its own snapshot": (b, own, cat, 404),
        "A, one digest not in the snapshot": (a, sid, cat + [os.urandom(32).hex()], 404),
        "A, not a digest": (a, sid, ["../../key"], 422),
        "A, nothing asked": (a, sid, [], 422),
        "A, too many asked": (a, sid, cat[:1] * 257, 422),
    }
    for name, (agent, snapshot, digests, status) in refusals.items():
        r = agent.http("POST", f"snapshots/{snapshot}/chunks", json={"digests": digests})
        assert r.status_code == status, f"{name}: expected {status}, got {r.status_code}"
        assert r.content[:1] == b"{", f"{name}: chunk bytes in a refusal"


def test_commits_with_missing_chunks_or_bad_paths_are_refused(two_machines):
    fm, a, b, snap = two_machines
    key = b.chunk_key
    data = os.urandom(3000)
    d = blake3_keyed(key, data)
    r = _put_chunk(b, d.hex(), encode_chunk_raw(data))
    assert r.status_code == 201, r.text
    ghost = os.urandom(32)

    def dir_entry(path: bytes) -> bytes:
        return pc_entry(path, 1, mode=0o40755)

    def file_entry(path: bytes, digest: bytes = d, n: int = len(data)) -> bytes:
        return pc_entry(path, 0, size=n, extents=[(digest, 0, n, 0)])

    refused = {
        "catalog chunk missing": [ghost.hex()],
        "extent chunk missing": [_upload_catalog(b, [dir_entry(b"x"),
                                                     file_entry(b"x/f", ghost)])],
        "extent beyond its chunk": [_upload_catalog(b, [file_entry(b"f", d, len(data) + 1)])],
        "dot-dot path": [_upload_catalog(b, [file_entry(b"../escape")])],
        "dot-dot inside": [_upload_catalog(b, [dir_entry(b"x"),
                                               file_entry(b"x/../../escape")])],
        "absolute path": [_upload_catalog(b, [file_entry(b"/etc/cron.d/evil")])],
        "dot-dot symlink-free hard link": [_upload_catalog(
            b, [file_entry(b"f"), pc_entry(b"g", 3, kind_data=pc_bytes(b"../f"))])],
        "dot-dot directory": [_upload_catalog(b, [dir_entry(b"..")])],
    }
    before = _store_files(fm.box)
    for name, catalog in refused.items():
        job_id = _start_job(b)
        r = _commit(b, job_id, catalog)
        assert r.status_code == 422, f"{name}: expected 422, got {r.status_code} {r.text}"
        _end_job(b, job_id)
        assert snapshots(fm.api, b.machine_id) == [], f"{name}: a snapshot was committed"
    assert _store_files(fm.box) == before, "a refused commit changed the store"
    assert not (store_dir(fm.box) / "snapshots" / b.machine_id).exists() or \
        list((store_dir(fm.box) / "snapshots" / b.machine_id).iterdir()) == []

    # control: the same construction with valid paths commits, and reads back
    catalog = [_upload_catalog(b, [dir_entry(b"x"), file_entry(b"x/f")])]
    job_id = _start_job(b)
    r = _commit(b, job_id, catalog)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    r = fm.api.get(f"machines/{b.machine_id}/snapshots/{sid}/tree", params={"path": "x"})
    assert r.status_code == 200 and [i["name"] for i in r.json()] == ["f"], r.text
    r = fm.api.get(f"machines/{b.machine_id}/snapshots/{sid}/download", params={"path": "x/f"})
    assert r.status_code == 200 and r.content == data
    # committing the same job again gives the first snapshot back, never a second one
    r = _commit(b, job_id, catalog)
    assert r.status_code in (200, 201) and r.json()["id"] == sid, r.text
    assert [s["id"] for s in snapshots(fm.api, b.machine_id)] == [sid]
    check_store(fm.box)
    box_verify(fm.api)


def test_dot_dot_in_restore_and_download_paths_is_refused(two_machines):
    fm, a, b, snap = two_machines
    sid = snap["id"]
    target = fm.tmp / "restore-dd"
    p = a.run("restore", sid, "../../etc", "--to", str(target), check=False)
    assert p.returncode != 0, p.stdout
    for bad in ("../etc", "a/../../etc", "/../etc"):
        r = fm.api.post(f"machines/{a.machine_id}/restore",
                        json={"snapshot": sid, "paths": [bad], "target": str(target)})
        assert r.status_code == 422, f"restore paths [{bad!r}]: {r.status_code} {r.text}"
        for route in ("tree", "download"):
            r = fm.api.get(f"machines/{a.machine_id}/snapshots/{sid}/{route}",
                           params={"path": bad})
            assert r.status_code in (404, 422), f"{route}?path={bad}: {r.status_code} {r.text}"
    r = fm.api.post(f"machines/{a.machine_id}/restore",
                    json={"snapshot": sid, "paths": [], "target": "relative/dir"})
    assert r.status_code == 422, r.text
    assert not target.exists()


def test_wrong_and_revoked_keys_get_401(two_machines):
    fm, a, b, snap = two_machines
    conf_a, conf_b = a.conf, b.conf
    wrong = {
        "random key": f"Machine {conf_a['machine_id']}.{'0' * len(conf_a['machine_key'])}",
        "other machine's key": f"Machine {conf_a['machine_id']}.{conf_b['machine_key']}",
        "unknown machine": f"Machine m-000000000000.{conf_a['machine_key']}",
        "no dot": f"Machine {conf_a['machine_id']}{conf_a['machine_key']}",
        "bearer scheme": f"Bearer {conf_a['machine_key']}",
    }
    data = b"never stored"
    digest = blake3_keyed(a.chunk_key, data).hex()
    for name, header in wrong.items():
        auth = {"Authorization": header}
        for method, path, kw in (("GET", "snapshots", {}),
                                 ("GET", f"snapshots/{snap['id']}", {}),
                                 ("POST", "jobs", {"json": {"plan": "files"}}),
                                 ("PUT", f"chunks/{digest}", {"data": encode_chunk_raw(data)}),
                                 ("GET", "commands?wait=0", {})):
            r = a.http(method, path, auth=auth, **kw)
            assert r.status_code == 401, f"{name}: {method} {path}: {r.status_code} {r.text}"
    r = a.http("GET", "snapshots", auth={})
    assert r.status_code == 401, r.text
    assert digest not in chunk_files(fm.box)

    # revoked: the key is refused from now on, the backups stay
    r = fm.api.post(f"machines/{a.machine_id}/revoke")
    assert r.status_code == 204, r.text
    for method, path, kw in (("GET", "snapshots", {}),
                             ("GET", f"snapshots/{snap['id']}", {}),
                             ("POST", "jobs", {"json": {"plan": "files"}}),
                             ("PUT", f"chunks/{digest}", {"data": encode_chunk_raw(data)})):
        r = a.http(method, path, **kw)
        assert r.status_code == 401, f"revoked: {method} {path}: {r.status_code} {r.text}"
    assert digest not in chunk_files(fm.box)
    p = a.run("backup", "--now", check=False)
    assert p.returncode != 0, p.stdout
    assert [s["id"] for s in snapshots(fm.api, a.machine_id)] == [snap["id"]]
    # the other machine is not affected
    assert b.http("GET", "snapshots").status_code == 200


def test_a_machine_cannot_read_or_delete_backups(two_machines):
    fm, a, b, snap = two_machines
    sid = snap["id"]
    cat = snap["catalog"][0]
    # B does not see A's snapshot, its catalog or its chunks (404, as for a snapshot that
    # does not exist); every refusal is checked before the test fails, to list them all
    problems = []
    r = b.http("GET", "snapshots")
    assert r.status_code == 200 and r.json() == [], r.text
    p = b.run("backup", "--now")
    own = p.data["snapshot"]["id"]
    for agent, path in ((b, f"snapshots/{sid}"), (b, f"snapshots/{sid}/chunks/{cat}"),
                        (b, f"snapshots/{own}/chunks/{cat}"),  # through its own snapshot
                        (a, "snapshots/20200101t000000z-abcd"),  # control: not there at all
                        (a, f"snapshots/20200101t000000z-abcd/chunks/{cat}")):
        r = agent.http("GET", path)
        if r.status_code != 404:
            problems.append(f"{'A' if agent is a else 'B'} GET /agent/{path}: expected 404, "
                            f"got {r.status_code} {r.text[:200]}")
    r = a.http("GET", f"snapshots/{sid}/chunks/{cat}")
    assert r.status_code == 200, r.text  # control: A reads its own

    # nothing deletes or overwrites: not A's own, not B on A's
    before = _store_files(fm.box)
    for agent in (a, b):
        for method, path in (("DELETE", f"snapshots/{sid}"), ("DELETE", f"chunks/{cat}"),
                             ("DELETE", f"snapshots/{sid}/chunks/{cat}"),
                             ("PUT", f"snapshots/{sid}"), ("DELETE", "snapshots")):
            r = agent.http(method, path, json={})
            if r.status_code not in (404, 405):
                problems.append(f"{method} /agent/{path}: {r.status_code} {r.text[:200]}")
    a_job = machine_jobs(fm.api, a.machine_id)[0]["id"]
    r = b.http("POST", f"jobs/{a_job}/finish", json={"status": "failed"})
    assert r.status_code in (404, 422), f"B ended A's job: {r.status_code} {r.text}"
    assert _store_files(fm.box) == before, "the store changed"
    assert sid in [s["id"] for s in snapshots(fm.api, a.machine_id)]
    assert {m["id"] for m in check_store(fm.box)} == {sid, own}
    assert not problems, "\n".join(problems)
