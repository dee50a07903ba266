#!/usr/bin/env bash
# Idempotently make Debian's chromium available at /usr/bin/chromium for the browser e2e test.
# Never downloads a browser build of its own (no `playwright install`): Debian's package only.
#
# Does nothing when /usr/bin/chromium already exists. Installing needs root (or passwordless
# sudo) and apt-get. When it cannot install, it says why and exits 0: the browser test then
# skips with that reason and every other test still runs.
set -uo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi

skip() {
    echo "ensure_chromium: $CHROMIUM is missing and $1; the browser e2e test will be skipped." >&2
    exit 0
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        skip "we are not root (install it with: apt-get install -y chromium)"
    fi
fi
command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available"

export DEBIAN_FRONTEND=noninteractive
echo "ensure_chromium: installing Debian's chromium (apt-get update; apt-get install chromium)" >&2
log=$(mktemp)
if ! $SUDO apt-get update -q >"$log" 2>&1; then
    tail -5 "$log" >&2
    rm -f "$log"
    skip "apt-get update failed (output above)"
fi
if ! $SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation >"$log" 2>&1; then
    tail -5 "$log" >&2
    rm -f "$log"
    skip "apt-get install chromium failed (output above)"
fi
rm -f "$log"
[ -x "$CHROMIUM" ] || skip "the chromium package did not provide it"
"$CHROMIUM" --version 2>/dev/null >&2 || true
