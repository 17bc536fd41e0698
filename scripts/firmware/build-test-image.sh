#!/usr/bin/env bash
# Builds the QEMU test image: Debian's kernel and userland (mmdebstrap, cached) plus the
# project's static binaries, finished by the SAME board files as the Buildroot image
# (board/common: overlay, post-build.sh, post-image.sh, genimage layout, grub.cfg, RAUC).
# No root, no loop mounts: fakeroot, mksquashfs, genimage (mtools, mke2fs).
#
# usage: build-test-image.sh OUT_DIR ABRID_BINARY
# env:   ABRI_VERSION       firmware version (default: the workspace version)
#        ABRI_TEST_BUNDLES  1: also make next.raucb (another version) and broken.raucb
#                           (a slot whose abrid cannot start) for the system tests
# Output in OUT_DIR: abri.img, update.raucb, bzImage, initrd.img, factory.toml,
#        claim-code, rauc/ (test signing CA, key, certificate), image.env
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$(mkdir -p "$1" && cd "$1" && pwd)"
ABRID="$(realpath "$2")"
BOARD_DIR="$REPO/board/x86_64-efi"
HERE="$REPO/scripts/firmware"
say() { echo "test-image: $*"; }

# shellcheck source=../../board/common/layout.env
. "$REPO/board/common/layout.env"
export ABRI_ROOTFS_COMPRESSION
ABRI_VERSION="${ABRI_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)}"
export ABRI_VERSION

# --- the Debian root, cached by the hash of what makes it --------------------------------------
key=$(cat "$HERE/packages.txt" "$HERE/modules.txt" "$HERE/debian-customize.sh" \
    "$HERE/initramfs-init" | sha256sum | cut -c1-16)
base="$OUT/cache/debian-$key.tar"
if [ ! -f "$base" ]; then
    say "mmdebstrap the Debian root (cached as $(basename "$base"))"
    mkdir -p "$OUT/cache"
    rm -f "$OUT"/cache/debian-*.tar
    include=$(grep -v '^#' "$HERE/packages.txt" | xargs | tr ' ' ,)
    mmdebstrap --quiet --variant=minbase --include="$include" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        --customize-hook="$HERE/debian-customize.sh \"\$1\"" \
        bookworm "$base.tmp.tar" \
        "deb http://deb.debian.org/debian bookworm main" \
        "deb http://deb.debian.org/debian-security bookworm-security main"
    mv "$base.tmp.tar" "$base"
fi

# --- test signing keys (never committed: made here, in the build folder) ----------------------
keys="$OUT/rauc"
if [ ! -f "$keys/cert.pem" ]; then
    say "making test RAUC signing keys in $keys"
    mkdir -p "$keys"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Abri test firmware CA" \
        -keyout "$keys/key.pem" -out "$keys/cert.pem" 2>/dev/null
    chmod 0600 "$keys/key.pem"
fi
export ABRI_RAUC_KEYRING="$keys/cert.pem" ABRI_RAUC_CERT="$keys/cert.pem" ABRI_RAUC_KEY="$keys/key.pem"

# --- the factory file of the test box (a box's label: the claim code) -------------------------
if [ ! -f "$OUT/factory.toml" ]; then
    say "writing the test box's factory file"
    "$(dirname "$ABRID")/abri-provision" factory --out "$OUT/factory.toml" --json >"$OUT/factory.json"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["claim_code"])' \
        "$OUT/factory.json" >"$OUT/claim-code"
fi
export ABRI_FACTORY_TOML="$OUT/factory.toml"

# --- the root file system(s) --------------------------------------------------------------------
bin="$OUT/binaries"
rm -rf "$bin"
mkdir -p "$bin"
say "assembling the root file system (version $ABRI_VERSION)"
fakeroot -- bash -euo pipefail -s "$base" "$bin" "$ABRID" "$BOARD_DIR" "$REPO" \
    "${ABRI_TEST_BUNDLES:-0}" <<'ASSEMBLE'
base="$1" bin="$2" abrid="$3" board="$4" repo="$5" variants="$6"
tree="$bin/tree"
mkdir -p "$tree"
tar -C "$tree" -xpf "$base"
cp -a "$repo/board/common/rootfs-overlay/." "$tree/"
install -m 0755 "$abrid" "$tree/usr/bin/abrid"
"$repo/board/common/post-build.sh" "$tree" "$board"
cp "$tree/boot/bzImage" "$tree/boot/initrd.img" "$bin/"
squash() {
    mksquashfs "$tree" "$1" -noappend -comp "$ABRI_ROOTFS_COMPRESSION" -quiet -no-progress >/dev/null
}
squash "$bin/rootfs.squashfs"
if [ "$variants" = 1 ]; then
    sed -i "s/^VERSION=.*/VERSION=$ABRI_VERSION-next/" "$tree/etc/abri-release"
    squash "$bin/rootfs-next.squashfs"
    # A slot that boots but whose abrid can never start.
    printf '#!/bin/sh\necho "abrid: broken on purpose (test bundle)" >&2\nexit 1\n' >"$tree/usr/bin/abrid"
    sed -i "s/^VERSION=.*/VERSION=$ABRI_VERSION-broken/" "$tree/etc/abri-release"
    squash "$bin/rootfs-broken.squashfs"
fi
rm -rf "$tree"
ASSEMBLE

# --- ESP, GPT image and update bundle (board/common/post-image.sh) ------------------------------
say "making the ESP GRUB image"
grub-mkimage -O x86_64-efi -p /EFI/BOOT -o "$bin/bootx64.efi" \
    part_gpt fat squash4 ext2 normal linux echo test loadenv regexp configfile search \
    efi_gop all_video reboot halt sleep
export ABRI_GRUB_EFI="$bin/bootx64.efi"
say "genimage + bundle"
"$REPO/board/common/post-image.sh" "$bin" "$BOARD_DIR"
if [ "${ABRI_TEST_BUNDLES:-0}" = 1 ]; then
    set -a
    . "$BOARD_DIR/board.env"
    set +a
    ABRI_VERSION="$ABRI_VERSION-next" "$REPO/board/common/make-bundle.sh" \
        "$bin/rootfs-next.squashfs" "$OUT/next.raucb"
    ABRI_VERSION="$ABRI_VERSION-broken" "$REPO/board/common/make-bundle.sh" \
        "$bin/rootfs-broken.squashfs" "$OUT/broken.raucb"
    rm -f "$bin/rootfs-next.squashfs" "$bin/rootfs-broken.squashfs"
fi
mv "$bin/abri.img" "$bin/update.raucb" "$bin/bzImage" "$bin/initrd.img" "$OUT/"
. "$REPO/board/common/layout.env"
cat >"$OUT/image.env" <<ENV
ABRI_VERSION=$ABRI_VERSION
ROOTFS_A_PARTUUID=$ABRI_ROOTFS_A_PARTUUID
ROOTFS_B_PARTUUID=$ABRI_ROOTFS_B_PARTUUID
ENV
rm -rf "$bin"
say "done: $OUT/abri.img ($(du -h --apparent-size "$OUT/abri.img" | cut -f1), $(du -h "$OUT/abri.img" | cut -f1) used)"
