"""The box seen from its LAN: a computer on the box's network segment (a namespace the test
creates, joined to the box's primary NIC by a tap device) resolves `backup-abcd.local`,
discovers `_abri._tcp` and activates the box with `abri-provision`, all over mDNS."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from conftest import PROVISION, HTTP_TIMEOUT, Lan, claim_code, login

HERE = Path(__file__).resolve().parent
LAN_IPV4 = Lan.ADDRESS.split("/")[0]


def discover(lan: Lan, name: str, *, activated: bool, timeout: float = 120.0) -> dict:
    """Runs `abri-provision discover` on the LAN until `name` is listed in the wanted
    activation state with an IPv4 address."""
    deadline = time.monotonic() + timeout
    seen = "nothing"
    while time.monotonic() < deadline:
        r = lan.run([PROVISION, "discover", "--json", "--timeout", "4"], timeout=60)
        assert r.returncode == 0, r.stderr
        boxes = {b["name"]: b for b in json.loads(r.stdout)}
        found = boxes.get(name)
        if found and found["activated"] == activated and any(
                "." in a for a in found["addresses"]):
            return found
        seen = r.stdout.strip() or "no box"
    raise AssertionError(f"{name} (activated={activated}) not discovered within {timeout} s: {seen}")


def test_the_lan_finds_and_activates_the_box_over_mdns(make_guest, lan):
    box = make_guest("52:54:00:12:ab:cd", lan=lan)
    box.boot()
    status = box.wait_console()
    assert status["hostname"] == "backup-abcd"

    # backup-abcd.local resolves, asked by a plain mDNS query (not the box's own library).
    r = lan.run([sys.executable, HERE / "mdns_query.py", "backup-abcd.local", LAN_IPV4, "90"],
                timeout=120)
    assert r.returncode == 0, r.stderr
    address = r.stdout.strip()
    assert address.startswith("169.254."), address  # link-local: the LAN has no DHCP

    # The technician's tool finds the box as new, with the fingerprint of its CA.
    found = discover(lan, "backup-abcd", activated=False)
    assert address in found["addresses"], found
    assert found["fingerprint"] == status["fingerprint"], found
    assert found["port"] == 443

    # ... and activates it by name: mDNS gives the address and the pin, TLS checks the name.
    r = lan.run([PROVISION, "activate", "backup-abcd", "--json"], timeout=120,
                env={"ABRI_CLAIM_CODE": claim_code()})
    assert r.returncode == 0, r.stderr
    activation = json.loads(r.stdout)
    assert activation["box"] == "backup-abcd"
    assert activation["console"] == "https://backup-abcd.local"

    # The password works, and the LAN now hears that the box is activated.
    session = login(box, activation["password"])
    assert session.get(box.url("/api/v1/box"), timeout=HTTP_TIMEOUT).status_code == 200
    discover(lan, "backup-abcd", activated=True, timeout=60)
