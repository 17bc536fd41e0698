"""Console downloads through the API with the admin session: browse a snapshot's folders,
download a file's exact bytes, and a folder as `.tar.gz` and `.zip`."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile

from filemode_support import fm, snapshots  # noqa: F401

MiB = 1024 * 1024


def _tree(fm):
    tree = fm.tmp / "data" / "dl"
    (tree / "photos" / "2024").mkdir(parents=True)
    (tree / "empty-dir").mkdir()
    files = {
        "readme.txt": b"read me\n",
        "photos/a.jpg": os.urandom(700_000),
        "photos/2024/b.jpg": os.urandom(2 * MiB + 5),
        "photos/2024/empty": b"",
        "photos/notes ✓.txt": "unicode ✓\n".encode(),
        "big.bin": os.urandom(9 * MiB + 3),  # more than one chunk
    }
    for rel, data in files.items():
        (tree / rel).write_bytes(data)
    # a sparse file: holes read as zeros
    with open(tree / "photos" / "sparse.img", "wb") as f:
        f.write(b"head")
        f.seek(3 * MiB)
        f.write(b"tail")
    files["photos/sparse.img"] = b"head" + bytes(3 * MiB - 4) + b"tail"
    os.symlink("a.jpg", tree / "photos" / "link-to-a")
    return tree, files


def test_browse_and_download_files_and_folders(fm):
    tree, files = _tree(fm)
    fm.plan(tree)
    agent = fm.agent()
    sid = agent.backup()["snapshot"]["id"]
    assert [s["id"] for s in snapshots(fm.api, agent.machine_id)] == [sid]
    base = f"machines/{agent.machine_id}/snapshots/{sid}"
    rel = str(tree).lstrip("/")

    # browse: the root lists the first component, a folder its direct children
    r = fm.api.get(f"{base}/tree")
    assert r.status_code == 200, r.text
    assert [i["name"] for i in r.json()] == [rel.split("/")[0]], r.json()
    r = fm.api.get(f"{base}/tree", params={"path": rel})
    assert r.status_code == 200, r.text
    items = {i["name"]: i for i in r.json()}
    assert sorted(items) == ["big.bin", "empty-dir", "photos", "readme.txt"], items
    assert items["photos"]["kind"] == "dir" and items["readme.txt"]["kind"] == "file"
    assert items["big.bin"]["size"] == len(files["big.bin"])
    assert items["readme.txt"]["path"] == f"{rel}/readme.txt"
    assert items["readme.txt"]["mtime"] == int(os.stat(tree / "readme.txt").st_mtime)
    r = fm.api.get(f"{base}/tree", params={"path": "/" + rel + "/photos/"})
    assert r.status_code == 200, r.text
    kinds = {i["name"]: i["kind"] for i in r.json()}
    assert kinds == {"2024": "dir", "a.jpg": "file", "notes ✓.txt": "file",
                     "sparse.img": "file", "link-to-a": "symlink"}, kinds
    r = fm.api.get(f"{base}/tree", params={"path": rel + "/empty-dir"})
    assert r.status_code == 200 and r.json() == [], r.text

    # a file: its exact bytes
    for name, data in files.items():
        r = fm.api.get(f"{base}/download", params={"path": f"{rel}/{name}"})
        assert r.status_code == 200, f"{name}: {r.status_code} {r.text[:300]}"
        assert r.content == data, f"{name}: {len(r.content)} bytes, expected {len(data)}"
    r = fm.api.get(f"{base}/download", params={"path": f"{rel}/nope.txt"})
    assert r.status_code == 404, r.text

    # a folder as tar.gz and zip: the folder with its contents
    want = {k[len("photos/"):]: v for k, v in files.items() if k.startswith("photos/")}
    r = fm.api.get(f"{base}/download", params={"path": f"{rel}/photos", "format": "tar.gz"})
    assert r.status_code == 200, r.text[:300]
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        got = {}
        for name, m in members.items():
            assert name == "photos" or name.startswith("photos/"), name
            assert ".." not in name.split("/") and not name.startswith("/"), name
            if m.isfile():
                got[name[len("photos/"):]] = tar.extractfile(m).read()
        assert got == want, sorted(got)
        assert members["photos/link-to-a"].issym(), members["photos/link-to-a"]
        assert members["photos/link-to-a"].linkname == "a.jpg"
        assert members["photos/2024"].isdir()
        assert members["photos/a.jpg"].mtime == int(os.stat(tree / "photos/a.jpg").st_mtime)

    r = fm.api.get(f"{base}/download", params={"path": f"{rel}/photos", "format": "zip"})
    assert r.status_code == 200, r.text[:300]
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        assert z.testzip() is None
        got = {}
        for info in z.infolist():
            name = info.filename.rstrip("/")
            assert name == "photos" or name.startswith("photos/"), name
            assert ".." not in name.split("/") and not name.startswith("/"), name
            if not info.is_dir() and name != "photos/link-to-a":
                got[name[len("photos/"):]] = z.read(info)
        assert got == want, sorted(got)

    # the whole snapshot, no path: every file is in the archive
    r = fm.api.get(f"{base}/download", params={"format": "tar.gz"})
    assert r.status_code == 200, r.text[:300]
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        names = {m.name.rstrip("/") for m in tar.getmembers()}
    for name in files:
        assert any(n.endswith(f"{rel}/{name}") for n in names), (name, sorted(names)[:20])

    # an unknown format is refused; no session, no download
    r = fm.api.get(f"{base}/download", params={"path": f"{rel}/photos", "format": "rar"})
    assert r.status_code in (400, 422), r.text
    r = fm.box.get(f"{base}/download", params={"path": f"{rel}/readme.txt"})
    assert r.status_code == 401, r.text
    r = fm.api.get(f"machines/{agent.machine_id}/snapshots/20200101t000000z-abcd/tree")
    assert r.status_code == 404, r.text
