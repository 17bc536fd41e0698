"""Image mode with the cross-built Windows agent under Wine 8, against a real abrid on loopback:
the agent images a raw GPT disk file (one ext4 partition made with Debian's sfdisk and mke2fs)
through the same engine as on Linux, restores it with `restore-image` to a file, and the bytes
are those of the source; a second run after a few changed blocks sends only their chunks; the
files of the ext4 volume are restored from the image into a folder.

Wine has neither VSS nor raw disk devices: volumes and whole disks (`C:`, `\\\\.\\PhysicalDrive0`)
are covered by unit tests of their parts and checked by hand on Windows (docs/windows.md)."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "system"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import (  # noqa: E402,F401  (fixtures are used by name)
    active_box,
    api,
    box,
    make_box,
    pytest_runtest_makereport,
)
from filemode_support import edit_plan, enrolment_token  # noqa: E402
from imagemode_support import CHUNK, KiB, MiB, chunks_touched, make_tree, need, sh  # noqa: E402
from test_windows_agent import agent, win  # noqa: E402

DISK_BYTES = 24 * MiB
PART_START = 1 * MiB
PART_BYTES = 22 * MiB


def make_gpt_disk(path: Path, tree: Path) -> None:
    """A sparse GPT disk file with one ext4 partition holding `tree`."""
    need("sfdisk")
    fs = path.with_suffix(".ext4")
    need("mke2fs")
    sh("mke2fs", "-q", "-F", "-t", "ext4", "-L", "data", "-d", tree, fs, f"{PART_BYTES // KiB}K")
    with open(path, "wb") as f:
        f.truncate(DISK_BYTES)
    sh("sfdisk", "--quiet", path,
       input=f"label: gpt\nstart={PART_START // 512}, size={PART_BYTES // 512}, type=linux\n")
    with open(fs, "rb") as src, open(path, "r+b") as dst:
        offset = PART_START
        while block := src.read(64 * KiB):
            if block.count(0) != len(block):  # keep the file sparse
                dst.seek(offset)
                dst.write(block)
            offset += len(block)
    fs.unlink()


def test_windows_agent_images_a_disk_file_under_wine(api, active_box, tmp_path):
    box = active_box
    tree = tmp_path / "tree"
    make_tree(tree, seed=3, files=16)
    disk = tmp_path / "disk.img"
    make_gpt_disk(disk, tree)
    original = disk.read_bytes()

    config = tmp_path / "agent" / "agent.toml"
    token = enrolment_token(api, "windows-image")
    agent(config, "enroll", "--box", box.base, "--token", token,
          "--fingerprint", box.fingerprint(), "--state-dir", win(tmp_path / "agent" / "state"))
    edit_plan(api, "image", enabled=True, selections=[win(disk)])

    first = json.loads(agent(config, "backup", "--now", "--plan", "image").stdout)
    snap1 = first["snapshot"]
    assert snap1["kind"] == "image", snap1
    info = snap1["images"][0]
    assert info["name"] == "disk.img" and info["size"] == DISK_BYTES, info
    assert info["table"] == "gpt", info
    assert [(v["start"], v["fs"]) for v in info["volumes"]] == [(PART_START, "ext4")], info
    # Used blocks only: the partition's free blocks are neither read nor sent.
    assert info["read"].startswith("used-blocks"), info
    assert first["stats"]["new_bytes"] < DISK_BYTES // 2, first["stats"]

    out = tmp_path / "restored.img"
    p = agent(config, "restore-image", snap1["id"], "--to", win(out))
    assert json.loads(p.stdout)["report"]["chunks"] > 0, p.stdout
    assert out.read_bytes() == original, "the restored image differs from the source"
    assert os.stat(out).st_blocks * 512 < DISK_BYTES // 2, "holes are restored sparse"

    # A disk is not a restore target for the Windows agent: refused, nothing written.
    p = agent(config, "restore-image", snap1["id"], "--to", r"\\.\PhysicalDrive0", check=False)
    assert p.returncode != 0 and "files only" in p.stdout + p.stderr, p.stdout + p.stderr

    # A few changed blocks (between the GPT and the partition, which is read in full):
    # only their chunks travel.
    rng = random.Random(4)
    offsets = [128 * KiB, 320 * KiB, 704 * KiB]
    with open(disk, "r+b") as f:
        for off in offsets:
            f.seek(off)
            f.write(rng.randbytes(4 * KiB))
    touched = chunks_touched(offsets, 4 * KiB)
    assert touched == 3 and all(off // CHUNK < PART_START // CHUNK for off in offsets)
    second = json.loads(agent(config, "backup", "--now", "--plan", "image").stdout)
    s2 = second["stats"]
    assert touched <= s2["new_chunks"] <= touched + 2, (s2, touched)  # + catalog chunks
    p = agent(config, "restore-image", second["snapshot"]["id"], "--to", win(out), "--overwrite")
    assert out.read_bytes() == disk.read_bytes() != original

    # Files from inside the image's ext4 volume, read from the box's chunks.
    files_out = tmp_path / "files"
    p = agent(config, "restore", snap1["id"], "--image", "disk.img", "--volume", "1",
              "--to", win(files_out))
    wanted = {str(f.relative_to(tree)): f.read_bytes() for f in tree.rglob("*") if f.is_file()}
    got = {str(f.relative_to(files_out)): f.read_bytes()
           for f in files_out.rglob("*") if f.is_file()}
    assert got == wanted, sorted(set(got) ^ set(wanted))
    assert json.loads(p.stdout)["report"]["files"] == len(wanted), p.stdout
