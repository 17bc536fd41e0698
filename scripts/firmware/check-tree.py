#!/usr/bin/env python3
"""Cheap checks that the Buildroot tree and the board files agree, without Buildroot:
every file a defconfig names exists, every board has what the scripts read, the layout's
names are the same in genimage.cfg, grub.cfg, system.conf, fstab and the units, and the
workspace's rust-version is within Buildroot LTS's Rust (1.88)."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXT = ROOT / "buildroot"
errors: list[str] = []


def env_file(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r'^([A-Z0-9_]+)=(.*)$', line.strip())
        if m:
            out[m.group(1)] = m.group(2).strip('"')
    return out


def placeholders(path: Path) -> set:
    return set(re.findall(r"@([A-Z0-9_]+)@", path.read_text()))


layout = env_file(ROOT / "board/common/layout.env")
boards = sorted(p.parent.name for p in (ROOT / "board").glob("*/board.env"))
if set(boards) != {"x86_64-efi", "arm64-efi"}:
    errors.append(f"boards with board.env: {boards}")
needed = {"ABRI_BOARD", "ABRI_RAUC_COMPATIBLE", "ABRI_GRUB_TARGET", "ABRI_EFI_BINARY",
          "ABRI_KERNEL_IMAGE", "ABRI_CMDLINE"}
templates = [ROOT / "board/common/genimage.cfg", ROOT / "board/common/grub.cfg",
             ROOT / "board/common/rauc/system.conf.in",
             *(ROOT / "board/common/rootfs-overlay").rglob("*.in")]
for board in boards:
    env = env_file(ROOT / "board" / board / "board.env")
    if missing := needed - env.keys():
        errors.append(f"board/{board}/board.env lacks {sorted(missing)}")
    known = set(layout) | set(env) | {"ABRI_ESP_MOUNT_UNIT"}
    for t in templates:
        if unknown := placeholders(t) - known:
            errors.append(f"{t.relative_to(ROOT)} uses {sorted(unknown)}, unknown for {board}")
    if env.get("ABRI_BOARD") != board:
        errors.append(f"board/{board}/board.env says ABRI_BOARD={env.get('ABRI_BOARD')}")

# Defconfigs: one per board; every external path exists; the board's folder is the one used.
for board in boards:
    cfg = EXT / "configs" / f"abri_{board.replace('-', '_')}_defconfig"
    if not cfg.exists():
        errors.append(f"no defconfig {cfg.relative_to(ROOT)}")
        continue
    text = cfg.read_text()
    for path in re.findall(r"\$\(BR2_EXTERNAL_ABRI_PATH\)([^\s\"]+)", text):
        if not (EXT / path.lstrip("/")).resolve().exists():
            errors.append(f"{cfg.name} names {path}, which does not exist")
    if f"board/{board}" not in text:
        errors.append(f"{cfg.name} does not use board/{board}")
    for option in ("BR2_INIT_SYSTEMD=y", "BR2_PACKAGE_ABRI=y", "BR2_PACKAGE_RAUC=y",
                   "BR2_TOOLCHAIN_BUILDROOT_GLIBC=y", "BR2_TARGET_ROOTFS_SQUASHFS=y",
                   "BR2_PACKAGE_SYSTEMD_REPART=y"):
        if option not in text:
            errors.append(f"{cfg.name} lacks {option}")
    compression = layout.get("ABRI_ROOTFS_COMPRESSION", "")
    if compression not in ("gzip", "xz", "lzo"):
        errors.append(f"layout.env: ABRI_ROOTFS_COMPRESSION={compression} is not one GRUB reads")
    elif f"BR2_TARGET_ROOTFS_SQUASHFS4_{compression.upper()}=y" not in text:
        errors.append(f"{cfg.name}: the squashfs is not compressed with {compression} (layout.env)")
    headers = re.search(r"BR2_KERNEL_HEADERS_(\d+)_(\d+)=y", text)
    kernel = re.search(r'BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE="(\d+)\.(\d+)', text)
    if not headers or not kernel or headers.groups() != kernel.groups():
        errors.append(f"{cfg.name}: kernel headers do not match the kernel version")
    image = env_file(ROOT / "board" / board / "board.env").get("ABRI_KERNEL_IMAGE")
    if {"bzImage": "BR2_LINUX_KERNEL_BZIMAGE=y", "Image": "BR2_LINUX_KERNEL_IMAGE=y"}.get(image) not in text:
        errors.append(f"{cfg.name}: the kernel image format is not {image}")

# The package: a Config.in entry and a .mk for it, sourced from the tree's Config.in.
if "package/abri/Config.in" not in (EXT / "Config.in").read_text():
    errors.append("buildroot/Config.in does not source package/abri/Config.in")
mk = (EXT / "package/abri/abri.mk").read_text()
subdir = re.search(r"^ABRI_SUBDIR = (\S+)", mk, re.M)
if not subdir or not (ROOT / subdir.group(1) / "Cargo.toml").exists():
    errors.append("ABRI_SUBDIR does not name a crate of the workspace")
if "cargo-package" not in mk or "cargo vendor --locked" not in mk:
    errors.append("abri.mk must be a cargo-package that vendors its crates")

# Rust: Buildroot 2026.02 LTS ships 1.88.
rv = re.search(r'rust-version = "(\d+)\.(\d+)"', (ROOT / "Cargo.toml").read_text())
if not rv or (int(rv.group(1)), int(rv.group(2))) > (1, 88):
    errors.append("the workspace's rust-version must be at most 1.88 (Buildroot LTS)")

# The kernel reads the slots' compression.
kernel_option = {"gzip": "CONFIG_SQUASHFS_ZLIB=y", "xz": "CONFIG_SQUASHFS_XZ=y",
                 "lzo": "CONFIG_SQUASHFS_LZO=y"}.get(layout.get("ABRI_ROOTFS_COMPRESSION", ""))
if kernel_option and kernel_option not in (ROOT / "board/common/linux.fragment").read_text():
    errors.append(f"board/common/linux.fragment lacks {kernel_option}")

# One layout: the partitions genimage makes are the ones GRUB, RAUC and fstab use.
genimage = (ROOT / "board/common/genimage.cfg").read_text()
for part in ("esp", "rootfs-a", "rootfs-b", "data"):
    if f"partition {part} " not in genimage:
        errors.append(f"genimage.cfg has no partition {part}")
grub = (ROOT / "board/common/grub.cfg").read_text()
rauc = (ROOT / "board/common/rauc/system.conf.in").read_text()
fstab = (ROOT / "board/common/rootfs-overlay/etc/fstab.in").read_text()
for name, text, keys in (
    ("grub.cfg", grub, ["ABRI_ROOTFS_A_PARTUUID", "ABRI_ROOTFS_B_PARTUUID"]),
    ("system.conf.in", rauc, ["ABRI_ROOTFS_A_PARTUUID", "ABRI_ROOTFS_B_PARTUUID", "ABRI_GRUBENV"]),
    ("fstab.in", fstab, ["ABRI_DATA_PARTUUID", "ABRI_ESP_PARTUUID"]),
    ("genimage.cfg", genimage, ["ABRI_ESP_PARTUUID", "ABRI_ROOTFS_A_PARTUUID",
                                "ABRI_ROOTFS_B_PARTUUID", "ABRI_DATA_PARTUUID"]),
):
    for k in keys:
        if f"@{k}@" not in text:
            errors.append(f"{name} does not use @{k}@")
uuids = [v for k, v in layout.items() if k.endswith("UUID")]
if len(set(uuids)) != len(uuids) or not all(re.fullmatch(r"[0-9a-f-]{36}", u) for u in uuids):
    errors.append("layout.env: the pinned UUIDs must be distinct lower-case UUIDs")

if errors:
    print("firmware-check: " + "\n  ".join(["FAILED"] + errors))
    sys.exit(1)
print(f"firmware-check: {len(boards)} boards, defconfigs and layout agree")
