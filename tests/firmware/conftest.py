"""Fixtures of the firmware system tests: the test image (make test-bundles) booted under
QEMU (TCG), each test on its own copy-on-write overlay of the one built image, with its own
forwarded HTTPS port. Every wait is bounded."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import requests
import urllib3

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(os.environ.get("FW_OUT", ROOT / "build" / "firmware"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
PROVISION = TARGET / "x86_64-unknown-linux-gnu" / "release" / "abri-provision"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

BOOT_TIMEOUT = 240.0  # seconds from QEMU start to the console answering (TCG)
HTTP_TIMEOUT = 20.0

urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


def image_env() -> dict:
    env = {}
    for line in (OUT / "image.env").read_text().splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_certificate(port: int, server_name: str) -> dict:
    """The certificate the box presents, verified against nothing (read for its names)."""
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=HTTP_TIMEOUT)
    path = Path(f"/tmp/abri-fw-cert-{port}.pem")
    path.write_text(pem)
    try:
        out = subprocess.run(
            ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-fingerprint", "-sha256",
             "-in", str(path)],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    finally:
        path.unlink(missing_ok=True)
    return {"pem": pem, "text": out}


class Guest:
    """One QEMU box. `disk` is a qcow2 overlay of the built image (kept across boots of the
    same test); `boot()` starts it, `poweroff()` stops it cleanly, `power_cut()` kills it."""

    def __init__(self, workdir: Path, mac: str, *, uefi: bool = False, disk_size: str = "3G"):
        self.workdir = workdir
        self.mac = mac
        self.uefi = uefi
        self.disk = workdir / "system.qcow2"
        self.port = free_port()
        self.extra_disks: list[Path] = []
        self.extra_args: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.boots = 0
        workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(OUT / "abri.img"), "-F", "raw",
             str(self.disk), disk_size],
            check=True, timeout=60,
        )
        self.vars = workdir / "ovmf-vars.fd"
        if uefi:
            self.vars.write_bytes(OVMF_VARS.read_bytes())

    @property
    def log(self) -> Path:
        return self.workdir / f"serial-{self.boots}.log"

    def add_disk(self, path: Path) -> None:
        self.extra_disks.append(path)

    def command(self) -> list[str]:
        env = image_env()
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "768", "-smp", "2",
               "-display", "none",
               "-serial", f"file:{self.log}",
               "-monitor", f"unix:{self.workdir / 'monitor.sock'},server,nowait"]
        if self.uefi:
            cmd += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,file={self.vars}"]
        else:
            # Direct kernel boot where the boot loader is not under test (the kernel and
            # initramfs are the ones in slot A).
            cmd += ["-kernel", str(OUT / "bzImage"), "-initrd", str(OUT / "initrd.img"),
                    "-append", f"root=PARTUUID={env['ROOTFS_A_PARTUUID']} rootfstype=squashfs ro "
                               "rauc.slot=A panic=10 console=ttyS0,115200"]
        cmd += ["-drive", f"if=none,id=sys,file={self.disk},format=qcow2",
                "-device", "virtio-blk-pci,drive=sys,bootindex=1"]
        for i, d in enumerate(self.extra_disks):
            fmt = "qcow2" if d.suffix == ".qcow2" else "raw"
            cmd += ["-drive", f"if=none,id=d{i},file={d},format={fmt}",
                    "-device", f"virtio-blk-pci,drive=d{i},serial=abri-test-{i}"]
        cmd += self.extra_args
        cmd += ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:443",
                "-device", f"virtio-net-pci,netdev=n0,mac={self.mac},addr=0x5"]
        return cmd

    def boot(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the box is already running"
        self.boots += 1
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / f"qemu-{self.boots}.err", "w"))

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.url(path), verify=False, timeout=HTTP_TIMEOUT, **kw)

    def wait_console(self, timeout: float = BOOT_TIMEOUT, version: str | None = None) -> dict:
        """Waits until /api/v1/status answers (and, if given, reports `version`)."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited ({self.proc.returncode}); {self.tail()}")
            try:
                r = self.get("/api/v1/status")
                if r.status_code == 200:
                    status = r.json()
                    if version is None or status.get("version") == version:
                        return status
                    last = f"version {status.get('version')}"
            except requests.RequestException as e:
                last = str(e)
            time.sleep(2)
        raise AssertionError(f"the console did not answer within {timeout} s ({last}); {self.tail()}")

    def wait_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and text in self.log.read_text(errors="replace"):
                return
            time.sleep(1)
        raise AssertionError(f"{text!r} not seen on the serial console within {timeout} s; {self.tail()}")

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return "no serial output"
        text = self.log.read_text(errors="replace").splitlines()
        return "serial console:\n" + "\n".join(text[-lines:])

    def monitor(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(str(self.workdir / "monitor.sock"))
            s.sendall(command.encode() + b"\n")
            time.sleep(0.5)

    def wait_exit(self, timeout: float) -> bool:
        try:
            assert self.proc is not None
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def poweroff(self, timeout: float = 90.0) -> None:
        """ACPI power button: systemd shuts the box down cleanly."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.monitor("system_powerdown")
        if not self.wait_exit(timeout):
            self.power_cut()
            raise AssertionError(f"the box did not power off within {timeout} s; {self.tail()}")

    def power_cut(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture(scope="session")
def built_image() -> Path:
    for f in ("abri.img", "bzImage", "initrd.img", "image.env", "claim-code"):
        if not (OUT / f).exists():
            pytest.fail(f"missing {OUT / f}: run `make test-bundles` first", pytrace=False)
    return OUT


@pytest.fixture
def make_guest(tmp_path, built_image):
    guests: list[Guest] = []

    def make(mac: str = "52:54:00:12:ab:cd", name: str = "box", **kw) -> Guest:
        g = Guest(tmp_path / name, mac, **kw)
        guests.append(g)
        return g

    yield make
    for g in guests:
        g.power_cut()


def claim_code() -> str:
    return (OUT / "claim-code").read_text().strip()


def activate(guest: Guest) -> requests.Session:
    """Activates the box through the API and returns a logged-in session (CSRF header set)."""
    r = requests.post(guest.url("/api/v1/activate"), json={"claim_code": claim_code()},
                      verify=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    password = r.json()["password"]
    return login(guest, password)


def login(guest: Guest, password: str) -> requests.Session:
    s = requests.Session()
    # Verified against the box's own CA (its certificate names the loopback address).
    ca = guest.workdir / "ca.pem"
    ca.write_text(guest.get("/ca.pem").text)
    s.verify = str(ca)
    s.trust_env = False  # REQUESTS_CA_BUNDLE would override the session's CA
    r = s.post(guest.url("/api/v1/login"), json={"user": "admin", "password": password},
               timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    s.password = password  # type: ignore[attr-defined]
    return s
