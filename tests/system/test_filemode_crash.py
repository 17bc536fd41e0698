"""Crash safety: `kill -9` the box, and separately the agent, in the middle of a backup.
Afterwards no partial snapshot is visible, the store is consistent (every manifest parses
and names only chunks that exist), and the next backup succeeds reusing what was already
uploaded."""

from __future__ import annotations

import os
import signal

from filemode_support import (  # noqa: F401 (fm is a fixture)
    box_verify, chunk_bytes, chunk_files, compare, fm, machine_jobs, make_random_tree,
    restored_root, scan, snapshots, verify_store, wait_until)

MiB = 1024 * 1024
TREE = 320 * MiB


def _running_with_upload(fm, agent, proc, minimum: int):
    """Waits (bounded) until the box has stored at least `minimum` bytes of chunks while the
    agent's backup job runs; returns the job and those bytes. Watched on the box's disk every
    50 ms: the agent reports its progress once a second, and a fast machine backed up 270 of
    the tree's 320 MiB before its first report."""
    def progressed():
        assert proc.poll() is None, (
            f"the backup ended before the kill (rc {proc.returncode}):\n"
            f"{proc.stdout.read()[-2000:]}\n{proc.stderr.read()[-2000:]}")
        stored = chunk_bytes(fm.box)
        if stored < minimum:
            return None
        jobs = machine_jobs(fm.api, agent.machine_id)
        j = jobs[0] if jobs else None
        if j and j["state"] == "running":
            return j, stored
        return None
    return wait_until(progressed, 60, f"{minimum} bytes stored", interval=0.05)


def test_box_killed_mid_backup(fm):
    tree = fm.tmp / "data" / "crash-box"
    make_random_tree(tree, TREE)
    expected = scan(tree)
    fm.plan(tree)
    agent = fm.agent()

    proc = fm.popen(agent, "backup", "--now")
    j, uploaded = _running_with_upload(fm, agent, proc, 40 * MiB)
    assert uploaded < TREE * 0.8, f"too late to kill: {uploaded} bytes stored"
    fm.box.kill9()
    try:
        proc.wait(timeout=120)
    except Exception:
        raise AssertionError("the agent's backup --now did not end within 120 s of the box "
                             "dying")
    assert proc.returncode != 0, f"backup --now succeeded against a dead box: {proc.stdout.read()}"
    had_chunks = len(chunk_files(fm.box))
    assert had_chunks > 0

    fm.box.start()
    api = fm.box.session()
    assert snapshots(api, agent.machine_id) == [], "a partial snapshot is visible"
    assert verify_store(fm.box) == []
    box_verify(api)  # clean: chunks uploaded before the crash are whole or absent
    r = api.get(f"jobs/{j['id']}")
    assert r.status_code == 200 and r.json()["state"] in ("failed", "cancelled"), r.text

    report = agent.backup()
    st = report["stats"]
    # what was uploaded before the crash is not sent again
    assert st["new_bytes"] <= TREE - uploaded / 2, (uploaded, st)
    assert st["new_chunks"] < st["chunks"], st
    snaps = snapshots(api, agent.machine_id)
    assert [s["id"] for s in snaps] == [report["snapshot"]["id"]], snaps
    assert len(verify_store(fm.box)) == 1
    box_verify(api)

    target = fm.tmp / "restore"
    agent.restore("latest", target)
    compare(expected, scan(restored_root(target, tree)))


def test_agent_killed_mid_backup(fm):
    tree = fm.tmp / "data" / "crash-agent"
    make_random_tree(tree, TREE)
    fm.plan(tree)
    agent = fm.agent()

    proc = fm.popen(agent, "backup", "--now")
    j, uploaded = _running_with_upload(fm, agent, proc, 40 * MiB)
    assert uploaded < TREE * 0.8, f"too late to kill: {uploaded} bytes stored"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    assert snapshots(fm.api, agent.machine_id) == [], "a partial snapshot is visible"
    assert verify_store(fm.box) == []
    box_verify(fm.api)

    # the next run succeeds (the dead agent's job does not block it) and reuses the chunks
    p = agent.run("backup", "--now", check=False)
    assert p.returncode == 0, (
        f"the backup after the agent was killed failed (rc {p.returncode}):\n{p.stdout}\n"
        f"{p.stderr}\nthe killed job on the box: {fm.api.get('jobs/' + j['id']).json()}")
    st = p.data["stats"]
    assert st["new_bytes"] <= TREE - uploaded / 2, (uploaded, st)
    assert st["new_chunks"] < st["chunks"], st
    assert [s["id"] for s in snapshots(fm.api, agent.machine_id)] == [p.data["snapshot"]["id"]]
    assert len(verify_store(fm.box)) == 1
    box_verify(fm.api)
