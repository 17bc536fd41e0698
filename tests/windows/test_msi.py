"""The Windows installer: built with wixl from appliance/agent/dist/windows/abri-agent.wxs and
inspected with msiinfo (msitools), the way a technician's msiexec would read it: the service
definition, the preconfigured enrolment data of a kit, and no secret beyond the token; and the
kit the box itself makes from the generic installer for an enrolment token."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "system"))

from conftest import assert_error, make_box, pytest_runtest_makereport  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
AGENT_EXE = Path(os.environ.get(
    "ABRI_WINDOWS_AGENT",
    ROOT / "target" / "windows" / "x86_64-pc-windows-gnu" / "debug" / "abri-agent.exe"))
BUILD_MSI = ROOT / "scripts" / "windows" / "build-msi.sh"

BOX_URL = "https://backup-abcd.local"
FINGERPRINT = "3f" * 32
TOKEN = "et-7Qk2mZ9wXc4Lr8Vb"


def build(out: Path, **env: str) -> Path:
    if not AGENT_EXE.is_file():
        pytest.fail(f"missing {AGENT_EXE} (run `make windows-test`)", pytrace=False)
    p = subprocess.run([str(BUILD_MSI), str(AGENT_EXE), str(out)], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, **env))
    assert p.returncode == 0, p.stderr[-2000:]
    assert out.is_file()
    return out


def table(msi: Path, name: str) -> list[dict[str, str]]:
    """One table as rows of column -> value (msiinfo export: names, types, key, rows)."""
    p = subprocess.run(["msiinfo", "export", str(msi), name], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.rstrip("\r\n").split("\r\n") if "\r\n" in p.stdout \
        else p.stdout.rstrip("\n").split("\n")
    columns = lines[0].split("\t")
    return [dict(zip(columns, row.split("\t"))) for row in lines[3:]]


def all_tables(msi: Path) -> dict[str, list[dict[str, str]]]:
    p = subprocess.run(["msiinfo", "tables", str(msi)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    names = [t for t in p.stdout.split() if not t.startswith("_")]
    return {t: table(msi, t) for t in names}


def test_kit_installs_the_service_with_its_enrolment_data(tmp_path):
    msi = build(tmp_path / "kit.msi", ABRI_BOX_URL=BOX_URL, ABRI_FINGERPRINT=FINGERPRINT,
                ABRI_TOKEN=TOKEN)
    tables = all_tables(msi)

    [svc] = tables["ServiceInstall"]
    assert svc["Name"] == "AbriAgent"
    assert svc["ServiceType"] == "16"  # SERVICE_WIN32_OWN_PROCESS
    assert svc["StartType"] == "2"  # SERVICE_AUTO_START
    assert svc["StartName"] == "LocalSystem"
    assert svc["Arguments"] == "service"
    assert not svc["Password"]
    [ctl] = tables["ServiceControl"]
    event = int(ctl["Event"])
    # Started at install; stopped at install and uninstall; deleted at uninstall.
    assert event & 0x01 and event & 0x02 and event & 0x20 and event & 0x80, event
    assert ctl["Name"] == "AbriAgent"
    [exe] = [f for f in tables["File"] if f["FileName"].endswith("abri-agent.exe")]
    assert int(exe["FileSize"]) == AGENT_EXE.stat().st_size

    props = {r["Property"]: r["Value"] for r in tables["Property"]}
    assert props["BOX_URL"] == BOX_URL
    assert props["FINGERPRINT"] == FINGERPRINT
    assert props["TOKEN"] == TOKEN
    assert props["MsiHiddenProperties"] == "TOKEN"  # never written to msiexec's log
    registry = {r["Name"]: (r["Root"], r["Key"], r["Value"]) for r in tables["Registry"]}
    assert registry == {
        "BoxUrl": ("2", "SOFTWARE\\Abri\\Agent\\", "[BOX_URL]"),
        "Fingerprint": ("2", "SOFTWARE\\Abri\\Agent\\", "[FINGERPRINT]"),
        "EnrolToken": ("2", "SOFTWARE\\Abri\\Agent\\", "[TOKEN]"),
    }

    # No secret beyond the token: the token appears once (its property), no other long
    # hex or key material anywhere in the tables, no password.
    text = "\n".join("\t".join(r.values()) for rows in tables.values() for r in rows)
    assert text.count(TOKEN) == 1
    assert set(re.findall(r"\b[0-9a-f]{32,}\b", text)) == {FINGERPRINT}
    for word in ("machine_key", "chunk_key", "PRIVATE KEY", "password="):
        assert word not in text


def test_generic_installer_takes_the_data_on_the_command_line(tmp_path):
    msi = build(tmp_path / "generic.msi")
    props = {r["Property"]: r["Value"] for r in table(msi, "Property")}
    for name in ("BOX_URL", "FINGERPRINT", "TOKEN"):
        assert name not in props, props
    assert {r["Value"] for r in table(msi, "Registry")} == {"[BOX_URL]", "[FINGERPRINT]",
                                                             "[TOKEN]"}
    assert [s["Name"] for s in table(msi, "ServiceInstall")] == ["AbriAgent"]


def test_a_value_that_would_break_the_installer_is_refused(tmp_path):
    p = subprocess.run([str(BUILD_MSI), str(AGENT_EXE), str(tmp_path / "bad.msi")],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, ABRI_TOKEN='a"b'))
    assert p.returncode != 0
    assert "ABRI_TOKEN" in p.stderr
    assert not (tmp_path / "bad.msi").exists()


def suminfo(msi: Path) -> dict[str, str]:
    p = subprocess.run(["msiinfo", "suminfo", str(msi)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    return dict(line.split(": ", 1) for line in p.stdout.splitlines() if ": " in line)


def test_the_box_makes_a_kit_of_its_generic_installer_for_a_token(make_box, tmp_path):
    installers = tmp_path / "installers"
    installers.mkdir()
    generic = build(installers / "abri-agent.msi")
    generic_sha = hashlib.sha256(generic.read_bytes()).hexdigest()
    box = make_box(extra_args=("--installers", str(installers))).start()
    box.activate()
    api = box.session()
    r = api.post("enrolment-tokens", json={"name": "kit", "days": 7})
    assert r.status_code == 201, r.text
    token = r.json()["token"]

    r = api.post("enrolment-tokens/windows-installer",
                 json={"token": token, "box_url": "https://192.0.2.10:8443"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-msi"
    assert r.headers["cache-control"] == "no-store"
    assert 'filename="abri-agent-backup-' in r.headers["content-disposition"]
    kit = tmp_path / "kit.msi"
    kit.write_bytes(r.content)
    tables, generic_tables = all_tables(kit), all_tables(generic)
    props = {row["Property"]: row["Value"] for row in tables.pop("Property")}
    generic_props = {row["Property"]: row["Value"] for row in generic_tables.pop("Property")}
    assert props == dict(generic_props, BOX_URL="https://192.0.2.10:8443",
                         FINGERPRINT=box.fingerprint(), TOKEN=token)
    assert tables == generic_tables  # the program, the service, the registry: unchanged
    assert suminfo(kit)["Revision number (UUID)"] != suminfo(generic)["Revision number (UUID)"]
    # The embedded cabinet (the program itself) is carried over byte for byte.
    for msi in (kit, generic):
        out = tmp_path / f"{msi.stem}-files"
        p = subprocess.run(["msiextract", "-C", str(out), str(msi)], capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, p.stderr
    [exe] = (tmp_path / "kit-files").rglob("abri-agent.exe")
    assert exe.read_bytes() == AGENT_EXE.read_bytes()

    # Without box_url the kit names the box by its mDNS name.
    r = api.post("enrolment-tokens/windows-installer", json={"token": token})
    assert r.status_code == 200, r.text
    kit.write_bytes(r.content)
    props = {row["Property"]: row["Value"] for row in table(kit, "Property")}
    assert re.fullmatch(r"https://backup-[0-9a-f]{4}\.local", props["BOX_URL"]), props

    # Bad input: a clear error, and the generic installer is left as it was.
    [token_id] = [t["id"] for t in api.get("enrolment-tokens").json()]
    assert_error(api.post("enrolment-tokens/windows-installer",
                          json={"token": token, "box_url": "http://x"}), 422, "invalid")
    assert_error(api.post("enrolment-tokens/windows-installer",
                          json={"token": token + "x"}), 401)
    assert_error(api.post("enrolment-tokens/windows-installer", json={}), 422, "invalid")
    assert api.delete(f"enrolment-tokens/{token_id}").status_code == 204
    assert_error(api.post("enrolment-tokens/windows-installer", json={"token": token}), 401)
    assert hashlib.sha256(generic.read_bytes()).hexdigest() == generic_sha
    # Not signed in: refused.
    anonymous = requests.post(box.api("enrolment-tokens/windows-installer"),
                              json={"token": token}, verify=str(box.ca_pem), timeout=15)
    assert anonymous.status_code == 401, anonymous.status_code


def test_a_box_without_the_installer_says_so(make_box, tmp_path):
    box = make_box(extra_args=("--installers", str(tmp_path / "none"))).start()
    box.activate()
    api = box.session()
    token = api.post("enrolment-tokens", json={"name": "kit", "days": 7}).json()["token"]
    r = api.post("enrolment-tokens/windows-installer", json={"token": token})
    assert_error(r, 404)
    assert "abri-agent.msi" in r.json()["message"]
    page = api.http.post(f"{box.base}/machines/enrol", data={"csrf": api.csrf, "name": "k2",
                         "days": "7"}, verify=str(box.ca_pem), timeout=15)
    assert page.status_code == 200
    assert 'id="kit-missing"' in page.text and 'id="kit-form"' not in page.text
