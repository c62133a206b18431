#!/usr/bin/env bash
# What the PostgreSQL tests of rendered projects (task_store: postgres) need beyond the projects'
# own dependencies: Debian's PostgreSQL server programs (initdb, pg_ctl, postgres) and the
# `postgres` user the package makes, which runs the tests' servers when the tests run as root.
# The tests start and stop their own servers from throwaway folders on free loopback ports.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && id postgres >/dev/null 2>&1; then
    echo "postgresql already installed: $(compgen -G '/usr/lib/postgresql/*/bin/postgres' | tail -n 1)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# Debian's package may start a system-wide cluster on port 5432; the tests never use it.
if command -v service >/dev/null 2>&1; then
    service postgresql stop >/dev/null 2>&1 || true
fi
echo "installed: $(compgen -G '/usr/lib/postgresql/*/bin/postgres' | tail -n 1)"
