#!/usr/bin/env bash
# What the `celery` tests of rendered projects need beyond the projects' own dependencies: a
# redis-server binary (the tests start and stop their own servers on free loopback ports).
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server already installed: $(redis-server --version)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# Debian's package may start a system-wide server on port 6379; the tests never use it.
if command -v service >/dev/null 2>&1; then
    service redis-server stop >/dev/null 2>&1 || true
fi
echo "installed: $(redis-server --version)"
