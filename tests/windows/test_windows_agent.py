"""The cross-built Windows agent (abri-agent.exe) under Wine 8 against a real abrid on loopback:
enrolment, a backup of a tree with Windows-specific names and attributes, a restore to another
folder, and the "without snapshot" marking (Wine has no VSS).

Wine maps drive Z: to the Linux root, so the test builds the tree on the Linux side and names it
`Z:\\tmp\\...` to the agent. DOS attributes live in the `user.DOSATTRIB` extended attribute (Wine's
format, "0x22"), the read-only attribute in the Unix write bits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "system"))

from conftest import (  # noqa: E402,F401  (fixtures are used by name)
    ROOT,
    active_box,
    api,
    box,
    make_box,
    pytest_runtest_makereport,
)
from filemode_support import (  # noqa: E402
    enrolment_token,
    kill_group,
    set_files_plan,
    snapshots,
    wait_job_end,
)

AGENT_EXE = Path(os.environ.get(
    "ABRI_WINDOWS_AGENT",
    ROOT / "target" / "windows" / "x86_64-pc-windows-gnu" / "debug" / "abri-agent.exe"))
WINE_RUN = ROOT / "scripts" / "windows" / "wine-run"
WINE_TIMEOUT = 180.0  # seconds for one agent command under Wine

LONG_PARTS = ["long-directory-name-" + "x" * 40 + f"-{i}" for i in range(6)]


def win(path: Path) -> str:
    """The Windows name of a Linux path under Wine (drive Z: is /)."""
    return "Z:" + str(path).replace("/", "\\")


def agent(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not AGENT_EXE.is_file():
        pytest.fail(f"missing {AGENT_EXE} (run `make windows-test`, which cross-builds it)",
                    pytrace=False)
    argv = [str(WINE_RUN), str(AGENT_EXE), "--config", win(config), "--json", *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=WINE_TIMEOUT,
                       env=dict(os.environ, RUST_LOG="warn"))
    if check:
        assert p.returncode == 0, (f"{' '.join(args)} exited {p.returncode}\n"
                                   f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p


def dos_attributes(path: Path) -> int:
    try:
        return int(os.getxattr(path, "user.DOSATTRIB", follow_symlinks=False).decode(), 16)
    except OSError:
        return 0


HIDDEN, SYSTEM = 0x2, 0x4


def make_tree(root: Path) -> dict[str, bytes]:
    """Files whose names Windows treats specially, with attributes; returns rel -> content."""
    files = {
        "Unicode/été à Noël.txt": "accents".encode(),
        "Unicode/日本語のファイル.txt": "cjk".encode(),
        "Unicode/smile 🙂.txt": "astral plane".encode(),
        "reserved/CON": b"a device name elsewhere",
        "reserved/nul.txt": b"nul with an extension",
        "reserved/aux.log": b"aux",
        "case/README.txt": b"upper",
        "case/Readme.txt": b"mixed",
        "attrs/hidden.txt": b"hidden",
        "attrs/system.txt": b"system",
        "attrs/readonly.txt": b"read-only",
        "/".join(LONG_PARTS) + "/deep file.txt": b"beyond MAX_PATH",
        "big.bin": bytes(range(256)) * 4096,
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    os.setxattr(root / "attrs/hidden.txt", "user.DOSATTRIB", b"0x2")
    os.setxattr(root / "attrs/system.txt", "user.DOSATTRIB", b"0x4")
    (root / "attrs/readonly.txt").chmod(0o444)
    assert len(win(root / "/".join(LONG_PARTS) / "deep file.txt")) > 300
    return files


def test_windows_agent_backs_up_and_restores_under_wine(api, active_box, tmp_path):
    box = active_box
    tree = tmp_path / "tree"
    files = make_tree(tree)
    set_files_plan(api, [win(tree)], [r"*:\Users\*\AppData\Local\Temp", "*.tmp"])
    (tree / "skipped.tmp").write_bytes(b"excluded by the plan")

    config = tmp_path / "agent" / "agent.toml"
    token = enrolment_token(api, "windows")
    p = agent(config, "enroll", "--box", box.base, "--token", token,
              "--fingerprint", box.fingerprint(), "--state-dir", win(tmp_path / "agent" / "state"))
    machine = json.loads(p.stdout)["machine_id"]
    machines = {m["id"]: m for m in api.get("machines").json()}
    assert machines[machine]["os"] == "windows", machines[machine]

    p = agent(config, "backup", "--now")
    report = json.loads(p.stdout)
    assert report["stats"]["files"] == len(files), report
    snap = snapshots(api, machine)[-1]
    assert snap["without_snapshot"] is True, snap
    jobs = api.get(f"machines/{machine}/jobs").json()
    log = "\n".join(line for j in jobs for line in j.get("log", []))
    assert "without snapshot" in log, log
    page = api.http.get(f"{box.base}/machines/{machine}", verify=str(box.ca_pem), timeout=15)
    assert page.status_code == 200 and "without-snapshot" in page.text, page.status_code

    out = tmp_path / "restored"
    p = agent(config, "restore", "latest", "--to", win(out))
    restored_root = out / "Z" / str(tree).lstrip("/")
    assert restored_root.is_dir(), sorted(str(x) for x in out.rglob("*"))[:20]

    expected = dict(files)
    # Windows folders ignore case: the second of the two names gets a visible new name.
    expected["case/Readme (case 2).txt"] = expected.pop("case/Readme.txt")
    got = {str(f.relative_to(restored_root)): f.read_bytes()
           for f in restored_root.rglob("*") if f.is_file()}
    assert got == expected, sorted(set(got) ^ set(expected))
    assert json.loads(p.stdout)["report"]["warnings"] >= 1  # the case collision is reported

    for rel in files:
        src = tree / rel
        dst = restored_root / ("case/Readme (case 2).txt" if rel == "case/Readme.txt" else rel)
        # Windows keeps times in 100 ns steps.
        assert src.stat().st_mtime_ns // 100 == dst.stat().st_mtime_ns // 100, rel
    assert dos_attributes(restored_root / "attrs/hidden.txt") & HIDDEN
    assert dos_attributes(restored_root / "attrs/system.txt") & SYSTEM
    assert not dos_attributes(restored_root / "Unicode/été à Noël.txt") & (HIDDEN | SYSTEM)
    assert not os.stat(restored_root / "attrs/readonly.txt").st_mode & 0o222
    assert os.stat(restored_root / "attrs/hidden.txt").st_mode & 0o200

    # Back to the original place: a lost file comes back, the others are left alone.
    lost = tree / "Unicode" / "smile 🙂.txt"
    lost.unlink()
    (tree / "Unicode" / "été à Noël.txt").write_bytes(b"changed since")
    p = agent(config, "restore", "latest", "Z" + str(tree) + "/Unicode", "--in-place")
    report = json.loads(p.stdout)["report"]
    assert lost.read_bytes() == files["Unicode/smile 🙂.txt"]
    assert (tree / "Unicode" / "été à Noël.txt").read_bytes() == b"changed since"
    assert report["skipped_existing"] == 2, report

    # The console's "restore to machine": the agent's service loop (`run`) carries it out.
    log = (tmp_path / "service.log").open("wb")
    service = subprocess.Popen([str(WINE_RUN), str(AGENT_EXE), "--config", win(config), "run"],
                               stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        target = tmp_path / "console-restore"
        selected = "Z" + str(tree) + "/Unicode"
        r = api.post(f"machines/{machine}/restore",
                     json={"snapshot": snap["id"], "paths": [selected], "target": win(target)})
        assert r.status_code == 201, r.text
        done = wait_job_end(api, r.json()["id"], timeout=WINE_TIMEOUT)
        assert done["state"] == "succeeded", done
        got = target / "Z" / str(tree).lstrip("/")
        assert sorted(p.name for p in got.iterdir()) == ["Unicode"]
        assert {p.name: p.read_bytes() for p in (got / "Unicode").iterdir()} == {
            Path(rel).name: data for rel, data in files.items() if rel.startswith("Unicode/")}
    finally:
        kill_group(service)
        log.close()
