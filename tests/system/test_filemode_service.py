"""`abri-agent run` as a service: the box owns the schedule and the console's commands
(back up now, restore to the machine, cancel) reach the agent on its long poll."""

from __future__ import annotations

import os

from filemode_support import (verify_store, compare, fm, job, machine_jobs,  # noqa: F401
                              make_random_tree, restored_root, scan, snapshots, wait_job_end,
                              wait_until)

MiB = 1024 * 1024


def test_service_runs_schedule_backup_restore_and_cancel(fm):
    tree = fm.tmp / "data" / "svc"
    (tree / "docs" / "sub").mkdir(parents=True)
    (tree / "docs" / "a.txt").write_bytes(b"alpha\n")
    (tree / "docs" / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (tree / "other.txt").write_bytes(b"not restored\n")
    os.chown(tree / "docs" / "a.txt", 2000, 3000)
    big = fm.tmp / "data" / "svc-big"
    make_random_tree(big, 400 * MiB)
    fm.plan(tree)

    # machine B only runs the service: the box's scheduler (every minute) finds its first
    # backup due and the service carries it out, with nobody asking
    sched = fm.agent("scheduled")
    sched.start_service()
    agent = fm.agent("agent")
    agent.start_service()

    # back up now, from the console API
    r = fm.api.post(f"machines/{agent.machine_id}/backup")
    assert r.status_code == 201, r.text
    queued = r.json()
    assert queued["state"] in ("queued", "running") and queued["machine"] == agent.machine_id
    done = wait_job_end(fm.api, queued["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert done["snapshot"], done
    snaps = snapshots(fm.api, agent.machine_id)
    assert [s["id"] for s in snaps] == [done["snapshot"]], snaps
    expected = scan(tree)

    # restore to the machine: some paths, into a directory of the machine
    target = fm.tmp / "svc-restore"
    r = fm.api.post(f"machines/{agent.machine_id}/restore",
                    json={"snapshot": done["snapshot"], "paths": [str(tree / "docs")],
                          "target": str(target)})
    assert r.status_code == 201, r.text
    restore = wait_job_end(fm.api, r.json()["id"], timeout=60)
    assert restore["state"] == "succeeded", restore
    got = restored_root(target, tree)
    assert sorted(os.listdir(got)) == ["docs"], os.listdir(got)
    compare({k: v for k, v in expected.items() if k.startswith("docs")},
            {k: v for k, v in scan(got).items() if k.startswith("docs")}, "service restore")

    # cancel a running backup: the job ends `cancelled` and no snapshot is committed
    fm.plan(big)
    r = fm.api.post(f"machines/{agent.machine_id}/backup")
    assert r.status_code == 201, r.text
    jid = r.json()["id"]
    wait_until(lambda: (lambda j: j["state"] == "running" and j["progress"]["bytes_scanned"] > 0
                        and j)(job(fm.api, jid)), 30, "the big backup to make progress")
    r = fm.api.post(f"jobs/{jid}/cancel")
    assert r.status_code == 202, r.text
    ended = wait_job_end(fm.api, jid, timeout=30)
    assert ended["state"] == "cancelled", ended
    assert not ended["snapshot"], ended
    assert [s["id"] for s in snapshots(fm.api, agent.machine_id)] == [done["snapshot"]]
    assert agent.service.poll() is None, "the service died:\n" + agent.log()[-3000:]
    verify_store(fm.box)

    # the service still serves: a second console backup (small tree again) succeeds
    fm.plan(tree)
    r = fm.api.post(f"machines/{agent.machine_id}/backup")
    assert r.status_code == 201, r.text
    again = wait_job_end(fm.api, r.json()["id"], timeout=60)
    assert again["state"] == "succeeded", again
    assert len(snapshots(fm.api, agent.machine_id)) == 2

    # the scheduled one (the scheduler ticks every 60 s after abrid starts)
    def scheduled_done():
        jobs = [j for j in machine_jobs(fm.api, sched.machine_id) if j["trigger"] == "schedule"]
        return jobs and jobs[0]["state"] in ("succeeded", "failed", "cancelled") and jobs[0]
    sj = wait_until(scheduled_done, 90, "a scheduled backup of the idle machine", interval=1)
    assert sj["state"] == "succeeded", sj
    assert sj["full"] is True, sj  # the first run of a plan is a full one
    assert [s["id"] for s in snapshots(fm.api, sched.machine_id)] == [sj["snapshot"]]
    fm.api.post(f"jobs/{jid}/cancel")  # harmless: already ended
    for a in (agent, sched):
        assert a.service.poll() is None, "the service died:\n" + a.log()[-3000:]
        a.stop_service()
    verify_store(fm.box)
