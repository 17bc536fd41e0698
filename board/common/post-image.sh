#!/usr/bin/env bash
# Makes the disk image from the root file system (Buildroot's post-image step, also run by
# the Debian test image's build): the ESP (GRUB for the board, grub.cfg, the first grubenv,
# the factory file when given), then genimage's GPT (common/genimage.cfg), then, when a
# signing key is given, the RAUC update bundle of the same root file system.
#
# usage: post-image.sh BINARIES_DIR BOARD_DIR
#   BINARIES_DIR must hold rootfs.squashfs; the EFI GRUB image is taken from $ABRI_GRUB_EFI,
#   else from Buildroot's BINARIES_DIR/efi-part/EFI/BOOT/<name>.
# env: ABRI_FACTORY_TOML      a factory file to put on the ESP (abri/factory.toml)
#      ABRI_VERSION           the bundle's version (default: unknown)
#      ABRI_RAUC_CERT, ABRI_RAUC_KEY   sign an update bundle (update.raucb) when both are set
#      GENIMAGE, GRUB_EDITENV, RAUC, UNSQUASHFS   the host tools (default: from PATH)
# Output: BINARIES_DIR/abri.img (and update.raucb).
set -euo pipefail

BINARIES_DIR="$(cd "$1" && pwd)"
BOARD_DIR="$(cd "${2:?usage: post-image.sh BINARIES_DIR BOARD_DIR}" && pwd)"
COMMON_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GENIMAGE="${GENIMAGE:-genimage}"
GRUB_EDITENV="${GRUB_EDITENV:-grub-editenv}"
RAUC="${RAUC:-rauc}"

set -a
# shellcheck source=layout.env
. "$COMMON_DIR/layout.env"
# shellcheck disable=SC1091
. "$BOARD_DIR/board.env"
set +a

render() {
    python3 - "$1" "$2" <<'PY'
import os, re, sys
src, dst = sys.argv[1], sys.argv[2]
def value(m):
    name = m.group(1)
    if name not in os.environ:
        sys.exit(f"post-image: {src} uses @{name}@, which layout.env and board.env do not define")
    return os.environ[name]
open(dst, "w").write(re.sub(r"@([A-Z0-9_]+)@", value, open(src).read()))
PY
}

[ -f "$BINARIES_DIR/rootfs.squashfs" ] || {
    echo "post-image: $BINARIES_DIR/rootfs.squashfs is missing" >&2
    exit 1
}
# GRUB loads the kernel from the slot: it must be able to read the squashfs.
if command -v "${UNSQUASHFS:-unsquashfs}" >/dev/null; then
    comp=$("${UNSQUASHFS:-unsquashfs}" -s "$BINARIES_DIR/rootfs.squashfs" | sed -n 's/^Compression //p')
    case "$comp" in
    gzip | xz | lzo) ;;
    *)
        echo "post-image: rootfs.squashfs is compressed with '$comp', which GRUB cannot read" \
            "(use $ABRI_ROOTFS_COMPRESSION, layout.env)" >&2
        exit 1
        ;;
    esac
fi
grub_efi="${ABRI_GRUB_EFI:-$BINARIES_DIR/efi-part/EFI/BOOT/$ABRI_EFI_BINARY}"
[ -f "$grub_efi" ] || {
    echo "post-image: no GRUB EFI image at $grub_efi (set ABRI_GRUB_EFI)" >&2
    exit 1
}

work="$(mktemp -d "$BINARIES_DIR/.post-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
esp="$work/input/esp"
mkdir -p "$esp/EFI/BOOT" "$esp/abri" "$work/root"
cp "$grub_efi" "$esp/EFI/BOOT/${ABRI_EFI_BINARY^^}"
render "$COMMON_DIR/grub.cfg" "$esp/EFI/BOOT/grub.cfg"
"$GRUB_EDITENV" "$esp/EFI/BOOT/grubenv" create
while IFS= read -r line; do
    [ -n "$line" ] && "$GRUB_EDITENV" "$esp/EFI/BOOT/grubenv" set "$line"
done <"$COMMON_DIR/grubenv.txt"
if [ -n "${ABRI_FACTORY_TOML:-}" ]; then
    install -m 0600 "$ABRI_FACTORY_TOML" "$esp/abri/factory.toml"
else
    echo "No factory file yet: the factory writes abri/factory.toml here." >"$esp/abri/README.txt"
fi
ln -s "$BINARIES_DIR/rootfs.squashfs" "$work/input/rootfs.squashfs"

render "$COMMON_DIR/genimage.cfg" "$work/genimage.cfg"
"$GENIMAGE" --config "$work/genimage.cfg" --rootpath "$work/root" --tmppath "$work/tmp" \
    --inputpath "$work/input" --outputpath "$work/output" >"$work/genimage.log" 2>&1 || {
    cat "$work/genimage.log" >&2
    exit 1
}
mv "$work/output/abri.img" "$BINARIES_DIR/abri.img"

if [ -n "${ABRI_RAUC_CERT:-}" ] && [ -n "${ABRI_RAUC_KEY:-}" ]; then
    "$COMMON_DIR/make-bundle.sh" "$BINARIES_DIR/rootfs.squashfs" "$BINARIES_DIR/update.raucb"
fi
