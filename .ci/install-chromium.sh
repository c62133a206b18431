#!/usr/bin/env bash
# What the rendered projects' browser test (tests/platform/test_task_page.py, slow) needs: Debian's
# `chromium`, run headless against the task page. On CI (CI=true) that test fails without it.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "chromium already installed: $(chromium --version 2>/dev/null || echo unknown version)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# With its recommends: the fonts the page is rendered (and screenshotted) with.
apt-get install -y -qq chromium >/dev/null
echo "installed: $(chromium --version)"
