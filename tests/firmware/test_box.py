"""The booted test image: identity from the MAC, certificate, state and logs across boots,
the data partition grown, backup disks, power cuts."""

from __future__ import annotations

import subprocess
import threading
import time

import requests

from conftest import HTTP_TIMEOUT, activate, journal_entries, login, server_certificate


def blank_disk(path, size: int):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_name_certificate_and_state_survive_a_reboot(make_guest, tmp_path):
    box = make_guest("52:54:00:12:ab:cd")
    # A blank second disk present at power-on becomes the backup disk during the first boot.
    box.add_disk(blank_disk(tmp_path / "blank.img", 1024**3))  # vdb
    box.boot()
    status = box.wait_console()
    assert status["hostname"] == "backup-abcd"
    assert status["activated"] is False
    cert = server_certificate(box.port, "backup-abcd.local")
    assert "DNS:backup-abcd.local" in cert["text"], cert["text"]
    session = activate(box)
    info = session.get(box.url("/api/v1/box"), timeout=HTTP_TIMEOUT).json()
    assert info["hostname"] == "backup-abcd"
    assert info["mac"] == "52:54:00:12:ab:cd"
    data = [d for d in info["disks"] if d["mount"] == "/data"]
    assert data and data[0]["fs_type"] == "ext4", info["disks"]
    # The 64 MiB data file system of the image was grown to the end of the 3 GiB disk.
    assert data[0]["total_bytes"] > 2 * 1024**3, data
    fw = session.get(box.url("/api/v1/system/firmware"), timeout=HTTP_TIMEOUT).json()
    assert fw["slot"] == "A"
    assert fw["updates_supported"] is True
    backups = [d for d in info["disks"] if d["mount"] == "/srv/backups"]
    assert backups and backups[0]["device"] == "/dev/vdb", info["disks"]
    assert disks_by_name(session, box)["vdb"]["state"] == "store"

    box.poweroff()
    box.boot()
    again = box.wait_console()
    assert again["hostname"] == "backup-abcd"
    assert again["fingerprint"] == status["fingerprint"]
    assert again["activated"] is True
    assert server_certificate(box.port, "backup-abcd.local")["pem"] == cert["pem"]
    session = login(box, session.password)  # type: ignore[attr-defined]
    info = session.get(box.url("/api/v1/box"), timeout=HTTP_TIMEOUT).json()
    backups = [d for d in info["disks"] if d["mount"] == "/srv/backups"]
    assert backups and backups[0]["device"] == "/dev/vdb", info["disks"]
    box.poweroff()

    # The journal on the data partition holds abrid's lines of both boots.
    entries = journal_entries(box)
    abrid_boots: dict[str, list[str]] = {}
    for e in entries:
        if e.get("_SYSTEMD_UNIT") == "abrid.service":
            abrid_boots.setdefault(e["_BOOT_ID"], []).append(str(e.get("MESSAGE", "")))
    assert len(abrid_boots) == 2, f"abrid's lines of {len(abrid_boots)} boots kept, expected 2"
    for lines in abrid_boots.values():
        assert any("backup-abcd" in line for line in lines), lines[:20]


def disks_by_name(session, box) -> dict:
    r = session.get(box.url("/api/v1/system/disks"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return {d["name"]: d for d in r.json()}


def wait_disk_state(session, box, name: str, state: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = disks_by_name(session, box).get(name)
            if seen and seen["state"] == state:
                return seen
        except requests.RequestException as e:  # abrid restarting after an adoption
            seen = str(e)
        time.sleep(3)
    raise AssertionError(f"{name} did not become {state} within {timeout} s: {seen}")


def test_a_disk_with_files_is_left_alone_and_a_plugged_blank_disk_is_adopted(make_guest,
                                                                              tmp_path):
    full = tmp_path / "full.img"
    files = tmp_path / "files"
    (files / "photos").mkdir(parents=True)
    (files / "photos" / "holiday.txt").write_text("keep me\n")
    with open(full, "wb") as f:
        f.truncate(256 * 1024**2)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "customer", "-d", str(files), str(full)],
                   check=True, timeout=60)

    box = make_guest("52:54:00:12:ab:cd")
    box.add_disk(full)  # vdb
    box.boot()
    box.wait_console()
    session = activate(box)
    other = disks_by_name(session, box)["vdb"]
    assert other["state"] == "needs_confirmation"
    assert "ext4" in other["holds"] and "customer" in other["holds"], other
    assert disks_by_name(session, box)["vda"]["state"] == "system"

    # Without an explicit confirmation the box refuses, and changes nothing.
    r = session.post(box.url("/api/v1/system/disks/vdb/adopt"), json={}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 409 and r.json()["error"] == "confirmation_required", r.text
    r = session.post(box.url("/settings/system/disks/vdb/adopt"),
                     data={"csrf": session.headers["X-CSRF-Token"]}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 409, r.text
    page = session.get(box.url("/settings/system"), timeout=HTTP_TIMEOUT)
    assert 'data-disk="vdb" data-state="needs_confirmation"' in page.text
    # The system disk is never offered, confirmed or not.
    r = session.post(box.url("/api/v1/system/disks/vda/adopt"), json={"confirm": True},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 422, r.text

    # A blank disk plugged in while the box runs is adopted (abrid restarts onto it).
    box.hotplug_disk(blank_disk(tmp_path / "blank.img", 1024**3))  # vdc
    store = wait_disk_state(session, box, "vdc", "store")
    assert store["size_bytes"] == 1024**3
    box.wait_console()
    info = session.get(box.url("/api/v1/box"), timeout=HTTP_TIMEOUT).json()
    backups = [d for d in info["disks"] if d["mount"] == "/srv/backups"]
    assert backups and backups[0]["device"] == "/dev/vdc", info["disks"]
    assert disks_by_name(session, box)["vdb"]["state"] == "needs_confirmation"
    # One backup disk: even confirmed, the disk with files is now refused.
    r = session.post(box.url("/api/v1/system/disks/vdb/adopt"), json={"confirm": True},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code == 422 and "vdb is left as it is" in r.json()["message"], r.text
    box.poweroff()

    listing = subprocess.run(["debugfs", "-R", "cat /photos/holiday.txt", str(full)],
                             capture_output=True, text=True, timeout=60)
    assert listing.stdout == "keep me\n", listing.stderr


def test_another_mac_is_another_box_and_a_power_cut_leaves_it_clean(make_guest):
    # Another MAC on a fresh disk: another name and a certificate for it.
    box = make_guest("52:54:00:77:12:34")
    box.boot()
    status = box.wait_console()
    assert status["hostname"] == "backup-1234"
    assert "DNS:backup-1234.local" in server_certificate(box.port, "backup-1234.local")["text"]

    # Power cut during writes, then a clean boot.
    session = activate(box)
    created: list[str] = []
    stop = threading.Event()

    def write_heavy():
        n = 0
        while not stop.is_set() and n < 2000:
            n += 1
            try:
                r = session.post(box.url("/api/v1/tokens"), json={"name": f"t{n}"}, timeout=5)
                if r.status_code == 200 or r.status_code == 201:
                    created.append(r.json()["id"])
            except requests.RequestException:
                return

    writer = threading.Thread(target=write_heavy)
    writer.start()
    deadline = time.monotonic() + 60
    while len(created) < 20 and time.monotonic() < deadline:
        time.sleep(0.2)
    box.power_cut()
    stop.set()
    writer.join(timeout=30)
    assert len(created) >= 20, "the box did not take writes before the cut"

    box.boot()
    status = box.wait_console()
    assert status["activated"] is True
    session = login(box, session.password)  # type: ignore[attr-defined]
    r = session.get(box.url("/api/v1/tokens"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    ids = {t["id"] for t in r.json()}
    # Every token the box confirmed before the cut is there: an answer is sent only after
    # the commit reached the disk.
    missing = set(created) - ids
    assert not missing, f"{len(missing)} confirmed tokens lost in the power cut"
    assert status["hostname"] == "backup-1234"
