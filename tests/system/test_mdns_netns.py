"""mDNS across a real link: the box in one network namespace, the technician's laptop in
another, joined by a veth pair on 198.18.0.0/24 (the benchmarking range). Nothing leaves the
namespaces this test creates."""

import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import HOSTNAME, PROVISION, require_binaries

BOX_IP = "198.18.0.1"
TECH_IP = "198.18.0.2"
DISCOVER_TRIES = 4


def sh(*args, check=True, timeout=30):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=timeout)


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (not root here)")
    if shutil.which("ip") is None:
        pytest.skip("needs the `ip` tool (iproute2) to create network namespaces")
    pid = os.getpid()
    box_ns, tech_ns = f"abri-box-{pid}", f"abri-tech-{pid}"
    box_if, tech_if = f"vabox{pid % 100000}", f"vatech{pid % 100000}"
    made = []
    try:
        for ns in (box_ns, tech_ns):
            r = sh("ip", "netns", "add", ns, check=False)
            if r.returncode != 0:
                pytest.skip(f"cannot create a network namespace here: {r.stderr.strip()}")
            made.append(ns)
        sh("ip", "link", "add", box_if, "netns", box_ns, "type", "veth",
           "peer", "name", tech_if, "netns", tech_ns)
        for ns, ifname, ip in ((box_ns, box_if, BOX_IP), (tech_ns, tech_if, TECH_IP)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            # multicast (mDNS, 224.0.0.251) goes out of the veth, nowhere else
            sh("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", ifname)
        yield {"box_ns": box_ns, "tech_ns": tech_ns, "box_if": box_if, "tech_if": tech_if}
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def in_tech(netns, *args, input=None, timeout=60):
    return subprocess.run(["ip", "netns", "exec", netns["tech_ns"], *args], input=input,
                          capture_output=True, text=True, timeout=timeout)


def tech_curl(netns, box, path, *extra):
    return in_tech(netns, "curl", "-sS", "--max-time", "5", "--cacert", str(box.ca_pem),
                   *extra, f"{box.base}{path}", timeout=20)


def unreachable_addresses(netns, entry) -> list[str]:
    """Advertised addresses at which the box does not answer HTTPS on its advertised port.
    A reachability probe only (-k): trust is checked through the fingerprint elsewhere."""
    bad = []
    for addr in entry["addresses"]:
        host = f"[{addr}%25{netns['tech_if']}]" if ":" in addr else addr
        r = in_tech(netns, "curl", "-sSk", "-g", "--max-time", "5", "-o", "/dev/null",
                    "-w", "%{http_code}", f"https://{host}:{entry['port']}/api/v1/status",
                    timeout=20)
        if r.stdout.strip() != "200":
            bad.append(f"{addr}: {r.stderr.strip() or r.stdout.strip()}")
    return bad


def discover(netns) -> list:
    r = in_tech(netns, str(PROVISION), "discover", "--json", "--timeout", "5", timeout=60)
    assert r.returncode == 0, f"discover failed: {r.stderr}"
    found = json.loads(r.stdout)
    assert isinstance(found, list), found
    return found


def find_box(netns, want_activated: bool) -> tuple[dict | None, list]:
    seen = []
    for _ in range(DISCOVER_TRIES):
        seen = discover(netns)
        for entry in seen:
            if entry.get("name") == HOSTNAME and entry.get("activated") is want_activated:
                return entry, seen
        time.sleep(1)
    return None, seen


def test_discover_and_activate_across_namespaces(netns, make_box):
    require_binaries()
    box = make_box(prefix=("ip", "netns", "exec", netns["box_ns"]), https_addr=BOX_IP,
                   mdns=True, extra_args=("--interface", netns["box_if"]))
    box.start(wait=False)
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        assert box.proc.poll() is None, f"abrid exited: {box.log()}"
        if box.ca_pem.is_file():
            r = tech_curl(netns, box, "/api/v1/status")
            if r.returncode == 0:
                status = json.loads(r.stdout)
                break
        time.sleep(0.3)
    assert status is not None, f"abrid in {netns['box_ns']} never answered; log:\n{box.log()}"
    assert status["activated"] is False
    fingerprint = box.fingerprint()

    entry, seen = find_box(netns, want_activated=False)
    assert entry is not None, f"{HOSTNAME} not discovered; discover saw {seen}; log:\n{box.log()}"
    assert BOX_IP in entry["addresses"], entry
    assert entry["fingerprint"] == fingerprint, entry
    # every advertised address must serve the console, since a tool may pick any of them;
    # checked at the end, so that the steps below still run and report
    bad = unreachable_addresses(netns, entry)

    out = None
    for _ in range(3):
        r = in_tech(netns, str(PROVISION), "activate", HOSTNAME, "--claim-code", box.claim_code,
                    "--json")
        if r.returncode == 0:
            out = json.loads(r.stdout)
            break
        time.sleep(1)
    assert out is not None, (f"activation by name failed: {r.stderr}; discovered entry {entry}; "
                             f"advertised but unreachable: {bad}")
    password = out["password"]
    assert isinstance(password, str) and len(password) >= 12

    r = tech_curl(netns, box, "/api/v1/login", "-H", "Content-Type: application/json",
                  "-d", json.dumps({"user": "admin", "password": password}),
                  "-o", "/dev/null", "-w", "%{http_code}")
    assert r.stdout.strip() == "200", (r.stdout, r.stderr)

    entry, seen = find_box(netns, want_activated=True)
    assert entry is not None, f"discover never showed {HOSTNAME} activated; saw {seen}"
    assert entry["fingerprint"] == fingerprint

    assert not bad, f"{HOSTNAME} advertises addresses where it does not answer: {bad}; entry {entry}"
