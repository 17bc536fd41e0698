"""A partitioned disk (GPT, ext4 + NTFS) imaged used-blocks-only: free blocks that still
hold deleted data are neither read nor kept, the partition table and volumes are recorded,
the restored disk's file systems check clean and hold the same files, and the console's
raw and qcow2 downloads equal the restored disk."""

from __future__ import annotations

import io
import random
import tarfile
import subprocess

from filemode_support import verify_store, wait_job_end
from imagemode_support import (KiB, MiB, im, image_backup, make_ext4, make_tree,  # noqa: F401
                               need, qemu_compare, restore_image, sh, sha256)

PART = 40 * MiB
P1 = 1 * MiB
P2 = P1 + PART


def build_disk(tmp):
    tree = tmp / "tree"
    make_tree(tree, seed=9, files=30)
    junk = tree / "junk"
    junk.mkdir()
    (junk / "big.bin").write_bytes(random.Random(3).randbytes(12 * MiB))
    ext4 = tmp / "p1.ext4"
    make_ext4(ext4, tree, PART // MiB)
    # deleted data stays in the free blocks of the file system
    sh("debugfs", "-w", "-R", "rm /junk/big.bin", ext4)
    need("mkntfs")
    ntfs = tmp / "p2.ntfs"
    sh("truncate", "-s", str(PART), ntfs)
    sh("mkntfs", "-Q", "-F", "-L", "winvol", ntfs)
    doc = tmp / "report.txt"
    doc.write_bytes(b"quarterly numbers\n" * 5000)
    sh("ntfscp", ntfs, doc, "report.txt")
    disk = tmp / "disk.img"
    sh("truncate", "-s", str(96 * MiB), disk)
    layout = (f"label: gpt\nstart={P1 // 512}, size={PART // 512}, type=L, name=linux\n"
              f"start={P2 // 512}, size={PART // 512}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7,"
              f" name=windows\n")
    sh("sfdisk", "--quiet", disk, input=layout)
    for part, off in ((ext4, P1), (ntfs, P2)):
        sh("dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={off // MiB}", "conv=notrunc,sparse",
           "status=none")
    return disk, tree, doc


def extract(disk, offset, size, out):
    sh("dd", f"if={disk}", f"of={out}", "bs=1M", f"skip={offset // MiB}",
       f"count={size // MiB}", "status=none")


def test_partitioned_disk_used_blocks_only(im):
    disk, tree, doc = build_disk(im.tmp)
    im.image_plan(disk)
    agent = im.agent()
    report = image_backup(agent)
    info = report["snapshot"]["images"][0]
    assert info["table"] == "gpt", info
    assert "used-blocks" in info["read"], info
    vols = {v["number"]: v for v in info["volumes"]}
    assert vols[1]["fs"] == "ext4" and vols[2]["fs"] == "ntfs", vols
    assert vols[1]["start"] == P1 and vols[2]["size"] == PART, vols
    assert vols[2]["label"] == "windows", vols
    # the 12 MiB of deleted data are free blocks: not read, not sent
    assert vols[1]["used_bytes"] < PART - 12 * MiB, vols
    assert report["bytes_read"] < 20 * MiB, report

    out = im.tmp / "restored.img"
    restore_image(agent, report["snapshot"]["id"], out)
    p1, p2 = im.tmp / "r1.ext4", im.tmp / "r2.ntfs"
    extract(out, P1, PART, p1)
    extract(out, P2, PART, p2)
    sh("e2fsck", "-fn", p1)
    got = sh("debugfs", "-R", "cat /dir1/sub1/file1.bin", p1).stdout
    assert got.encode() == (tree / "dir1" / "sub1" / "file1.bin").read_bytes()
    sh("ntfsfix", "-n", p2)
    copied = im.tmp / "report.out"
    with open(copied, "wb") as f:
        subprocess.run(["ntfscat", str(p2), "report.txt"], stdout=f, check=True, timeout=60)
    assert copied.read_bytes() == doc.read_bytes()
    # the partition table came back as it was
    assert sh("sfdisk", "--dump", out).stdout.replace(str(out), "X") == \
        sh("sfdisk", "--dump", disk).stdout.replace(str(disk), "X")

    # the console's downloads: raw equals the restored disk; qcow2 holds the same bytes
    base = (f"machines/{agent.machine_id}/snapshots/{report['snapshot']['id']}"
            f"/images/{info['name']}/download")
    raw = im.tmp / "download.img"
    r = im.api.get(base, stream=True)
    assert r.status_code == 200, r.text
    assert int(r.headers["content-length"]) == info["size"]
    with open(raw, "wb") as f:
        for block in r.iter_content(1 << 20):
            f.write(block)
    assert sha256(raw) == sha256(out)
    q = im.tmp / "download.qcow2"
    r = im.api.get(base + "?format=qcow2", stream=True)
    assert r.status_code == 200, r.text
    with open(q, "wb") as f:
        for block in r.iter_content(1 << 20):
            f.write(block)
    assert q.stat().st_size == int(r.headers["content-length"])
    sh("qemu-img", "check", q)
    qemu_compare(q, out)
    assert q.stat().st_size < 30 * MiB, "only stored clusters are in the qcow2"
    r = im.api.get(base + "?format=vhd")
    assert r.status_code == 422 and r.json()["error"] == "invalid", r.text
    verify_store(im.box)


def test_files_inside_an_image_are_browsed_and_downloaded(im):
    disk, tree, doc = build_disk(im.tmp)
    im.image_plan(disk)
    agent = im.agent()
    report = image_backup(agent)
    sid, name = report["snapshot"]["id"], report["snapshot"]["images"][0]["name"]
    vol = f"machines/{agent.machine_id}/snapshots/{sid}/images/{name}/volumes"

    # ext4 (volume 1): the tree as it was, deleted files gone
    r = im.api.get(f"{vol}/1/files", params={"path": "/"})
    assert r.status_code == 200, r.text
    names = {i["name"]: i for i in r.json()}
    assert {"notes.txt", "dir1", "junk"} <= set(names), names
    assert names["dir1"]["kind"] == "dir" and names["notes.txt"]["kind"] == "file"
    r = im.api.get(f"{vol}/1/files", params={"path": "/junk"})
    assert r.json() == [], "the deleted file is not listed"
    want = (tree / "dir3" / "sub0" / "file3.bin").read_bytes()
    r = im.api.get(f"{vol}/1/download", params={"path": "/dir3/sub0/file3.bin"})
    assert r.status_code == 200 and r.content == want, r.status_code
    assert int(r.headers["content-length"]) == len(want)
    # a folder as .tar.gz
    r = im.api.get(f"{vol}/1/download", params={"path": "/dir3"})
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert tar.extractfile(members["dir3/sub0/file3.bin"]).read() == want
        expected = {str(p.relative_to(tree)) for p in (tree / "dir3").rglob("*") if p.is_file()}
        assert {n for n, m in members.items() if m.isfile()} == expected

    # NTFS (volume 2)
    r = im.api.get(f"{vol}/2/files", params={"path": "/"})
    assert [i["name"] for i in r.json()] == ["report.txt"], r.text
    r = im.api.get(f"{vol}/2/download", params={"path": "/report.txt"})
    assert r.content == doc.read_bytes()

    # bad input: unclean paths, missing files and volumes are refused cleanly
    assert im.api.get(f"{vol}/1/files", params={"path": "/../etc"}).status_code == 422
    assert im.api.get(f"{vol}/1/download", params={"path": "/nope"}).status_code == 404
    assert im.api.get(f"{vol}/7/files").status_code == 404

    # the console pages show the image, its volumes and the files
    page = im.api.http.get(f"{im.box.base}/machines/{agent.machine_id}/snapshots/{sid}",
                           verify=str(im.box.ca_pem), timeout=30)
    assert page.status_code == 200
    assert 'class="volume-row" data-volume="2"' in page.text and "ntfs" in page.text
    page = im.api.http.get(f"{im.box.base}/{vol.replace('machines/', 'machines/', 1)}/1",
                           params={"path": "dir3/sub0"}, verify=str(im.box.ca_pem), timeout=30)
    assert page.status_code == 200 and "file3.bin" in page.text, page.status_code


def test_files_from_an_image_restore_to_the_machine(im):
    disk, tree, doc = build_disk(im.tmp)
    im.image_plan(disk)
    agent = im.agent()
    report = image_backup(agent)
    sid, name = report["snapshot"]["id"], report["snapshot"]["images"][0]["name"]

    # the CLI: a folder of the ext4 volume, with its files' modes and times
    out = im.tmp / "cli"
    p = agent.run("restore", sid, "/dir3", "--image", name, "--volume", "1", "--to", str(out))
    assert p.data["report"]["files"] > 0, p.stdout
    for src in (tree / "dir3").rglob("*"):
        got = out / "dir3" / src.relative_to(tree / "dir3")
        assert got.exists(), got
        if src.is_file():
            assert got.read_bytes() == src.read_bytes(), got
            assert (got.stat().st_mode & 0o777) == (src.stat().st_mode & 0o777), got
            assert int(got.stat().st_mtime) == int(src.stat().st_mtime), got
    # bad input changes nothing
    p = agent.run("restore", sid, "/../etc", "--image", name, "--volume", "1", "--to",
                  str(im.tmp / "bad"), check=False)
    assert p.returncode != 0 and not (im.tmp / "bad" / "etc").exists()
    p = agent.run("restore", sid, "/", "--image", name, "--volume", "9", "--to",
                  str(im.tmp / "bad"), check=False)
    assert p.returncode != 0 and "volume" in p.stdout + p.stderr

    # the console: "restore to the machine" from the NTFS volume, carried out by the service
    agent.start_service()
    target = im.tmp / "console"
    r = im.api.post(f"machines/{agent.machine_id}/restore",
                    json={"snapshot": sid, "paths": ["/"], "target": str(target),
                          "image": {"image": name, "volume": 2}})
    assert r.status_code == 201, r.text
    ended = wait_job_end(im.api, r.json()["id"], timeout=60)
    assert ended["state"] == "succeeded", ended
    assert (target / "report.txt").read_bytes() == doc.read_bytes()
    # an image restore without a volume, or of a volume without a file system, is refused
    r = im.api.post(f"machines/{agent.machine_id}/restore",
                    json={"snapshot": sid, "paths": ["/"], "target": str(target)})
    assert r.status_code == 422, r.text
