#!/usr/bin/env bash
# Idempotently make a PostgreSQL server (initdb, pg_ctl, postgres) available for the tests
# that start their own throwaway server (tests/postgres_server.py). Debian's package only.
#
# Does nothing when an initdb already exists under /usr/lib/postgresql/*/bin. Installing
# needs root (or passwordless sudo) and apt-get: postgresql-15, else Debian's default
# `postgresql`. The package's own cluster is not needed: the tests run theirs. When it
# cannot install, it says why and exits 0: the PostgreSQL tests then skip with that
# reason and every other test still runs.
set -uo pipefail

has_initdb() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
if has_initdb; then
    exit 0
fi

skip() {
    echo "ensure_postgres: no initdb under /usr/lib/postgresql/*/bin and $1; the PostgreSQL tests will be skipped." >&2
    exit 0
}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        skip "we are not root (install it with: apt-get install -y postgresql-15)"
    fi
fi
command -v apt-get >/dev/null 2>&1 || skip "apt-get is not available"

export DEBIAN_FRONTEND=noninteractive
echo "ensure_postgres: installing Debian's PostgreSQL (apt-get update; apt-get install postgresql-15)" >&2
log=$(mktemp)
if ! $SUDO apt-get update -q >"$log" 2>&1; then
    tail -5 "$log" >&2
    rm -f "$log"
    skip "apt-get update failed (output above)"
fi
# postgresql-15 is Debian 12's; on another release the unversioned package names its own.
if ! $SUDO apt-get install -y -q --no-install-recommends postgresql-15 >"$log" 2>&1 \
    && ! $SUDO apt-get install -y -q --no-install-recommends postgresql >"$log" 2>&1; then
    tail -5 "$log" >&2
    rm -f "$log"
    skip "apt-get install postgresql-15 (and postgresql) failed (output above)"
fi
rm -f "$log"
has_initdb || skip "the package did not provide it"
ls -d /usr/lib/postgresql/*/bin/initdb >&2
