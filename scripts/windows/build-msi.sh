#!/usr/bin/env bash
# Builds the agent's MSI with wixl (msitools) from appliance/agent/dist/windows/abri-agent.wxs.
#
#   scripts/windows/build-msi.sh AGENT.exe OUT.msi
#
# ABRI_BOX_URL, ABRI_FINGERPRINT and ABRI_TOKEN, when set, become the defaults of the
# BOX_URL, FINGERPRINT and TOKEN properties (a kit for one customer); otherwise they are
# empty and given on the msiexec command line.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
exe="${1:?usage: build-msi.sh AGENT.exe OUT.msi}"
out="${2:?usage: build-msi.sh AGENT.exe OUT.msi}"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
for v in ABRI_BOX_URL ABRI_FINGERPRINT ABRI_TOKEN; do
    case "${!v:-}" in *'"'* | *'<'* | *'>'* | *'&'* | *'$'*)
        echo "build-msi: $v contains a character not allowed in an installer property" >&2
        exit 2 ;;
    esac
done
# wixl takes File sources relative to the working directory.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$exe" "$work/abri-agent.exe"
out="$(realpath -m "$out")"
cd "$work"
wixl --arch x64 -o "$out" \
    -D Version="$version" \
    -D BoxUrl="${ABRI_BOX_URL:-}" \
    -D Fingerprint="${ABRI_FINGERPRINT:-}" \
    -D Token="${ABRI_TOKEN:-}" \
    "$ROOT/appliance/agent/dist/windows/abri-agent.wxs"
echo "$out"
