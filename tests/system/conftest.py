"""Fixtures for Abri's system tests: real abrid processes, the real abri-provision tool and a
real SMTP server, all on loopback. The contract they check is docs/api.md."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
ABRID = ROOT / "target" / "debug" / "abrid"
PROVISION = ROOT / "target" / "debug" / "abri-provision"

DEFAULT_MAC = "52:54:00:12:ab:cd"
HOSTNAME = "backup-abcd"
START_TIMEOUT = 30.0  # seconds for abrid to answer /api/v1/status
HTTP_TIMEOUT = 15.0  # seconds for one request


def require_binaries() -> None:
    missing = [str(p) for p in (ABRID, PROVISION) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(
            "missing binaries: " + ", ".join(missing) + " (run `make build` first)",
            pytrace=False,
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    return free_port()


def ca_fingerprint(ca_pem: Path) -> str:
    """Lower-case hex SHA-256 of the DER form of a PEM certificate."""
    der = ssl.PEM_cert_to_DER_cert(ca_pem.read_text())
    return hashlib.sha256(der).hexdigest()


def run_provision(*args: str, input: str | None = None, timeout: float = 60.0,
                  env: dict | None = None, prefix: tuple = ()) -> subprocess.CompletedProcess:
    require_binaries()
    return subprocess.run(
        [*prefix, str(PROVISION), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def make_factory(out: Path, *, partner_email: str | None = None, domain: str | None = None,
                 smtp_port: int | None = None, smtp_sender: str | None = None,
                 extra: tuple = ()) -> dict:
    """Writes a factory file with `abri-provision factory` and returns its JSON answer
    (which holds `claim_code`)."""
    args = ["factory", "--out", str(out), "--json"]
    if partner_email:
        args += ["--partner-email", partner_email]
    if domain:
        args += ["--domain", domain]
    if smtp_port is not None:
        args += ["--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_port),
                 "--smtp-security", "none", "--smtp-sender", smtp_sender or "box@factory.example"]
    args += list(extra)
    proc = run_provision(*args)
    assert proc.returncode == 0, f"abri-provision {' '.join(args)} failed:\n{proc.stderr}"
    assert out.is_file(), f"abri-provision factory did not write {out}"
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(f"abri-provision factory --json printed no JSON: {proc.stdout!r}") from e
    assert isinstance(data.get("claim_code"), str) and data["claim_code"], data
    return data


# --- SMTP ------------------------------------------------------------------------------------

class SmtpServer:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[dict] = []
        self._lock = threading.Lock()
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802
                raw = envelope.original_content or envelope.content
                if isinstance(raw, str):
                    raw = raw.encode()
                with outer._lock:
                    outer.messages.append({
                        "mail_from": envelope.mail_from,
                        "rcpt_tos": list(envelope.rcpt_tos),
                        "raw": raw,
                        "message": message_from_bytes(raw, policy=policy.default),
                    })
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     ready_timeout=10)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()

    def wait_for(self, count: int = 1, timeout: float = 20.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.1)
        with self._lock:
            return list(self.messages)

    @staticmethod
    def text_of(msg: dict) -> str:
        """Every text part of a message, decoded, plus its headers."""
        m = msg["message"]
        parts = [str(m.get("Subject", ""))]
        for part in m.walk():
            if part.get_content_maintype() == "text":
                try:
                    parts.append(part.get_content())
                except Exception:  # a part in an odd charset: fall back to raw bytes
                    parts.append(part.get_payload(decode=True).decode("utf-8", "replace"))
        return "\n".join(parts)


@pytest.fixture
def smtp():
    server = SmtpServer()
    try:
        yield server
    finally:
        server.stop()


# --- abrid -----------------------------------------------------------------------------------

class ApiSession:
    """A logged-in console session: the abri_session cookie plus the CSRF header."""

    def __init__(self, box: "Box", user: str = "admin", password: str | None = None,
                 login: bool = True) -> None:
        self.box = box
        self.http = requests.Session()
        self.http.trust_env = False  # no proxy or CA bundle from the environment: loopback only
        self.csrf: str | None = None
        self.login_response: requests.Response | None = None
        if login:
            r = self.login(user, password)
            assert r.status_code == 200, f"login failed: {r.status_code} {r.text}"

    def login(self, user: str, password: str | None) -> requests.Response:
        r = self.http.post(self.box.api("login"), json={"user": user, "password": password},
                           timeout=HTTP_TIMEOUT, verify=str(self.box.ca_pem))
        self.login_response = r
        if r.status_code == 200:
            self.csrf = r.json()["csrf_token"]
        return r

    def request(self, method: str, path: str, csrf: bool = True, **kw) -> requests.Response:
        headers = dict(kw.pop("headers", {}) or {})
        if csrf and method.upper() in ("POST", "PUT", "DELETE", "PATCH") and self.csrf:
            headers.setdefault("X-CSRF-Token", self.csrf)
        kw.setdefault("timeout", HTTP_TIMEOUT)
        # per request: a Session's own `verify` loses to REQUESTS_CA_BUNDLE from the environment
        kw.setdefault("verify", str(self.box.ca_pem))
        return self.http.request(method, self.box.api(path), headers=headers, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def put(self, path, **kw):
        return self.request("PUT", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


class Box:
    """One abrid process with its own temporary state directory, factory file and ports."""

    def __init__(self, workdir: Path, *, mac: str = DEFAULT_MAC, partner_email: str | None = None,
                 domain: str | None = None, smtp_port: int | None = None,
                 smtp_sender: str | None = None, mdns: bool = False,
                 https_addr: str = "127.0.0.1", prefix: tuple = (), extra_args: tuple = (),
                 make_factory_file: bool = True):
        require_binaries()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.state_dir = workdir / "state"
        self.factory_path = workdir / "factory.toml"
        self.log_path = workdir / "abrid.log"
        self.mac = mac
        self.mdns = mdns
        self.addr = https_addr
        self.prefix = tuple(prefix)  # e.g. ("ip", "netns", "exec", NAME)
        self.extra_args = tuple(extra_args)
        self.use_factory = make_factory_file
        self.https_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen | None = None
        self._log = None
        self.http = requests.Session()
        self.http.trust_env = False  # loopback only: no proxy or CA bundle from the environment
        self.password: str | None = None
        self.claim_code: str | None = None
        self.factory_json: dict = {}
        if make_factory_file:
            self.factory_json = make_factory(self.factory_path, partner_email=partner_email,
                                             domain=domain, smtp_port=smtp_port,
                                             smtp_sender=smtp_sender)
            self.claim_code = self.factory_json["claim_code"]

    # -- paths and URLs
    @property
    def ca_pem(self) -> Path:
        return self.state_dir / "tls" / "ca.pem"

    @property
    def base(self) -> str:
        return f"https://{self.addr}:{self.https_port}"

    def api(self, path: str) -> str:
        return f"{self.base}/api/v1/{path.lstrip('/')}"

    def fingerprint(self) -> str:
        return ca_fingerprint(self.ca_pem)

    def command(self) -> list[str]:
        cmd = [*self.prefix, str(ABRID), "--state-dir", str(self.state_dir),
               "--https", f"{self.addr}:{self.https_port}",
               "--http", f"{self.addr}:{self.http_port}", "--mac", self.mac, "--dev"]
        if self.use_factory:
            cmd += ["--factory", str(self.factory_path)]
        if not self.mdns:
            cmd.append("--no-mdns")
        cmd += list(self.extra_args)
        return cmd

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- process control
    def start(self, wait: bool = True) -> "Box":
        assert self.proc is None or self.proc.poll() is not None, "abrid already running"
        self._log = open(self.log_path, "ab")
        self._log.write(f"=== start: {' '.join(self.command())}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"abrid exited with {self.proc.returncode} before answering; "
                            f"log:\n{self.log()}", pytrace=False)
            if self.ca_pem.is_file():
                try:
                    r = self.http.get(self.api("status"), verify=str(self.ca_pem), timeout=2)
                    if r.status_code == 200:
                        return r.json()
                    last = f"HTTP {r.status_code}"
                except (requests.RequestException, OSError) as e:
                    last = repr(e)
            else:
                last = f"{self.ca_pem} not written yet"
            time.sleep(0.2)
        pytest.fail(f"abrid did not answer GET /api/v1/status within {timeout}s ({last}); "
                    f"log:\n{self.log()}", pytrace=False)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._close_log()
        return self.proc.returncode

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def restart(self, **kw) -> "Box":
        self.stop()
        return self.start(**kw)

    def _signal(self, sig) -> None:
        try:
            os.killpg(self.proc.pid, sig)  # the whole group: also wrappers like `ip netns exec`
        except ProcessLookupError:
            pass

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- API helpers
    def raw(self, method: str, url: str, **kw) -> requests.Response:
        """Any URL (pages, plain HTTP), verified against the box CA, no environment proxy."""
        kw.setdefault("timeout", HTTP_TIMEOUT)
        kw.setdefault("verify", str(self.ca_pem))
        return self.http.request(method, url, **kw)

    def request(self, method: str, path: str, **kw) -> requests.Response:
        return self.raw(method, self.api(path), **kw)

    def get(self, path: str, **kw) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> requests.Response:
        return self.request("POST", path, **kw)

    def status(self) -> dict:
        r = self.get("status")
        assert r.status_code == 200, f"GET /status: {r.status_code} {r.text}"
        return r.json()

    def activate(self) -> str:
        """Activates through the API with the factory's claim code; returns the password."""
        r = self.post("activate", json={"claim_code": self.claim_code})
        assert r.status_code == 200, f"activation failed: {r.status_code} {r.text}"
        body = r.json()
        assert body.get("user") == "admin", body
        self.password = body["password"]
        assert isinstance(self.password, str) and self.password
        return self.password

    def session(self, password: str | None = None, user: str = "admin") -> ApiSession:
        return ApiSession(self, user=user, password=password or self.password)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
def make_box(tmp_path, request):
    """Factory fixture: make_box(**Box kwargs) -> Box (not started). Every box is stopped at
    teardown, whatever happened; when the test failed, the end of each box's log is printed."""
    boxes: list[Box] = []

    def _make(name: str = "box", **kw) -> Box:
        b = Box(tmp_path / name, **kw)
        boxes.append(b)
        return b

    yield _make
    for b in boxes:
        try:
            b.stop()
        except Exception:  # teardown must reach every box
            b.kill9()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for b in boxes:
            print(f"--- end of {b.log_path} ---\n{b.log()[-4000:]}")


@pytest.fixture
def box(make_box) -> Box:
    """A started, not yet activated box."""
    return make_box().start()


@pytest.fixture
def active_box(box) -> Box:
    """A started, activated box; `box.password` holds the admin password."""
    box.activate()
    return box


@pytest.fixture
def api(active_box) -> ApiSession:
    """A logged-in session on an activated box."""
    return active_box.session()


def assert_error(r: requests.Response, status: int, code: str | None = None) -> dict:
    """Checks an error answer: status, JSON body {error, message}, and the code."""
    assert r.status_code == status, (
        f"{r.request.method} {r.request.url}: expected {status} {code or ''}, "
        f"got {r.status_code} {r.text[:500]}")
    try:
        body = r.json()
    except ValueError as e:
        raise AssertionError(f"error body is not JSON: {r.text[:500]!r}") from e
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body.get("error") == code, f"expected error {code!r}, got {body}"
    return body
