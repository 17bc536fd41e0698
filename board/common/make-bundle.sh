#!/usr/bin/env bash
# Makes a signed RAUC update bundle (verity format) of one root file system image.
#
# usage: make-bundle.sh ROOTFS_IMAGE OUTPUT.raucb
# env:   ABRI_RAUC_CERT, ABRI_RAUC_KEY (signing), ABRI_RAUC_COMPATIBLE (from board.env),
#        ABRI_VERSION (the bundle's version), RAUC (default: rauc)
set -euo pipefail
rootfs="$1"
out="$2"
: "${ABRI_RAUC_CERT:?set ABRI_RAUC_CERT}" "${ABRI_RAUC_KEY:?set ABRI_RAUC_KEY}"
: "${ABRI_RAUC_COMPATIBLE:?set ABRI_RAUC_COMPATIBLE (board.env)}"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
cat >"$dir/manifest.raucm" <<MANIFEST
[update]
compatible=$ABRI_RAUC_COMPATIBLE
version=${ABRI_VERSION:-unknown}

[bundle]
format=verity

[image.rootfs]
filename=rootfs.squashfs
MANIFEST
cp "$rootfs" "$dir/rootfs.squashfs"
rm -f "$out"
"${RAUC:-rauc}" bundle --cert="$ABRI_RAUC_CERT" --key="$ABRI_RAUC_KEY" "$dir" "$out" >/dev/null
