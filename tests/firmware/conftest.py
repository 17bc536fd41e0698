"""Fixtures of the firmware system tests: the test image (make test-bundles) booted under
QEMU (TCG), each test on its own copy-on-write overlay of the one built image, with its own
forwarded HTTPS port. Every wait is bounded."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import uuid
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
# Fixed PCI slots, above those QEMU gives the disks. The box's NIC on the test's LAN segment
# comes first (enp0s16), so it is the primary interface the name derives from; the
# user-network NIC that forwards HTTPS to the host comes after it (enp0s17).
LAN_PCI_ADDR = "0x10"
FORWARD_PCI_ADDR = "0x11"
HOTPLUG_PCI_ADDR = "0x12"
# One vCPU: the machine running the tests is shared, and a second one saves only about a
# quarter of the time, and only when a core is free (ABRI_FW_SMP=2 to use it).
QEMU_SMP = os.environ.get("ABRI_FW_SMP", "1")


def pytest_configure(config):
    # The first requests go to a box whose CA the test does not know yet, on purpose.
    config.addinivalue_line(
        "filterwarnings", "ignore::urllib3.exceptions.InsecureRequestWarning")


# The update test (four boots) is about as long as all the others together. `make
# firmware-test` runs two guests at a time, one test file per worker (`--dist loadfile`, which
# hands out files in collection order): collected first, the update test starts at once on
# one worker while the others follow one another on the second.
LONGEST_FIRST = "test_update.py"


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name != LONGEST_FIRST)


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

    def __init__(self, workdir: Path, mac: str, *, uefi: bool = False, disk_size: str = "3G",
                 lan: "Lan | None" = None):
        self.workdir = workdir
        self.mac = mac
        self.uefi = uefi
        self.lan = lan
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
        cmd = ["qemu-system-x86_64", "-accel", "tcg", "-machine", "q35", "-m", "768", "-smp", QEMU_SMP,
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
        # A PCIe port that can take a disk while the box runs (hotplug_disk).
        cmd += ["-device", f"pcie-root-port,id=hp0,chassis=9,slot=9,addr={HOTPLUG_PCI_ADDR}"]
        cmd += self.extra_args
        forward_mac = self.mac
        if self.lan is not None:
            # The primary NIC is on the LAN segment; the forwarding NIC gets another MAC.
            cmd += ["-netdev", f"tap,id=lan,fd={self.lan.tap_fd}",
                    "-device", f"virtio-net-pci,netdev=lan,mac={self.mac},addr={LAN_PCI_ADDR}"]
            forward_mac = "52:54:00:00:fe:01"
        cmd += ["-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{self.port}-:443",
                "-device", f"virtio-net-pci,netdev=n0,mac={forward_mac},addr={FORWARD_PCI_ADDR}"]
        return cmd

    def boot(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the box is already running"
        self.boots += 1
        fds = (self.lan.tap_fd,) if self.lan is not None else ()
        with open(self.workdir / f"qemu-{self.boots}.err", "w") as err:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=err,
                                         pass_fds=fds)

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

    def hotplug_disk(self, path: Path) -> None:
        """Plugs a raw disk image into the running box (virtio, PCIe hotplug)."""
        self.monitor(f"drive_add 0 if=none,id=hot,file={path},format=raw")
        self.monitor("device_add virtio-blk-pci,drive=hot,bus=hp0,id=hotdisk,serial=abri-hot")

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

    def data_partition(self) -> Path:
        """A raw copy of the data partition of the (stopped) box's disk, for debugfs."""
        assert self.proc is None or self.proc.poll() is not None, "stop the box first"
        offset, size = gpt_partition(self.disk, layout()["ABRI_DATA_PARTUUID"])
        out = self.workdir / "data-partition.img"
        out.unlink(missing_ok=True)
        subprocess.run(
            ["qemu-img", "convert", "-O", "raw", "--image-opts",
             f"driver=raw,offset={offset},size={size},file.driver=qcow2,"
             f"file.file.filename={self.disk}", str(out)],
            check=True, timeout=300)
        return out


def layout() -> dict:
    """board/common/layout.env: the pinned partition UUIDs."""
    values = {}
    for line in (ROOT / "board" / "common" / "layout.env").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            values[k] = v
    return values


def gpt_partition(qcow2: Path, partuuid: str) -> tuple[int, int]:
    """(offset, size) in bytes of the GPT partition `partuuid` of a qcow2 disk."""
    head = qcow2.parent / "gpt-head.img"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", "--image-opts",
         f"driver=raw,offset=0,size={34 * 512},file.driver=qcow2,file.file.filename={qcow2}",
         str(head)],
        check=True, timeout=60)
    data = head.read_bytes()
    head.unlink()
    assert data[512:520] == b"EFI PART", f"{qcow2} has no GPT"
    entries_lba, count, entry_size = struct.unpack_from("<QII", data, 512 + 72)
    wanted = uuid.UUID(partuuid)
    for i in range(count):
        at = entries_lba * 512 + i * entry_size
        if at + entry_size > len(data):
            break
        entry = data[at:at + entry_size]
        if uuid.UUID(bytes_le=entry[16:32]) == wanted:
            first, last = struct.unpack_from("<QQ", entry, 32)
            return first * 512, (last - first + 1) * 512
    raise AssertionError(f"no partition {partuuid} in the GPT of {qcow2}")


def journal_entries(guest: Guest) -> list[dict]:
    """Every entry of the journal the (stopped) box kept on its data partition, read by the
    host's journalctl."""
    partition = guest.data_partition()
    out = guest.workdir / "journal-copy"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    subprocess.run(["debugfs", "-R", f"rdump /var/log/journal {out}", str(partition)],
                   check=True, capture_output=True, timeout=120)
    partition.unlink()
    files = sorted(glob.glob(str(out / "journal" / "*" / "*.journal")))
    assert files, f"no journal files on the data partition: {list(out.rglob('*'))}"
    args = ["journalctl", "--no-pager", "-o", "json"]
    for f in files:
        args += ["--file", f]
    text = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    return [json.loads(line) for line in text.splitlines() if line.strip()]


TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


class Lan:
    """A LAN segment the test owns: a network namespace holding one end of a tap device
    whose other end is the box's primary NIC. Programs run in the namespace (`run`) see the
    box as a computer on its LAN would: mDNS works there (QEMU's user network carries no
    multicast). The tap is opened here and handed to QEMU as a file descriptor, then moved
    into the namespace, so nothing of it is left in the host's network."""

    ADDRESS = "169.254.200.1/16"

    def __init__(self, name: str):
        self.ns = name
        self.tap = f"abt{os.getpid() % 100000}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True, timeout=30)
        try:
            self.tap_fd = os.open("/dev/net/tun", os.O_RDWR)
            os.set_inheritable(self.tap_fd, True)
            fcntl.ioctl(self.tap_fd, TUNSETIFF,
                        struct.pack("16sH", self.tap.encode(), IFF_TAP | IFF_NO_PI))
            for cmd in (["ip", "link", "set", self.tap, "netns", self.ns],
                        ["ip", "-n", self.ns, "link", "set", "lo", "up"],
                        ["ip", "-n", self.ns, "link", "set", self.tap, "up"],
                        ["ip", "-n", self.ns, "addr", "add", self.ADDRESS, "dev", self.tap]):
                subprocess.run(cmd, check=True, timeout=30, capture_output=True)
        except BaseException:
            self.close()
            raise

    def run(self, args: list, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ, **(env or {}))
        return subprocess.run(["ip", "netns", "exec", self.ns, *map(str, args)],
                              capture_output=True, text=True, timeout=timeout, env=full_env)

    def close(self) -> None:
        if getattr(self, "tap_fd", None) is not None:
            os.close(self.tap_fd)
            self.tap_fd = None
        subprocess.run(["ip", "netns", "del", self.ns], timeout=30, capture_output=True)


def lan_unavailable() -> str | None:
    """Why this machine cannot give a test its own LAN segment, or None."""
    if os.geteuid() != 0:
        return "network namespaces and tap devices need root"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is missing"
    return None


@pytest.fixture
def lan():
    why = lan_unavailable()
    if why is not None:
        pytest.skip(f"no LAN segment for the mDNS test: {why}")
    segment = Lan(f"abri-fw-{os.getpid()}")
    yield segment
    segment.close()


def image_inputs() -> list[Path]:
    """What the image is made from: the board files, the build scripts, abrid."""
    files = [p for d in ("board", "scripts/firmware") for p in (ROOT / d).rglob("*")
             if p.is_file()]
    return files + [PROVISION.parent / "abrid"]


@pytest.fixture(scope="session")
def built_image() -> Path:
    products = [OUT / f for f in ("abri.img", "bzImage", "initrd.img", "image.env",
                                  "claim-code", "next.raucb", "broken.raucb")] + [PROVISION]
    for f in products:
        if not f.exists():
            pytest.fail(f"missing {f}: run `make test-bundles` first", pytrace=False)
    built = min(f.stat().st_mtime for f in products if f.suffix in (".img", ".raucb"))
    for f in image_inputs():
        if not f.exists():
            pytest.fail(f"missing {f}: run `make test-bundles` first", pytrace=False)
        if f.stat().st_mtime > built:
            pytest.fail(f"the test image is older than {f}: run `make test-bundles` again",
                        pytrace=False)
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
        # The serial logs stay for a failure's post-mortem; the disks go (hundreds of MB each).
        for disk in [g.disk, g.workdir / "data-partition.img", *g.extra_disks]:
            disk.unlink(missing_ok=True)


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
