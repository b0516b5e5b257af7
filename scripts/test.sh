#!/usr/bin/env bash
# Set up, then run every check CI runs: ruff, mypy, and the tests (unit + integration with real Envoy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check meshxds tests bench protos
.venv/bin/mypy meshxds
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
