"""The box's identity (name, FQDN, CA) and what survives restarts and crashes."""

import socket
import ssl
import threading
import time

import pytest

from conftest import DEFAULT_MAC, HOSTNAME, HTTP_TIMEOUT

CRASH_ROUNDS = 3


def test_box_endpoint(api):
    r = api.get("box")
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["hostname"] == HOSTNAME
    assert b["fqdn"] is None
    assert b["fingerprint"] == api.box.fingerprint()
    assert b["activated"] is True
    assert isinstance(b["version"], str) and b["version"]
    assert b["mac"].lower() == DEFAULT_MAC
    assert isinstance(b["addresses"], list)
    assert isinstance(b["uptime_seconds"], int) and b["uptime_seconds"] >= 0
    assert isinstance(b["disks"], list) and b["disks"], b["disks"]
    for d in b["disks"]:
        assert d["mount"].startswith("/")
        assert 0 <= d["free_bytes"] <= d["total_bytes"]
    assert "interface" in b


def tls_handshake(box, server_name: str) -> None:
    """A TLS handshake with 127.0.0.1 that checks the certificate against `server_name`."""
    ctx = ssl.create_default_context(cafile=str(box.ca_pem))
    with socket.create_connection(("127.0.0.1", box.https_port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=server_name):
            pass


def test_server_certificate_names(box):
    for name in ("127.0.0.1", "localhost", f"{HOSTNAME}.local"):
        tls_handshake(box, name)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(box, "intruder.example")


def test_fqdn_from_the_factory_domain(make_box):
    box = make_box(domain="acme.example").start()
    st = box.status()
    assert st["hostname"] == HOSTNAME
    assert st["fqdn"] == "backup.abcd.acme.example"
    tls_handshake(box, "backup.abcd.acme.example")
    box.activate()
    assert box.session().get("box").json()["fqdn"] == "backup.abcd.acme.example"


def test_restart_keeps_identity_activation_and_plans(active_box):
    box = active_box
    ca_before = box.ca_pem.read_bytes()
    st_before = box.status()
    s = box.session()
    plan = s.get("plans/image").json()
    body = {k: v for k, v in plan.items() if k not in ("id", "kind")}
    body["interval_hours"] = 72
    assert s.put("plans/image", json=body).status_code == 200

    box.restart()
    assert box.ca_pem.read_bytes() == ca_before
    st = box.status()
    assert st["hostname"] == st_before["hostname"] == HOSTNAME
    assert st["fingerprint"] == st_before["fingerprint"]
    assert st["activated"] is True
    s = box.session()
    assert s.get("plans/image").json()["interval_hours"] == 72


def test_new_mac_keeps_the_name(active_box):
    box = active_box
    box.stop()
    mark = len(box.log())
    box.mac = "52:54:00:99:ef:01"
    box.start()
    st = box.status()
    assert st["hostname"] == HOSTNAME, "the box renamed itself after a MAC change"
    after = box.log()[mark:].lower()
    assert "52:54:00:99:ef:01" in after, "abrid's log does not mention the changed MAC"
    assert box.session().get("box").json()["hostname"] == HOSTNAME


def test_kill_9_during_writes_loses_no_acknowledged_edit(active_box):
    box = active_box
    s = box.session()
    template = {k: v for k, v in s.get("plans/files").json().items() if k not in ("id", "kind")}

    for round_no in range(CRASH_ROUNDS):
        acked: list[int] = []
        sent: list[int] = []
        stop = threading.Event()
        base = 10 + round_no * 1000

        def writer():
            n = base
            while not stop.is_set() and n < base + 900:
                body = dict(template, interval_hours=n)
                sent.append(n)
                try:
                    r = s.put("plans/files", json=body, timeout=5)
                except Exception:
                    return  # the box died under us
                if r.status_code == 200:
                    acked.append(n)
                n += 1

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        deadline = time.monotonic() + 10
        while len(acked) < 5 + 3 * round_no and time.monotonic() < deadline:
            time.sleep(0.01)
        assert acked, f"round {round_no}: no PUT was acknowledged before the kill"
        box.kill9()
        stop.set()
        t.join(timeout=HTTP_TIMEOUT)
        assert not t.is_alive()

        box.start()
        s = box.session()
        got = s.get("plans/files")
        assert got.status_code == 200, got.text
        value = got.json()["interval_hours"]
        last = acked[-1]
        # the last acknowledged edit is there, or the one in flight after it; nothing older
        assert value in (last, last + 1) and value in sent, \
            f"round {round_no}: plan has interval_hours={value}, last acknowledged {last}"
        plan = got.json()
        assert plan["retention"] == template["retention"] and plan["excludes"] == template["excludes"]
