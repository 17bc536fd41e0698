#!/usr/bin/env bash
# Cross-builds abri-agent.exe for x86_64-pc-windows-gnu with Debian's Rust (rustc-web,
# whose std sources rust-web-src provides: std is rebuilt for the target) and MinGW, and
# installs those Debian packages first when they are missing (root or sudo needed then).
#
#   scripts/windows/build-agent.sh [release|debug]   -> prints the path of the .exe
#
# The target directory is WINDOWS_TARGET_DIR (default target/windows), apart from the
# Linux build's, since the two use different compilers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PROFILE="${1:-release}"
TRIPLE=x86_64-pc-windows-gnu
export CARGO_TARGET_DIR="${WINDOWS_TARGET_DIR:-$ROOT/target/windows}"

missing=()
while read -r pkg _; do
    case "$pkg" in '' | '#'*) continue ;; esac
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done <scripts/apt/windows.txt
if ((${#missing[@]})); then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "build-agent: apt-get install ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's toolchain, not rustup's: only it has the std sources for -Zbuild-std.
export PATH="/usr/bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1
flags=()
[ "$PROFILE" = release ] && flags+=(--release)
/usr/bin/cargo build "${flags[@]}" -Zbuild-std=std,panic_abort --target "$TRIPLE" \
    -p abri-agent --bin abri-agent >&2
exe="$CARGO_TARGET_DIR/$TRIPLE/$PROFILE/abri-agent.exe"
[ -f "$exe" ] || { echo "build-agent: $exe was not built" >&2; exit 1; }
echo "$exe"
