#!/usr/bin/env bash
# Installs what `make test` needs on a Debian 12 machine: system packages (only the missing
# ones), a Python venv at .venv for the system tests, and the browser tests' npm packages.
# Idempotent and quiet when everything is already there. Needs root for apt-get.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { echo "install-test-deps: $*"; }

# --- Debian packages -------------------------------------------------------------------------
# Each area lists its packages in scripts/apt/<area>.txt (one per line, # comments).
# A second word names the suite to take the package from (e.g. bookworm-backports, whose
# source is added when needed).
want=()
from_suite=()
for list in scripts/apt/*.txt; do
    while read -r pkg suite _; do
        case "$pkg" in '' | '#'*) continue ;; esac
        if [ -n "${suite:-}" ]; then
            from_suite+=("$pkg/$suite")
        else
            want+=("$pkg")
        fi
    done <"$list"
done
if ! command -v node >/dev/null 2>&1; then
    want+=(nodejs)
fi
if ! command -v npm >/dev/null 2>&1; then
    want+=(npm)
fi

missing=()
for pkg in "${want[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done

for entry in "${from_suite[@]}"; do
    pkg="${entry%%/*}"
    suite="${entry#*/}"
    dpkg -s "$pkg" >/dev/null 2>&1 && continue
    if ! grep -rqs "$suite" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        say "adding the Debian $suite source"
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$suite" >"/etc/apt/sources.list.d/$suite.sources"
        apt-get update -qq
    fi
    say "apt-get install -t $suite $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t "$suite" "$pkg" >/dev/null
done

if ((${#missing[@]})); then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO="sudo"
        else
            say "need root to install: ${missing[*]}" >&2
            exit 1
        fi
    fi
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- Rust components for `make lint` (the toolchain itself comes with rustup) ----------------
if command -v rustup >/dev/null 2>&1; then
    for comp in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$comp"; then
            say "rustup component add $comp"
            rustup component add "$comp" >/dev/null
        fi
    done
fi

# --- Python venv for tests/system --------------------------------------------------------------
REQ="tests/system/requirements.txt"
VENV=".venv"
STAMP="$VENV/.requirements.sha256"
req_sum="$(sha256sum "$REQ" | cut -d' ' -f1)"
# Debian's own interpreter: python3-venv is installed for it.
PY=/usr/bin/python3
[ -x "$PY" ] || PY="$(command -v python3)"

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    say "creating Python venv $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$req_sum" ]; then
    say "pip install -r $REQ"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
    echo "$req_sum" >"$STAMP"
fi

# --- npm packages for tests/browser ------------------------------------------------------------
LOCK="tests/browser/package-lock.json"
NSTAMP="tests/browser/node_modules/.lock.sha256"
lock_sum="$(sha256sum "$LOCK" | cut -d' ' -f1)"
if [ ! -f "$NSTAMP" ] || [ "$(cat "$NSTAMP")" != "$lock_sum" ]; then
    say "npm ci in tests/browser"
    # playwright-core downloads no browser; the tests use Debian's /usr/bin/chromium.
    (cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    echo "$lock_sum" >"$NSTAMP"
fi
