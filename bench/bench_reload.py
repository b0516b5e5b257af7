"""How long a manifest edit takes to be served by a real Envoy.

Starts ``meshxds serve`` on a temporary directory and a real Envoy (SotW or Delta ADS), then
edits an HTTPRoute N times (alternating its hostname) and measures, for each edit, the time
until a request for the new hostname is answered by the upstream through Envoy. Prints the
median, p90 and max; asserts nothing about wall-clock time.

    .venv/bin/python bench/bench_reload.py [--edits 20] [--delta]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs, to_yaml
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import H2cOnlyServer, curl

LABELS = {"gateway.networking.k8s.io/gateway-name": "http"}


def manifests(listener_port: int, upstream_port: int, hostname: str) -> str:
    gateway = gateway_api_docs([gateway_listener(listener_port)])
    nginx = routed_service_docs(
        "nginx", upstream_port=upstream_port, hostnames=[hostname], app_protocol="http2"
    )
    return to_yaml([*gateway, *nginx])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--delta", action="store_true")
    args = parser.parse_args()
    listener_port = free_port()
    with tempfile.TemporaryDirectory() as tmp, H2cOnlyServer(name="nginx") as upstream:
        config = Path(tmp) / "manifests"
        config.mkdir()
        route_file = config / "all.yaml"
        route_file.write_text(manifests(listener_port, upstream.port, "h0.example.com"))
        url = f"http://127.0.0.1:{listener_port}/"
        with local_gateway(
            config, node_id="bench", namespace="gateway-system", labels=LABELS, delta=args.delta
        ):
            latencies = []
            for i in range(1, args.edits + 1):
                host = f"h{i}.example.com"
                start = time.perf_counter()
                route_file.write_text(manifests(listener_port, upstream.port, host))
                wait_until(
                    lambda host=host: (
                        curl(url, http2_prior_knowledge=True, headers={"host": host}).status == 200
                    ),
                    timeout=10,
                    interval=0.01,
                    what=f"{host} served",
                )
                latencies.append(time.perf_counter() - start)
    latencies.sort()
    p90 = latencies[int(0.9 * (len(latencies) - 1))]
    mode = "delta" if args.delta else "sotw"
    median = statistics.median(latencies)
    print(
        f"{mode}: {len(latencies)} edits, edit → served by Envoy: median {median * 1000:.0f} ms, "
        f"p90 {p90 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
