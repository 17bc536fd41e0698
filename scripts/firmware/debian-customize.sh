#!/usr/bin/env bash
# mmdebstrap customize hook of the test image's Debian root: fetch Debian's kernel, keep
# only the modules the box needs (modules.txt, with their dependencies), build the busybox
# initramfs that loads them, and drop what a read-only appliance root does not need.
#
# usage (from mmdebstrap): debian-customize.sh ROOT
set -euo pipefail
root="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# --- the kernel ---------------------------------------------------------------------------
pkg=$(chroot "$root" apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$pkg" ] || { echo "customize: no kernel package behind linux-image-amd64" >&2; exit 1; }
stage="$root/tmp/kernel"
mkdir -p "$stage"
# systemd-resolved made the root's resolv.conf a link into /run: resolve with the host's
# for the download.
mv "$root/etc/resolv.conf" "$root/etc/resolv.conf.keep"
cp /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" sh -c "cd /tmp/kernel && apt-get download -q '$pkg'" >/dev/null 2>&1
rm -f "$root/etc/resolv.conf"
mv "$root/etc/resolv.conf.keep" "$root/etc/resolv.conf"
dpkg-deb -x "$stage"/*.deb "$stage/x"
kver=$(ls "$stage/x/lib/modules")
install -m 0644 "$stage/x/boot/vmlinuz-$kver" "$root/boot/bzImage"
# The package leaves the module index to its postinst.
depmod -b "$stage/x" "$kver"

# The modules listed and their dependencies, from the full tree to the root's.
mods=()
initramfs_mods=()
while read -r name tag; do
    case "$name" in '' | '#'*) continue ;; esac
    mods+=("$name")
    [ "${tag:-}" = initramfs ] && initramfs_mods+=("$name")
done <"$here/modules.txt"
files=()
for m in "${mods[@]}"; do
    while read -r kind path _; do
        [ "$kind" = insmod ] && files+=("$path")
    done < <(modprobe -d "$stage/x" -S "$kver" --show-depends "$m")
done
rm -rf "$root/lib/modules/$kver"
mkdir -p "$root/lib/modules/$kver"
for f in "${files[@]}"; do
    rel="${f#"$stage/x/lib/modules/$kver/"}"
    mkdir -p "$root/lib/modules/$kver/$(dirname "$rel")"
    cp "$f" "$root/lib/modules/$kver/$rel"
done
cp "$stage/x/lib/modules/$kver"/modules.{builtin,builtin.modinfo,order} "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"

# --- the initramfs ------------------------------------------------------------------------
ird="$stage/initramfs"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,etc,lib/modules/"$kver"}
cp "$root/bin/busybox" "$ird/bin/busybox"
for applet in sh mount umount modprobe dd hexdump sleep cat switch_root; do
    ln -s busybox "$ird/bin/$applet"
done
mkdir -p "$ird/sbin"
ln -s ../bin/busybox "$ird/sbin/modprobe"
install -m 0755 "$here/initramfs-init" "$ird/init"
printf '%s\n' "${initramfs_mods[@]}" >"$ird/etc/modules"
for m in "${initramfs_mods[@]}"; do
    while read -r kind path _; do
        [ "$kind" = insmod ] || continue
        rel="${path#"$root/lib/modules/$kver/"}"
        mkdir -p "$ird/lib/modules/$kver/$(dirname "$rel")"
        cp "$path" "$ird/lib/modules/$kver/$rel"
    done < <(modprobe -d "$root" -S "$kver" --show-depends "$m")
done
cp "$root/lib/modules/$kver"/modules.{builtin,order} "$ird/lib/modules/$kver/"
depmod -b "$ird" "$kver"
(cd "$ird" && find . | sort | cpio -o -H newc --quiet -R 0:0 | gzip -1) >"$root/boot/initrd.img"
rm -rf "$stage"

# --- trim -----------------------------------------------------------------------------------
rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,bug} "$root"/var/cache/apt/* \
    "$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt
mkdir -p "$root/usr/share/locale"
