"""The technician's journey on Windows, under Wine 8: a kit MSI (box URL, CA fingerprint and
enrolment token built in), downloaded from the box's enrolment page, installed silently with
msiexec; the AbriAgent service starts, enrols
itself from the registry, deletes the token, and backs up when the console asks; uninstalling
leaves no service, no program and no registry key. Wine has no VSS: the backup is marked
without snapshot. A Wine prefix of its own keeps the installed service away from other tests."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "system"))

from conftest import (  # noqa: E402,F401  (fixtures are used by name)
    make_box,
    pytest_runtest_makereport,
)
from filemode_support import (  # noqa: E402
    kill_group,
    set_files_plan,
    snapshots,
    wait_job_end,
    wait_until,
)
from test_msi import build  # noqa: E402
from test_windows_agent import WINE_RUN, WINE_TIMEOUT, win  # noqa: E402

ENROL_TIMEOUT = 120.0  # seconds for the service to start and enrol


def test_msi_installs_a_service_that_enrols_backs_up_and_uninstalls(make_box, tmp_path):
    # The box carries the generic installer, as the firmware image does.
    installers = tmp_path / "installers"
    installers.mkdir()
    build(installers / "abri-agent.msi")
    box = make_box(extra_args=("--installers", str(installers))).start()
    box.activate()
    api = box.session()
    prefix = tmp_path / "wine"
    env = dict(os.environ, WINEPREFIX=str(prefix))

    def wine(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        # Files, not pipes: a service that msiexec starts may inherit the output handles
        # and keep a pipe open long after the command itself has ended.
        out, err = tmp_path / "wine.out", tmp_path / "wine.err"
        with out.open("wb") as o, err.open("wb") as e:
            p = subprocess.run([str(WINE_RUN), *args], stdout=o, stderr=e,
                               timeout=WINE_TIMEOUT, env=env)
        p.stdout = out.read_text(errors="replace")
        p.stderr = err.read_text(errors="replace")
        if check:
            assert p.returncode == 0, f"{args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p

    tree = tmp_path / "tree"
    (tree / "docs").mkdir(parents=True)
    (tree / "docs" / "rapport été.txt").write_bytes(b"quarterly report")
    set_files_plan(api, [win(tree)])
    # The technician makes a token on the console's enrolment page, which shows the msiexec
    # line and offers the installer with the token built in. The box's name needs mDNS: the
    # technician gives the address the machines reach it at (here, loopback).
    r = api.http.post(f"{box.base}/machines/enrol", data={"csrf": api.csrf, "name": "kit",
                      "days": "30"}, verify=str(box.ca_pem), timeout=15)
    assert r.status_code == 200, r.status_code
    found = re.search(r'id="enrol-command-windows">([^<]*)<', r.text)
    assert found, r.text[-2000:]
    line = html.unescape(found.group(1))
    assert line.startswith("msiexec /i abri-agent.msi /qn BOX_URL=https://backup-abcd.local "), line
    values = dict(part.split("=", 1) for part in line.split()[4:])
    assert values["FINGERPRINT"] == box.fingerprint(), line
    token = values["TOKEN"]
    form = re.search(r'<form id="kit-form".*?</form>', r.text, re.S)
    assert form, r.text[-2000:]
    hidden = dict(re.findall(r'name="(csrf|token)" value="([^"]*)"', form.group(0)))
    assert html.unescape(hidden["token"]) == token
    r = api.http.post(f"{box.base}/machines/enrol/windows-installer",
                      data={"csrf": html.unescape(hidden["csrf"]), "token": token,
                            "box_url": box.base},
                      verify=str(box.ca_pem), timeout=60)
    assert r.status_code == 200, r.text[-2000:]
    assert r.headers["content-type"] == "application/x-msi"
    msi = tmp_path / "kit.msi"
    msi.write_bytes(r.content)
    wine("cmd", "/c", "ver")  # creates the prefix
    # Wine ends its services with the prefix's last program: a console kept open keeps the
    # AbriAgent service alive between the commands below.
    keeper = subprocess.Popen([str(WINE_RUN), "cmd"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              start_new_session=True)
    try:
        wine("msiexec", "/i", win(msi), "/qn")
        assert "AbriAgent" in wine("sc", "query", "AbriAgent").stdout

        def enrolled():
            return [m for m in api.get("machines").json() if m["os"] == "windows"]
        [machine] = wait_until(enrolled, ENROL_TIMEOUT, "the service to enrol", interval=1)
        # The token left the registry once used; the box's address stays.
        key = r"HKLM\SOFTWARE\Abri\Agent"
        wait_until(lambda: wine("reg", "query", key, "/v", "EnrolToken", check=False)
                   .returncode != 0, 30, "the token to leave the registry", interval=1)
        assert box.base in wine("reg", "query", key, "/v", "BoxUrl").stdout
        config = prefix / "drive_c" / "ProgramData" / "Abri" / "agent.toml"
        assert config.is_file() and token not in config.read_text()

        # Back up from the console (unless the box's scheduler queued the first one already).
        r = api.post(f"machines/{machine['id']}/backup")
        if r.status_code == 201:
            job_id = r.json()["id"]
        else:
            assert "already" in r.text, (r.status_code, r.text)
            jobs = api.get(f"machines/{machine['id']}/jobs").json()
            job_id = next(j["id"] for j in jobs if j["kind"] == "backup")
        done = wait_job_end(api, job_id, timeout=WINE_TIMEOUT)
        assert done["state"] == "succeeded", done
        assert any("without snapshot" in line for line in done.get("log", [])), done
        snap = snapshots(api, machine["id"])[-1]
        assert snap["without_snapshot"] is True and snap["stats"]["files"] == 1, snap

        wine("msiexec", "/x", win(msi), "/qn")
        assert wine("sc", "query", "AbriAgent", check=False).returncode != 0
        assert not (prefix / "drive_c" / "Program Files" / "Abri" / "abri-agent.exe").exists()
        assert wine("reg", "query", key, check=False).returncode != 0
    finally:
        keeper.stdin.close()
        subprocess.run(["/usr/lib/wine/wineserver", "-k"], env=env, timeout=60, check=False)
        kill_group(keeper)
