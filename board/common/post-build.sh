#!/usr/bin/env bash
# Finishes a root file system tree for the Abri image (Buildroot's post-build step, also run
# by the Debian test image's build): renders the *.in templates of the overlay from
# layout.env and the board's board.env, installs RAUC's configuration and keyring, moves
# /var's defaults aside (the root is read-only; /var/lib and /var/log live on data), creates
# the mount points and enables the units.
#
# usage: post-build.sh TARGET_DIR BOARD_DIR
# env:   ABRI_RAUC_KEYRING   the CA certificate(s) update bundles must be signed by (required)
#        ABRI_VERSION        the firmware version shown by the console (default: unknown)
#        ABRI_WINDOWS_MSI    the generic Windows agent installer (make windows-agent) the
#                            console makes per-token kits of (optional)
set -euo pipefail

TARGET_DIR="$1"
BOARD_DIR="$(cd "${2:?usage: post-build.sh TARGET_DIR BOARD_DIR}" && pwd)"
COMMON_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

set -a
# shellcheck source=layout.env
. "$COMMON_DIR/layout.env"
# shellcheck disable=SC1091
. "$BOARD_DIR/board.env"
set +a
ABRI_ESP_MOUNT_UNIT="$(echo "${ABRI_ESP_MOUNT#/}" | tr / -).mount"
export ABRI_ESP_MOUNT_UNIT

# Replaces every @NAME@ with the value of $NAME; an unknown name is an error.
render() {
    local src="$1" dst="$2"
    python3 - "$src" "$dst" <<'PY'
import os, re, sys
src, dst = sys.argv[1], sys.argv[2]
text = open(src).read()
def value(m):
    name = m.group(1)
    if name not in os.environ:
        sys.exit(f"post-build: {src} uses @{name}@, which layout.env and board.env do not define")
    return os.environ[name]
out = re.sub(r"@([A-Z0-9_]+)@", value, text)
mode = os.stat(src).st_mode & 0o7777
with open(dst, "w") as f:
    f.write(out)
os.chmod(dst, mode)
PY
}

# The overlay's templates.
while IFS= read -r -d '' tmpl; do
    render "$tmpl" "${tmpl%.in}"
    rm -f "$tmpl"
done < <(find "$TARGET_DIR/etc" "$TARGET_DIR/usr/lib/systemd" "$TARGET_DIR/usr/lib/repart.d" \
    "$TARGET_DIR/usr/libexec/abri" -name '*.in' -print0)

# RAUC.
mkdir -p "$TARGET_DIR/etc/rauc"
render "$COMMON_DIR/rauc/system.conf.in" "$TARGET_DIR/etc/rauc/system.conf"
if [ -z "${ABRI_RAUC_KEYRING:-}" ] || [ ! -f "$ABRI_RAUC_KEYRING" ]; then
    echo "post-build: set ABRI_RAUC_KEYRING to the certificate update bundles are signed with" >&2
    exit 1
fi
install -m 0644 "$ABRI_RAUC_KEYRING" "$TARGET_DIR/etc/rauc/keyring.pem"

# The firmware's identity, read by abrid and shown in the console.
cat >"$TARGET_DIR/etc/abri-release" <<REL
VERSION=${ABRI_VERSION:-unknown}
BOARD=$ABRI_BOARD
RAUC_COMPATIBLE=$ABRI_RAUC_COMPATIBLE
REL

# The agent installers the console hands out (abrid --installers, its default directory).
if [ -n "${ABRI_WINDOWS_MSI:-}" ]; then
    install -D -m 0644 "$ABRI_WINDOWS_MSI" "$TARGET_DIR/usr/share/abri/installers/abri-agent.msi"
fi

# Mount points on the read-only root.
mkdir -p "$TARGET_DIR/data" "$TARGET_DIR$ABRI_ESP_MOUNT" "$TARGET_DIR/srv/backups" \
    "$TARGET_DIR/var/tmp" "$TARGET_DIR/var/cache" "$TARGET_DIR/tmp"

# /var/lib and /var/log are bound to the data partition at boot; their defaults stay in the
# image and are copied over by abri-data-prepare.
for d in lib log; do
    if [ -d "$TARGET_DIR/var/$d" ] && [ ! -L "$TARGET_DIR/var/$d" ]; then
        mkdir -p "$TARGET_DIR/usr/share/factory/var"
        rm -rf "$TARGET_DIR/usr/share/factory/var/$d"
        mv "$TARGET_DIR/var/$d" "$TARGET_DIR/usr/share/factory/var/$d"
    fi
    mkdir -p "$TARGET_DIR/var/$d"
done

# An empty machine-id: systemd makes a transient one on the read-only root (and
# abri-machine-id keeps the first one in GRUB's environment).
: >"$TARGET_DIR/etc/machine-id"

# Units.
enable() {
    local target="$1" unit="$2"
    mkdir -p "$TARGET_DIR/etc/systemd/system/$target.wants"
    ln -sfn "/usr/lib/systemd/system/$unit" "$TARGET_DIR/etc/systemd/system/$target.wants/$unit"
}
enable multi-user.target abrid.service
enable multi-user.target abri-machine-id.service
enable local-fs-pre.target abri-data-format.service
enable local-fs.target abri-data-prepare.service
enable multi-user.target systemd-networkd.service
enable sockets.target systemd-networkd.socket
enable sysinit.target systemd-timesyncd.service
if [ -f "$TARGET_DIR/usr/lib/systemd/system/systemd-resolved.service" ]; then
    enable multi-user.target systemd-resolved.service
    ln -sfn ../run/systemd/resolve/stub-resolv.conf "$TARGET_DIR/etc/resolv.conf"
fi
