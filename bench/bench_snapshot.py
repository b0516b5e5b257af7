"""How long a configuration change takes to become Envoy bytes, and what sharing saves.

Generates N Services (every other one HTTP/2 by appProtocol) with EndpointSlices and one
HTTPRoute each on one Gateway, then times, in one run:

- parse: manifest dicts → validated model objects
- translate: model → IR (Gateway API translator)
- build+serialize: IR → Envoy protobuf → one serialized ``Any`` per resource (a new snapshot)
- rebuild unchanged: the same again with the previous snapshot given, as after an edit elsewhere
- per-subscriber re-serialization: what serializing every resource again for each of P proxies
  would cost, against the cache handing all of them the same bytes

Prints figures and ratios; asserts nothing about wall-clock time.

    .venv/bin/python bench/bench_snapshot.py [--services 2000] [--proxies 50]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

from meshxds.identity import ProxyIdentity
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.pipeline import SnapshotBuilder, translate
from meshxds.testing.manifests import gateway_api_docs, gateway_listener
from meshxds.xds.cache import PUSH_ORDER
from meshxds.xds.resources import build_resources

T = TypeVar("T")
GATEWAY = ProxyIdentity.of(
    namespace="gateway-system", labels={"gateway.networking.k8s.io/gateway-name": "http"}
)


def manifests(services: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = gateway_api_docs([gateway_listener(8080)])
    for i in range(services):
        name, ns = f"svc-{i}", f"ns-{i % 20}"
        port: dict[str, Any] = {"port": 8080, "name": "http"}
        if i % 2:
            port["appProtocol"] = "http2"
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"ports": [port]},
            }
        )
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-x",
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": name},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 9000}],
                "endpoints": [{"addresses": [f"10.{i // 250 % 250}.{i % 250}.{j}"]} for j in range(1, 4)],
            }
        )
        docs.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "parentRefs": [{"name": "http", "namespace": "gateway-system"}],
                    "hostnames": [f"{name}.example.com"],
                    "rules": [
                        {
                            "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                            "backendRefs": [{"name": name, "port": 8080}],
                        },
                    ],
                },
            }
        )
    return docs


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--proxies", type=int, default=50)
    args = parser.parse_args()

    docs = [SourcedDocument(path="bench", index=i, body=d) for i, d in enumerate(manifests(args.services))]
    resources, t_parse = timed(lambda: parse_documents(docs))
    translation, t_translate = timed(lambda: translate(resources))
    builder = SnapshotBuilder(translation)
    snapshot, t_build = timed(lambda: builder(GATEWAY))
    _, t_rebuild = timed(lambda: SnapshotBuilder(translation, previous=builder)(GATEWAY))
    count = sum(len(snapshot.get(t)) for t in PUSH_ORDER)
    size = sum(len(r.any.value) for t in PUSH_ORDER for r in snapshot.get(t).values())

    # Re-serializing for every subscriber (what a cache without shared bytes would do).
    by_type = build_resources(translation.config_for(GATEWAY))

    def reserialize_all() -> int:
        total = 0
        for _ in range(args.proxies):
            for items in by_type.values():
                for _, msg in items:
                    total += len(msg.SerializeToString(deterministic=True))
        return total

    _, t_per_proxy = timed(reserialize_all)
    # With the cache, each proxy's push only reads the shared serialized bytes.
    shared_bytes, t_shared = timed(
        lambda: sum(
            len(r.any.value)
            for _ in range(args.proxies)
            for t in PUSH_ORDER
            for r in snapshot.get(t).values()
        )
    )

    print(f"services={args.services} objects={len(resources)} envoy_resources={count} bytes={size}")
    print(f"parse            {t_parse * 1000:9.1f} ms")
    print(f"translate        {t_translate * 1000:9.1f} ms")
    print(f"build+serialize  {t_build * 1000:9.1f} ms  ({t_build / count * 1e6:.1f} us/resource)")
    print(f"rebuild (reuse)  {t_rebuild * 1000:9.1f} ms")
    print(
        f"{args.proxies} proxies: re-serialize per proxy {t_per_proxy * 1000:.1f} ms vs shared bytes "
        f"{t_shared * 1000:.1f} ms ({shared_bytes} bytes handed out): "
        f"ratio {t_per_proxy / max(t_shared, 1e-9):.0f}x"
    )


if __name__ == "__main__":
    main()
