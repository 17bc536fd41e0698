"""Firmware updates on the booted image, through OVMF and GRUB (the A/B boot is under test):
a signed bundle of another version installed from the console comes back on the other slot
with the box's state; a bundle whose abrid cannot start, installed through the API, is
given up and the box falls back to the slot it left."""

from __future__ import annotations

import os
import time

import requests

from conftest import (HTTP_TIMEOUT, OUT, activate, image_env, journal_entries, login,
                      server_certificate)

UPDATE_TIMEOUT = 900.0  # upload, rauc install, reboot through OVMF and GRUB (TCG)
ROLLBACK_TIMEOUT = 900.0  # + boot the bad slot, give up on abrid, reboot, boot the good one


def firmware(session: requests.Session, box) -> dict:
    r = session.get(box.url("/api/v1/system/firmware"), timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def wait_firmware(box, password: str, want, timeout: float, what: str) -> tuple[dict, requests.Session]:
    """Polls the firmware API (logging in again after each reboot) until `want(info)`."""
    deadline = time.monotonic() + timeout
    seen = "no answer"
    while time.monotonic() < deadline:
        if box.proc.poll() is not None:
            raise AssertionError(f"QEMU exited ({box.proc.returncode}); {box.tail()}")
        try:
            session = login(box, password)
            info = firmware(session, box)
            if want(info):
                return info, session
            seen = info
        except (requests.RequestException, AssertionError, ValueError) as e:
            seen = str(e)[:300]
        time.sleep(5)
    raise AssertionError(f"{what}: not seen within {timeout} s (last: {seen}); {box.tail()}")


def slot(info: dict, name: str) -> dict:
    return next(s for s in info["slots"] if s["bootname"] == name)


def test_update_to_the_other_slot_then_a_broken_update_rolls_back(make_guest):
    version = image_env()["ABRI_VERSION"]
    box = make_guest("52:54:00:12:ab:cd", uefi=True)
    box.boot()
    status = box.wait_console()
    session = activate(box)
    password = session.password  # type: ignore[attr-defined]
    cert = server_certificate(box.port, "backup-abcd.local")["pem"]
    info = firmware(session, box)
    assert info["slot"] == "A" and info["version"] == version, info
    assert info["last_update"] is None, info
    # A file that is no signed bundle is refused, and nothing is recorded or changed.
    r = session.post(box.url("/api/v1/system/update"), data=os.urandom(1 << 20),
                     headers={"Content-Type": "application/octet-stream"}, timeout=120)
    assert r.status_code == 422 and r.json()["error"] == "update_rejected", r.text
    info = firmware(session, box)
    assert info["slot"] == "A" and info["last_update"] is None, info
    # State that the update must keep.
    r = session.post(box.url("/api/v1/tokens"), json={"name": "kept-across-updates"},
                     timeout=HTTP_TIMEOUT)
    assert r.status_code in (200, 201), r.text
    token_id = r.json()["id"]

    # A bundle of another version, uploaded through the console's form.
    with open(OUT / "next.raucb", "rb") as bundle:
        r = session.post(box.url("/settings/system/update"),
                         data={"csrf": session.headers["X-CSRF-Token"]},
                         files={"bundle": ("next.raucb", bundle, "application/octet-stream")},
                         timeout=600)
    assert r.status_code == 200, r.text[:2000]
    assert f"{version}-next" in r.text

    # abrid answers as soon as it is ready; mark-good runs right after (ExecStartPost), so
    # the slot is "bad" (on trial, TRY=1) for a moment before it is "good".
    info, session = wait_firmware(
        box, password,
        lambda i: i["slot"] == "B" and slot(i, "B")["boot_status"] == "good",
        UPDATE_TIMEOUT, "the box back on slot B, marked good")
    assert info["version"] == f"{version}-next", info
    assert info["last_update"]["result"] == "booted", info
    assert info["last_update"]["version"] == f"{version}-next", info
    assert slot(info, "B")["booted"] and slot(info, "B")["boot_status"] == "good", info
    # Same box, same state.
    again = box.wait_console()
    assert again["hostname"] == "backup-abcd" and again["fingerprint"] == status["fingerprint"]
    assert server_certificate(box.port, "backup-abcd.local")["pem"] == cert
    tokens = session.get(box.url("/api/v1/tokens"), timeout=HTTP_TIMEOUT).json()
    assert token_id in {t["id"] for t in tokens}
    page = session.get(box.url("/settings/system"), timeout=HTTP_TIMEOUT)
    assert page.status_code == 200 and f"{version}-next" in page.text

    # A bundle whose abrid never starts, through the API: the box tries slot A, gives up on
    # it and comes back to slot B, which it left.
    with open(OUT / "broken.raucb", "rb") as bundle:
        r = session.post(box.url("/api/v1/system/update"), data=bundle,
                         headers={"Content-Type": "application/octet-stream"}, timeout=600)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == f"{version}-broken" and r.json()["from_slot"] == "B", r.text

    info, session = wait_firmware(
        box, password,
        lambda i: i["slot"] == "B" and (i["last_update"] or {}).get("result") == "rolled_back",
        ROLLBACK_TIMEOUT, "the rollback to slot B")
    assert info["version"] == f"{version}-next", info
    assert info["last_update"]["version"] == f"{version}-broken", info
    assert slot(info, "A")["boot_status"] == "bad", info
    tokens = session.get(box.url("/api/v1/tokens"), timeout=HTTP_TIMEOUT).json()
    assert token_id in {t["id"] for t in tokens}
    box.poweroff()

    # The journal tells why: the broken slot's abrid failed and the slot was given up. GRUB
    # gave every boot the same machine ID, so the box's logs are one machine's.
    entries = journal_entries(box)
    messages = [str(e.get("MESSAGE", "")) for e in entries]
    assert any("broken on purpose" in m for m in messages)
    assert any("slot-failed: abrid does not start on slot A" in m for m in messages)
    assert len({e["_MACHINE_ID"] for e in entries}) == 1
    assert len({e["_BOOT_ID"] for e in entries}) >= 4
