#!/usr/bin/env bash
# Installs the Autobahn|Testsuite (`wstest`, Python 2.7 only) into a venv, idempotently.
#
#   BIDIR_AUTOBAHN_HOME   where the venvs live (default ~/.cache/bidir/autobahn)
#   BIDIR_PYTHON2         a CPython 2.7 with headers to use instead of searching
#
# wstest needs CPython 2.7 with headers (wsaccel compiles from source). Taken, in order:
# $BIDIR_PYTHON2; python2.7 on PATH; pyenv's ~/.pyenv/versions/2.7*; /usr/bin/python2.7;
# else Debian bullseye's python2.7, added as an apt source pinned at priority 100 so that
# nothing else ever comes from it. Then virtualenv<20.22 (the last series that creates
# Python 2 venvs) in a Python 3 venv, and the pinned requirements in a Python 2 venv.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HOME_DIR="${BIDIR_AUTOBAHN_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/bidir/autobahn}"
VENV="$HOME_DIR/py27"
BOOT="$HOME_DIR/bootstrap"
REQ="$HERE/requirements-py27.txt"
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQ" | cut -d' ' -f1)"

log() { echo "[autobahn setup] $*" >&2; }
ready() { "$VENV/bin/python" -c 'import autobahntestsuite, wsaccel' > /dev/null 2>&1; }

mkdir -p "$HOME_DIR"
exec 9> "$HOME_DIR/.lock"
flock 9
if [ "$(cat "$STAMP" 2> /dev/null || true)" = "$WANT" ] && ready; then
    exit 0
fi

py2_ok() {
    "$1" -c 'import os, sys
from distutils.sysconfig import get_python_inc
assert sys.version_info[:2] == (2, 7)
assert os.path.exists(os.path.join(get_python_inc(), "Python.h"))' > /dev/null 2>&1
}

PY2="${BIDIR_PYTHON2:-}"
if [ -z "$PY2" ]; then
    for candidate in "$(command -v python2.7 2> /dev/null || true)" \
        "${PYENV_ROOT:-$HOME/.pyenv}"/versions/2.7*/bin/python2.7 /usr/bin/python2.7; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && py2_ok "$candidate"; then
            PY2="$("$candidate" -c 'import sys; print(sys.executable)')"
            break
        fi
    done
fi
if [ -z "$PY2" ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    log "installing python2.7 from Debian bullseye (pinned at priority 100)"
    if ! apt-cache policy python2.7 2> /dev/null | grep -q 'Candidate: 2\.7'; then
        mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2> /dev/null || true)
        [ -n "$mirror" ] || mirror=$(awk '/^deb / && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2> /dev/null || true)
        [ -n "$mirror" ] || { log "no Debian mirror found in the apt sources"; exit 1; }
        $SUDO tee /etc/apt/sources.list.d/bidir-bullseye.sources > /dev/null << SRC
Types: deb
URIs: $mirror
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
        $SUDO tee /etc/apt/preferences.d/bidir-bullseye.pref > /dev/null << 'PREF'
# Only for python2.7 (the Autobahn|Testsuite). Never prefer bullseye otherwise.
Package: *
Pin: release n=bullseye
Pin-Priority: 100
PREF
        $SUDO apt-get update -qq
    fi
    $SUDO apt-get install -y -qq --no-install-recommends python2.7 python2.7-dev gcc libc6-dev > /dev/null
    PY2=/usr/bin/python2.7
fi
py2_ok "$PY2" || { log "$PY2 is not a CPython 2.7 with headers"; exit 1; }
log "using $PY2"

if [ ! -x "$BOOT/bin/virtualenv" ]; then
    log "bootstrap venv with virtualenv<20.22"
    python3 -m venv "$BOOT"
    "$BOOT/bin/pip" install -q 'virtualenv>=20.16,<20.22'
fi
if [ -f "$VENV/pyvenv.cfg" ] && ! "$VENV/bin/python" -c pass > /dev/null 2>&1; then
    rm -rf "$VENV" # its interpreter is gone
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$BOOT/bin/virtualenv" -q -p "$PY2" "$VENV"
fi
log "installing the pinned requirements"
pip_log="$(mktemp)"
if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS=ignore \
    "$VENV/bin/pip" install -q --no-cache-dir -r "$REQ" > "$pip_log" 2>&1; then
    grep -v 'DEPRECATION: Python 2.7' "$pip_log" >&2 || true
    rm -f "$pip_log"
    log "pip install failed"
    exit 1
fi
rm -f "$pip_log"
ready || { log "wstest is not importable after the install"; exit 1; }
echo "$WANT" > "$STAMP"
log "ready: $VENV"
