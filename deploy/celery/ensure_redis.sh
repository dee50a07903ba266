#!/usr/bin/env bash
# Idempotently make a Redis server (`redis-server`) available: the Celery broker and result
# backend of deploy/celery/ (`make dev-distributed`) and of tests/e2e/test_two_hosts.py,
# which start their own throwaway server on 127.0.0.1 (a free port, no disk persistence).
# Debian's package only.
#
# Does nothing when redis-server is on PATH or in /usr/bin. Installing needs root (or
# passwordless sudo) and apt-get: `redis-server`; the package's own service is not needed
# and not started (there is no init system in a container; nothing here relies on it).
# When it cannot install, it says why and exits 0: the two-host tests then fail naming
# this script, and every other test still runs.
set -uo pipefail

has_redis() {
    command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]
}
if has_redis; then
    exit 0
fi

skip() {
    echo "ensure_redis: no redis-server and $1." >&2
    exit 0
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        skip "we are not root (install it with: apt-get install -y redis-server)"
    fi
fi
command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available"

export DEBIAN_FRONTEND=noninteractive
echo "ensure_redis: installing Debian's Redis (apt-get update; apt-get install redis-server)" >&2
log=$(mktemp)
if ! $SUDO apt-get update -q >"$log" 2>&1; then
    tail -5 "$log" >&2
    rm -f "$log"
    skip "apt-get update failed (output above)"
fi
# policy-rc.d: never start the packaged service (the tests and `make dev-distributed`
# start their own server on a free port).
policy=/usr/sbin/policy-rc.d
added_policy=0
if [ ! -e "$policy" ] && [ -z "$SUDO" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added_policy=1
fi
if ! $SUDO apt-get install -y -q --no-install-recommends redis-server >"$log" 2>&1; then
    tail -5 "$log" >&2
    rm -f "$log"
    [ "$added_policy" = 1 ] && rm -f "$policy"
    skip "apt-get install redis-server failed (output above)"
fi
rm -f "$log"
[ "$added_policy" = 1 ] && rm -f "$policy"
has_redis || skip "the package did not provide it"
redis-server --version >&2
