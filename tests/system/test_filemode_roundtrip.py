"""File-mode backups end to end on loopback: a real abri-agent enrolled with a real abrid
backs up a generated tree with every file kind, restores it elsewhere, and the restore is
compared with the original (content and metadata). Then incremental runs: only changed data
travels, and every snapshot restores to what the tree was at its time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from filemode_support import (verify_store, BIG_SPARSE, compare, content_digest, fm,  # noqa: F401
                              make_full_tree, read_catalog, restored_root, scan, snapshots)

KiB = 1024
MiB = 1024 * 1024


def test_round_trip_every_file_kind(fm):
    tree = fm.tmp / "data" / "tree"
    facts = make_full_tree(tree)
    expected = scan(tree)
    fm.plan(tree)
    agent = fm.agent()

    report = agent.backup()
    snap = report["snapshot"]
    stats = report["stats"]
    # the 4 GiB sparse file counts at its logical size, but its holes are never read or sent
    assert stats["bytes"] >= BIG_SPARSE, stats
    assert stats["new_bytes"] < 16 * MiB, stats
    assert stats["reused_files"] == 0, stats
    listed = snapshots(fm.api, agent.machine_id)
    assert [s["id"] for s in listed] == [snap["id"]], listed
    assert listed[0]["stats"] == stats, (listed[0], stats)
    assert listed[0]["kind"] == "files" and listed[0]["plan"] == "files", listed[0]
    manifests = verify_store(fm.box)
    assert [m["id"] for m in manifests] == [snap["id"]]
    assert manifests[0]["machine"] == agent.machine_id
    # the catalog records the sparse file's data regions only, and the link kinds
    entries = {e["path"]: e for e in read_catalog(fm.box.state_dir / "store",
                                                  manifests[0]["catalog"])}
    rel = str(tree).lstrip("/").encode()
    big = entries[rel + b"/big-sparse.img"]
    assert big["size"] == BIG_SPARSE
    assert sum(x[2] for x in big["extents"]) <= sum(n for _, n in facts["big_regions"]) + 2 * 65536
    assert entries[rel + b"/links/dangling"]["kind"] == 2  # symlink
    assert entries[rel + b"/links/dangling"]["target"] == b"does/not/exist"
    assert entries[rel + b"/pipe"]["kind"] == 4  # fifo
    assert [entries[rel + p]["kind"] for p in (b"/docs/third-link", b"/links/original",
                                               b"/links/second")] == [0, 3, 3], "hard links"

    # the tree did not change by being backed up
    compare(expected, scan(tree), "original after the backup")

    target = fm.tmp / "restore"
    p = agent.restore("latest", target)
    assert p.data["snapshot"] == snap["id"], p.stdout
    assert p.data["report"]["warnings"] == 0, p.stdout
    got = restored_root(target, tree)
    compare(expected, scan(got))

    # sparseness survives: the restored 4 GiB file allocates about what was written
    big = got / facts["big"].name
    written = sum(n for _, n in facts["big_regions"])
    allocated = os.stat(big).st_blocks * 512
    assert os.stat(big).st_size == BIG_SPARSE
    assert allocated <= written + 4 * MiB, f"restored sparse file allocates {allocated} bytes"
    small_sparse = got / facts["sparse"].name
    assert os.stat(small_sparse).st_blocks * 512 <= 1 * MiB, os.stat(small_sparse)

    # a restore of some paths only restores those subtrees
    part = fm.tmp / "restore-part"
    agent.restore(snap["id"], part, str(tree / "names"), str(tree / "links" / "original"))
    got = restored_root(part, tree)
    assert sorted(os.listdir(got)) == ["links", "names"], os.listdir(got)
    assert os.listdir(got / "links") == ["original"]
    want = {k: v for k, v in expected.items() if k == "names" or k.startswith("names/")}
    compare(want, {k: v for k, v in scan(got).items() if k == "names" or k.startswith("names/")},
            "partial restore")
    assert content_digest(got / "links" / "original") == expected["links/original"]["content"]

    # restoring again over an existing tree leaves files alone unless --overwrite
    victim = restored_root(target, tree) / "docs" / "small.txt"
    os.chmod(victim, 0o644)
    victim.write_bytes(b"changed after the restore\n")
    p = agent.restore("latest", target)
    assert p.data["report"]["skipped_existing"] > 0, p.stdout
    assert victim.read_bytes() == b"changed after the restore\n"
    agent.restore("latest", target, overwrite=True)
    assert victim.read_bytes() == b"hello abri\n"
    compare(expected, scan(restored_root(target, tree)), "restore with --overwrite")


def _rand(path: Path, n: int) -> int:
    path.write_bytes(os.urandom(n))
    return n


def test_incremental_sends_only_changes(fm):
    tree = fm.tmp / "data" / "inc"
    (tree / "a").mkdir(parents=True)
    (tree / "b" / "c").mkdir(parents=True)
    total = 0
    for i in range(40):
        total += _rand(tree / ("a" if i % 2 else "b/c") / f"file-{i:02d}.bin", 150 * KiB + i)
    total += _rand(tree / "big.bin", 12 * MiB)
    os.link(tree / "big.bin", tree / "b" / "big-link")
    (tree / "link").symlink_to("a/file-01.bin")
    fm.plan(tree)
    agent = fm.agent()

    first = agent.backup()
    s1 = first["snapshot"]
    state1 = scan(tree)
    assert first["stats"]["new_bytes"] >= total, first["stats"]
    files = first["stats"]["files"]

    # an unchanged re-run reads and sends (almost) nothing
    again = agent.backup()
    st = again["stats"]
    assert again["bytes_read"] == 0, again
    assert st["reused_files"] >= files - 1, st  # every file (a hard link has no data)
    assert st["new_bytes"] < 256 * KiB, f"unchanged re-run sent {st['new_bytes']} bytes"

    # change a few files, add some, remove some, change metadata only
    changed = 0
    changed += _rand(tree / "a" / "file-01.bin", 150 * KiB + 1)  # rewritten, same size
    with open(tree / "b" / "c" / "file-02.bin", "ab") as f:      # appended
        f.write(os.urandom(10 * KiB))
    changed += 150 * KiB + 2 + 10 * KiB
    changed += _rand(tree / "a" / "new-1.bin", 300 * KiB)
    (tree / "new-dir").mkdir()
    changed += _rand(tree / "new-dir" / "new-2.bin", 1 * MiB)
    (tree / "a" / "file-03.bin").unlink()
    (tree / "b" / "c" / "file-04.bin").unlink()
    os.chmod(tree / "a" / "file-05.bin", 0o600)
    os.utime(tree / "a" / "file-07.bin", ns=(1_500_000_000_000_000_001,) * 2)
    state2 = scan(tree)

    second = agent.backup()
    s2 = second["snapshot"]
    st = second["stats"]
    assert st["files"] == files, st  # 2 removed, 2 added
    # unchanged files are not read: all but the 2 rewritten, the 2 new, the 2 whose metadata
    # changed (ctime/mtime) and the hard link (no data of its own)
    assert st["reused_files"] >= files - 7, st
    assert second["bytes_read"] <= changed + 2 * (150 * KiB + 40), second
    # only the changed data traveled, plus the catalog and the re-read files whose metadata
    # changed (their bytes are cut into chunks again together with the changed ones)
    assert changed <= st["new_bytes"] <= changed + 2 * (150 * KiB + 8) + 512 * KiB, (changed, st)
    assert st["new_bytes"] < total / 5, (total, st)
    listed = {s["id"]: s for s in snapshots(fm.api, agent.machine_id)}
    assert listed[s2["id"]]["stats"] == st, listed
    assert listed[s1["id"]]["stats"] == first["stats"], listed

    # each snapshot restores to the tree of its time
    r1, r2 = fm.tmp / "r1", fm.tmp / "r2"
    agent.restore(s1["id"], r1)
    agent.restore(s2["id"], r2)
    compare(state1, scan(restored_root(r1, tree)), "restore of the first snapshot")
    compare(state2, scan(restored_root(r2, tree)), "restore of the second snapshot")

    # a --full run re-reads everything (the stream is cut anew: chunks around the changes
    # differ from the incremental run's); a second one finds every chunk already stored
    full = agent.backup("--full")
    st = full["stats"]
    assert st["reused_files"] == 0, st
    assert full["bytes_read"] >= total - 2 * 150 * KiB, full
    assert st["new_bytes"] < total, st
    full = agent.backup("--full")
    st = full["stats"]
    assert st["reused_files"] == 0 and full["bytes_read"] >= total - 2 * 150 * KiB, full
    assert st["new_bytes"] < 256 * KiB, st
    shutil.rmtree(r1)
    r3 = fm.tmp / "r3"
    agent.restore("latest", r3)
    compare(state2, scan(restored_root(r3, tree)), "restore of the --full snapshot")
    verify_store(fm.box)


def test_full_flag_tells_whether_files_were_reused(fm):
    """docs/formats.md: `full` is true when no file was reused from the previous catalog."""
    tree = fm.tmp / "data" / "flag"
    tree.mkdir(parents=True)
    _rand(tree / "one.bin", 1000)
    fm.plan(tree)
    agent = fm.agent()
    first = agent.backup()["snapshot"]
    second = agent.backup()["snapshot"]
    third = agent.backup("--full")["snapshot"]
    assert second["stats"]["reused_files"] == 1 and second["full"] is False, second
    assert third["stats"]["reused_files"] == 0 and third["full"] is True, third
    assert first["stats"]["reused_files"] == 0, first
    assert first["full"] is True, (
        f"the first snapshot reused no file (no previous catalog) but says full=false: {first}")


def test_restore_never_writes_through_symlinks_outside_its_target(fm):
    tree = fm.tmp / "data" / "esc"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "f").write_bytes(b"payload\n")
    (tree / "top.txt").write_bytes(b"top\n")
    fm.plan(tree)
    agent = fm.agent()
    agent.backup()

    # a symlink at the top of the target, where the restore must create `tmp/`
    outside1 = fm.tmp / "outside-1"
    outside1.mkdir()
    t1 = fm.tmp / "t1"
    t1.mkdir()
    first = str(tree).lstrip("/").split("/")[0]
    (t1 / first).symlink_to(outside1)
    for overwrite in (False, True):
        agent.restore("latest", t1, overwrite=overwrite, check=False)
        assert list(outside1.iterdir()) == [], f"restore wrote through {t1 / first}"

    # a symlink deep inside, in place of the directory `d`
    outside2 = fm.tmp / "outside-2"
    outside2.mkdir()
    t2 = fm.tmp / "t2"
    restored_root(t2, tree).mkdir(parents=True)
    (restored_root(t2, tree) / "d").symlink_to(outside2)
    for overwrite in (False, True):
        agent.restore("latest", t2, overwrite=overwrite, check=False)
        assert list(outside2.iterdir()) == [], "restore wrote through a symlink to outside"
    assert (restored_root(t2, tree) / "top.txt").read_bytes() == b"top\n"
