#!/usr/bin/env bash
# Builds the production image with Buildroot (where Buildroot can download its sources).
#
# usage: buildroot-image.sh /path/to/buildroot BOARD      (BOARD: x86_64-efi or arm64-efi)
# env:   ABRI_RAUC_KEYRING  the certificate update bundles are checked against (required)
#        ABRI_RAUC_CERT, ABRI_RAUC_KEY  sign update.raucb too (optional)
#        ABRI_VERSION       the firmware version (default: the workspace version)
# Output: build/buildroot-BOARD/images/abri.img (and update.raucb)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BR="${1:-}"
BOARD="${2:-x86_64-efi}"
if [ -z "$BR" ] || [ ! -f "$BR/Makefile" ] || [ ! -d "$BR/package" ]; then
    echo "make image: give BR=/path/to/buildroot (a Buildroot 2026.02 LTS tree)" >&2
    exit 1
fi
if [ ! -f "$REPO/buildroot/configs/abri_${BOARD//-/_}_defconfig" ]; then
    echo "make image: unknown BOARD $BOARD (x86_64-efi or arm64-efi)" >&2
    exit 1
fi
if [ -z "${ABRI_RAUC_KEYRING:-}" ]; then
    echo "make image: set ABRI_RAUC_KEYRING to the certificate update bundles are signed with" >&2
    exit 1
fi
ABRI_VERSION="${ABRI_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -1)}"
export ABRI_RAUC_KEYRING ABRI_VERSION
out="$REPO/build/buildroot-$BOARD"
make -C "$BR" O="$out" BR2_EXTERNAL="$REPO/buildroot" "abri_${BOARD//-/_}_defconfig"
make -C "$BR" O="$out"
echo "image: $out/images/abri.img"
