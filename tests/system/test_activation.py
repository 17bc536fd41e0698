"""Activation: the box before and after it is claimed with the code on its label."""

import hashlib
import json
import re
import subprocess

from conftest import HOSTNAME, assert_error, run_provision

MAX_WRONG_TRIES = 30  # a throttle must kick in before this many wrong claim codes


def openssl_fingerprint(ca_pem) -> str:
    der = subprocess.run(["openssl", "x509", "-in", str(ca_pem), "-outform", "der"],
                         capture_output=True, check=True, timeout=30).stdout
    return hashlib.sha256(der).hexdigest()


def test_status_before_activation(box):
    st = box.status()
    assert st["activated"] is False
    assert st["hostname"] == HOSTNAME
    assert re.fullmatch(r"[0-9a-f]{64}", st["fingerprint"]), st
    assert st["fingerprint"] == box.fingerprint() == openssl_fingerprint(box.ca_pem)
    assert isinstance(st["version"], str) and st["version"]
    assert st["fqdn"] is None  # no domain in the factory data


def test_start_banner(box):
    """At start abrid prints box:, console:, fingerprint: and (dev mode) nothing secret."""
    log = box.log()
    assert re.search(rf"^box: {HOSTNAME}\s*$", log, re.M), log
    assert re.search(r"^console: https://\S+", log, re.M), log
    m = re.search(r"^fingerprint: ([0-9a-f]{64})\s*$", log, re.M)
    assert m, log
    assert m.group(1) == box.fingerprint()


def test_other_calls_before_activation_are_refused(box):
    for method, path, body in [
        ("GET", "box", None),
        ("GET", "account", None),
        ("GET", "plans", None),
        ("GET", "plans/files", None),
        ("PUT", "plans/files", {"interval_hours": 3}),
        ("GET", "settings/mail", None),
        ("GET", "tokens", None),
        ("POST", "tokens", {"name": "x"}),
        ("POST", "login", {"user": "admin", "password": "whatever-password"}),
        ("POST", "logout", None),
        ("PUT", "account/language", {"language": "en"}),
        ("POST", "account/password", {"current_password": "a" * 12, "new_password": "b" * 12}),
        ("PUT", "settings/mail", {"host": "127.0.0.1", "port": 25, "security": "none",
                                  "sender": "a@b.example", "recipients": ["c@d.example"]}),
        ("POST", "settings/mail/test", {}),
        ("DELETE", "tokens/1", None),
    ]:
        # refusals with a body on a connection of their own (see test_security's keep-alive test)
        headers = {"Connection": "close"} if body is not None else {}
        r = box.request(method, path, json=body, headers=headers)
        assert_error(r, 403, "not_activated")
    r = box.get("openapi.json")
    assert r.status_code == 200, r.text[:300]
    doc = r.json()
    assert str(doc.get("openapi", "")).startswith("3.1"), doc.get("openapi")


def test_root_redirects_to_activation(box):
    r = box.raw("GET", box.base + "/", allow_redirects=False)
    assert r.status_code in (301, 302, 303, 307, 308), r.status_code
    assert r.headers["Location"].rstrip("/").endswith("/activate"), r.headers["Location"]
    page = box.raw("GET", box.base + "/")
    assert page.status_code == 200
    assert 'id="activate-form"' in page.text


def test_wrong_claim_code_is_refused(box):
    wrong = "aaaa-bbbb-cccc-dddd" if box.claim_code != "aaaa-bbbb-cccc-dddd" else "bbbb-aaaa-cccc-dddd"
    r = box.post("activate", json={"claim_code": wrong})
    assert_error(r, 403, "bad_claim_code")
    assert box.status()["activated"] is False
    # a body that is not an activation request changes nothing either
    r = box.post("activate", json={"claim_code": box.claim_code, "extra": 1})
    assert_error(r, 422, "invalid")
    assert box.status()["activated"] is False


def test_repeated_wrong_codes_are_throttled(box):
    throttled = None
    for i in range(MAX_WRONG_TRIES):
        r = box.post("activate", json={"claim_code": f"0000-0000-0000-{i:04d}"})
        if r.status_code == 429:
            throttled = r
            break
        assert_error(r, 403, "bad_claim_code")
    assert throttled is not None, f"no 429 after {MAX_WRONG_TRIES} wrong claim codes"
    assert_error(throttled, 429, "throttled")
    retry = throttled.headers.get("Retry-After")
    assert retry is not None and retry.strip().isdigit() and int(retry) > 0, retry
    # while throttled, even the right code is refused and the box stays unclaimed
    r = box.post("activate", json={"claim_code": box.claim_code})
    assert_error(r, 429, "throttled")
    assert box.status()["activated"] is False


def test_activation_with_provision_tool(box):
    fp = box.fingerprint()
    proc = run_provision("activate", box.base, "--fingerprint", fp,
                         "--claim-code", box.claim_code, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    password = out["password"]
    assert isinstance(password, str) and len(password) >= 12, out
    st = box.status()
    assert st["activated"] is True
    # the password works; a second activation is refused
    box.password = password
    s = box.session()
    assert s.get("account").json()["user"] == "admin"
    r = box.post("activate", json={"claim_code": box.claim_code})
    assert_error(r, 409, "already_activated")


def test_provision_refuses_wrong_fingerprint(box):
    proc = run_provision("activate", box.base, "--fingerprint", "00" * 32,
                         "--claim-code", box.claim_code, "--json")
    assert proc.returncode != 0, f"activation through a wrong pin succeeded: {proc.stdout}"
    assert box.status()["activated"] is False


def test_second_activation_conflicts(active_box):
    r = active_box.post("activate", json={"claim_code": active_box.claim_code})
    assert_error(r, 409, "already_activated")
    r = active_box.post("activate", json={"claim_code": "aaaa-bbbb-cccc-dddd"})
    assert r.status_code in (409, 403), r.text  # refused either way, never a new password
    assert "password" not in r.json(), r.text


def test_two_boxes_never_share_a_password(make_box):
    a = make_box("a").start()
    b = make_box("b", mac="52:54:00:12:ab:ce").start()
    assert a.claim_code != b.claim_code
    assert a.activate() != b.activate()


def test_password_never_written_or_logged_in_clear(box, tmp_path):
    proc = run_provision("activate", box.base, "--fingerprint", box.fingerprint(),
                         "--claim-code", box.claim_code, "--json")
    assert proc.returncode == 0, proc.stderr
    password = json.loads(proc.stdout)["password"]
    box.password = password
    # use it, so every code path that touches it has run: login, a failed login, a restart
    box.session()
    r = box.post("login", json={"user": "admin", "password": password + "x"})
    assert_error(r, 401, "unauthenticated")
    box.restart()
    box.session()
    box.stop()

    needle = password.encode()
    log = box.log_path.read_bytes()
    code = box.claim_code.encode()
    assert code not in log, "the claim code appears in abrid's output"
    for f in box.state_dir.rglob("*"):
        if f.is_file():
            assert code not in f.read_bytes(), f"the claim code is written in clear in {f}"
    assert log, "abrid printed nothing at all (expected at least its start lines)"
    assert needle not in log, "the admin password appears in abrid's output"
    scanned = 0
    for f in box.workdir.rglob("*"):
        if f.is_file() and not f.is_symlink():
            data = f.read_bytes()
            scanned += 1
            assert needle not in data, f"the admin password is written in clear in {f}"
            assert password.encode("utf-16-le") not in data, f"password (UTF-16) in {f}"
    assert scanned >= 3, f"only {scanned} files under {box.workdir}: is the state dir there?"
    assert (box.state_dir / "tls" / "ca.pem").is_file()
