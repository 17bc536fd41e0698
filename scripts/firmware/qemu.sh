#!/usr/bin/env bash
# Boots the test image under QEMU (TCG: no KVM here) the way a box boots: OVMF, GRUB from the
# ESP, slot A or B. The disk is a copy-on-write overlay of the built image, kept between runs
# (delete it to start a fresh box). HTTPS is forwarded to the host.
#
# usage: qemu.sh OUT_DIR DISK.qcow2 MAC PORT
set -euo pipefail
OUT="$1" DISK="$2" MAC="$3" PORT="$4"
[ -f "$OUT/abri.img" ] || { echo "qemu: no $OUT/abri.img: run make test-image" >&2; exit 1; }
if [ ! -f "$DISK" ]; then
    qemu-img create -q -f qcow2 -b "$(realpath "$OUT/abri.img")" -F raw "$DISK" 4G
fi
vars="${DISK%.qcow2}.ovmf-vars.fd"
[ -f "$vars" ] || cp /usr/share/OVMF/OVMF_VARS_4M.fd "$vars"
suffix=$(echo "$MAC" | tr -d : | tail -c 5)
cat <<MSG
Booting the test box (TCG, about a minute). When it is up:
  console:     https://127.0.0.1:$PORT/   (the box calls itself backup-$suffix)
  certificate: signed by the box's own CA: download https://127.0.0.1:$PORT/ca.pem or
               compare the fingerprint the console shows
  claim code:  $(cat "$OUT/claim-code" 2>/dev/null || echo "see $OUT/claim-code")
  activate:    open the console and enter the claim code, or
               abri-provision activate https://127.0.0.1:$PORT --claim-code <code> \\
                   --fingerprint <the fingerprint on the console's activation page>
               (QEMU's user network carries no mDNS, so the tool cannot learn it alone)
  disk:        $DISK (delete it for a fresh box)
  stop:        Ctrl-A X
MSG
exec qemu-system-x86_64 -accel tcg -machine q35 -m 1024 -smp 2 -nographic \
    -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
    -drive if=pflash,format=raw,file="$vars" \
    -drive if=none,id=sys,file="$DISK",format=qcow2 -device virtio-blk-pci,drive=sys,bootindex=1 \
    -netdev user,id=n0,hostfwd=tcp:127.0.0.1:"$PORT"-:443 \
    -device virtio-net-pci,netdev=n0,mac="$MAC" \
    -device i6300esb
