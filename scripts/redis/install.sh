#!/usr/bin/env bash
# Installs Debian's redis-server (7.0) and redis-cli (redis-tools, which it depends on) if
# they are not on the PATH: the nodes tests (tests/nodes.rs, tests/nodes_history.rs) and the
# two-node chat check start their own on loopback, and redis-cli makes the tests' clusters.
# Only the binaries are wanted: the service the package enables is stopped and disabled where
# systemd runs.
set -euo pipefail
if command -v redis-server > /dev/null && command -v redis-cli > /dev/null; then
    exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server redis-tools > /dev/null
if command -v systemctl > /dev/null && systemctl is-active --quiet redis-server 2> /dev/null; then
    $SUDO systemctl disable --now redis-server > /dev/null 2>&1 || true
fi
redis-server --version
