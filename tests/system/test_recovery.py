"""`abrid reset-password`: a new admin password for whoever holds the box's label."""

import re
import subprocess

from conftest import ABRID, assert_error


def reset_password(box, claim_code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ABRID), "reset-password", "--state-dir", str(box.state_dir),
         "--factory", str(box.factory_path)],
        input=claim_code + "\n", capture_output=True, text=True, timeout=60)


def issued_password(stdout: str) -> str:
    m = re.search(r"password:\s*(\S+)", stdout, re.I)
    if m:
        return m.group(1)
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    assert lines, "reset-password printed nothing on stdout"
    return lines[-1]


def login_status(box, password: str) -> int:
    return box.post("login", json={"user": "admin", "password": password}).status_code


def test_reset_password_with_the_claim_code(active_box):
    box = active_box
    old = box.password
    box.stop()
    proc = reset_password(box, box.claim_code)
    assert proc.returncode == 0, proc.stderr
    new = issued_password(proc.stdout)
    assert len(new) >= 12 and new != old
    assert new not in proc.stderr
    box.start()
    assert_error(box.post("login", json={"user": "admin", "password": old}), 401,
                 "unauthenticated")
    assert login_status(box, new) == 200
    # not written in clear either
    box.stop()
    for f in box.state_dir.rglob("*"):
        if f.is_file():
            assert new.encode() not in f.read_bytes(), f"new password in clear in {f}"


def test_reset_password_with_a_wrong_code(active_box):
    box = active_box
    box.stop()
    wrong = "aaaa-bbbb-cccc-dddd" if box.claim_code != "aaaa-bbbb-cccc-dddd" else "dddd-cccc-bbbb-aaaa"
    proc = reset_password(box, wrong)
    assert proc.returncode != 0, f"reset-password accepted a wrong claim code: {proc.stdout}"
    box.start()
    assert login_status(box, box.password) == 200
