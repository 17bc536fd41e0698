"""Bad input and attacks: CSRF, missing sessions, oversized bodies, API tokens, plain HTTP,
malformed factory files."""

import http.client
import json
import re
import ssl
import subprocess
from urllib.parse import urlparse

import pytest
import requests

from conftest import ABRID, assert_error, free_port, make_factory, require_binaries


# Requests refused before their body is read travel on a connection of their own here, so
# that these tests judge the refusal; test_refused_request_leaves_the_connection_usable
# checks what happens to a kept-alive connection after such a refusal.
CLOSE = {"Connection": "close"}


def test_csrf_is_required_with_the_session_cookie(api):
    before = api.get("plans/files").json()
    body = {k: v for k, v in before.items() if k not in ("id", "kind")}
    body["interval_hours"] = 7

    r = api.put("plans/files", json=body, csrf=False, headers=CLOSE)
    assert_error(r, 403, "csrf")
    r = api.put("plans/files", json=body, csrf=False,
                headers={"X-CSRF-Token": "forged-token", **CLOSE})
    assert_error(r, 403, "csrf")
    assert api.get("plans/files").json() == before

    r = api.post("tokens", json={"name": "sneaky"}, csrf=False, headers=CLOSE)
    assert_error(r, 403, "csrf")
    assert api.get("tokens").json() == []

    r = api.post("account/password", csrf=False, headers=CLOSE,
                 json={"current_password": api.box.password, "new_password": "x" * 20})
    assert_error(r, 403, "csrf")
    r = api.put("account/language", csrf=False, json={"language": "en"}, headers=CLOSE)
    assert_error(r, 403, "csrf")
    # the real token does work
    assert api.put("plans/files", json=body).status_code == 200


def refusal_then_next_request(box, method, path, body: bytes, headers: dict,
                              next_headers: dict) -> tuple[int, str, object]:
    """On one kept-alive connection: send a request's head, read the answer the box gives
    before the body (a refusal), send the body, then a GET /api/v1/status. Returns the
    refusal's status, its Connection header, and the next answer's status or the exception."""
    ctx = ssl.create_default_context(cafile=str(box.ca_pem))
    conn = http.client.HTTPSConnection("127.0.0.1", box.https_port, context=ctx, timeout=3)
    try:
        conn.putrequest(method, path)
        for k, v in {**headers, "Content-Type": "application/json",
                     "Content-Length": str(len(body))}.items():
            conn.putheader(k, v)
        conn.endheaders()
        try:
            r = conn.getresponse()
        except TimeoutError:
            # the box waits for the body before answering: that is fine, send it
            conn.send(body)
            r = conn.getresponse()
        else:
            conn.send(body)
        r.read()
        status, connection = r.status, (r.getheader("Connection") or "").lower()
        try:
            conn.request("GET", "/api/v1/status", headers=next_headers)
            nxt = conn.getresponse()
            nxt.read()
            return status, connection, nxt.status
        except (OSError, http.client.HTTPException) as e:
            return status, connection, e
    finally:
        conn.close()


def test_refused_request_leaves_the_connection_usable(api):
    """HTTP/1.1 keep-alive: a box that refuses a request before reading its body must either
    read (or drain) the body and keep the connection usable, or say `Connection: close`. A
    silent close makes the client's next request on that connection fail (a POST is never
    retried automatically)."""
    box = api.box
    cookie = api.http.cookies.get("abri_session")
    body = json.dumps({"current_password": "not-it", "new_password": "y" * 20}).encode()
    cases = {
        "403 csrf": ("POST", "/api/v1/account/password", {"Cookie": f"abri_session={cookie}"}, 403),
        "401 no session": ("POST", "/api/v1/account/password", {}, 401),
    }
    broken = []
    for what, (method, path, headers, want) in cases.items():
        status, connection, nxt = refusal_then_next_request(box, method, path, body, headers,
                                                            headers)
        assert status == want, f"{what}: {status}"
        if connection != "close" and nxt != 200:
            broken.append(f"{what}: the next request on the connection got {nxt!r}")
    assert not broken, ("the box closed a kept-alive connection after a refusal without "
                        f"`Connection: close`: {broken}")


def test_no_session_is_401(active_box):
    for method, path, body in [("GET", "plans", None), ("GET", "box", None),
                               ("GET", "account", None), ("GET", "settings/mail", None),
                               ("PUT", "plans/files", {"interval_hours": 3}),
                               ("POST", "tokens", {"name": "x"}), ("GET", "tokens", None)]:
        headers = CLOSE if body is not None else {}
        assert_error(active_box.request(method, path, json=body, headers=headers), 401,
                     "unauthenticated")
    forged = {"Cookie": "abri_session=" + "a" * 43}
    assert_error(active_box.get("account", headers=forged), 401, "unauthenticated")


def test_body_over_64_kib_is_413(api):
    before = api.get("plans/files").json()
    body = {k: v for k, v in before.items() if k not in ("id", "kind")}
    body["excludes"] = ["/x" + "y" * 1000 + str(i) for i in range(70)]  # ~70 KiB
    r = api.put("plans/files", json=body, headers=CLOSE)
    assert_error(r, 413, "too_large")
    assert api.get("plans/files").json() == before
    # a body just under the limit is read (and then judged on its content)
    body["excludes"] = ["/x" + "y" * 1000 + str(i) for i in range(50)]  # ~50 KiB
    r = api.put("plans/files", json=body)
    assert r.status_code == 200, r.text[:300]


def test_body_limit_applies_before_login(box):
    r = box.post("activate", json={"claim_code": "x" * (70 * 1024)}, headers=CLOSE)
    assert_error(r, 413, "too_large")
    r = box.post("login", json={"user": "admin", "password": "p" * (70 * 1024)}, headers=CLOSE)
    assert_error(r, 413, "too_large")
    assert box.status()["activated"] is False


def test_api_tokens(api):
    box = api.box
    r = api.post("tokens", json={"name": "monitoring"})
    assert r.status_code in (200, 201), r.text
    created = r.json()
    token = created["token"]
    assert created["name"] == "monitoring" and created["id"] and created["created"]
    assert isinstance(token, str) and len(token) >= 20

    listed = api.get("tokens").json()
    assert [t["id"] for t in listed] == [created["id"]]
    assert "token" not in listed[0], "the token is shown more than once"
    assert token not in api.get("tokens").text

    bearer = {"Authorization": f"Bearer {token}"}
    r = box.get("plans", headers=bearer)
    assert r.status_code == 200, r.text
    # Bearer calls need no CSRF token
    plan = box.get("plans/image", headers=bearer).json()
    body = {k: v for k, v in plan.items() if k not in ("id", "kind")}
    body["interval_hours"] = 24
    r = box.request("PUT", "plans/image", json=body, headers=bearer)
    assert r.status_code == 200, r.text
    assert api.get("plans/image").json()["interval_hours"] == 24

    assert_error(box.get("plans", headers={"Authorization": "Bearer " + token[:-2] + "zz"}),
                 401, "unauthenticated")

    r = api.delete(f"tokens/{created['id']}")
    assert r.status_code == 204, r.text
    assert_error(box.get("plans", headers=bearer), 401, "unauthenticated")
    assert api.get("tokens").json() == []
    assert_error(api.delete(f"tokens/{created['id']}"), 404, "not_found")


def test_plain_http_only_redirects(box):
    http = f"http://127.0.0.1:{box.http_port}"
    for method, path in [("GET", "/"), ("GET", "/settings/plans"), ("GET", "/api/v1/status"),
                         ("POST", "/api/v1/activate")]:
        r = box.raw(method, http + path, allow_redirects=False,
                    json={"claim_code": box.claim_code} if method == "POST" else None)
        assert r.status_code in (301, 302, 307, 308), f"{method} {path}: {r.status_code}"
        loc = urlparse(r.headers["Location"])
        assert loc.scheme == "https", r.headers["Location"]
        assert loc.path == path, r.headers["Location"]
        assert "claim" not in r.text and "fingerprint" not in r.text
    # nothing was activated through plain HTTP
    assert box.status()["activated"] is False


def _bad_factories(tmp_path):
    good = tmp_path / "good.toml"
    make_factory(good)
    text = good.read_text()
    assert "claim_code_hash" in text, text
    cases = {
        "bad TOML": "format = 1\nclaim_code_hash = \"$argon2id$unterminated\n",
        "unknown field": "colour = \"blue\"\n" + text,
        "bad hash": re.sub(r'claim_code_hash\s*=\s*"[^"]*"', 'claim_code_hash = "plaintext-code"',
                           text),
    }
    assert cases["bad hash"] != text
    for what, content in cases.items():
        f = tmp_path / (what.replace(" ", "-") + ".toml")
        f.write_text(content)
        yield what, f


def test_malformed_factory_files_stop_abrid(tmp_path):
    require_binaries()
    for what, factory in _bad_factories(tmp_path):
        state = tmp_path / ("state-" + factory.stem)
        cmd = [str(ABRID), "--state-dir", str(state), "--https", f"127.0.0.1:{free_port()}",
               "--http", f"127.0.0.1:{free_port()}", "--factory", str(factory),
               "--mac", "52:54:00:12:ab:cd", "--dev", "--no-mdns"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{what}: abrid kept running with a malformed factory file")
        assert proc.returncode != 0, f"{what}: abrid exited 0"
        out = proc.stdout + proc.stderr
        assert str(factory) in out or factory.name in out, f"{what}: message names no file: {out}"
        created = sorted(str(p.relative_to(state)) for p in state.rglob("*")) if state.exists() else []
        assert created == [], f"{what}: abrid created state: {created}"
