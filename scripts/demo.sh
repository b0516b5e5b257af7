#!/usr/bin/env bash
# Set up, then run the demo: an HTTP/2-only upstream, `meshxds serve --config-dir examples/`
# and a real Envoy attached over ADS (envoy-bootstrap.yaml). Prints a curl to try; Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m meshxds.demo "$@"
