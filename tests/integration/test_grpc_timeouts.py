"""Streaming-safe timeouts through real Envoy, SotW and Delta side by side.

One meshxds server feeds two Gateways, each served by its own Envoy (one over SotW ADS, one over
Delta), so every case runs against both in the same wall-clock time:

- a 20 s server stream outlives Envoy's 15 s default route timeout through a GRPCRoute and
  through an HTTPRoute to an ``appProtocol: grpc`` Service;
- a ``grpc-timeout: 1S`` header on a call to a slow method makes Envoy end it with
  DEADLINE_EXCEEDED after ~1 s. The routes strip the header before it reaches the upstream and
  the client (curl) keeps no deadline, so only Envoy knows it;
- ``timeouts.backendRequest`` is Envoy's per-try timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from meshxds.testing._generated import echo_pb2
from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, service_docs, to_yaml
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.server import CDS, LDS, RDS, MeshxdsProcess
from meshxds.testing.upstreams import ECHO_SERVICE, GrpcEchoServer, curl_grpc, echo_call, echo_stream

GRPC_HOST = "grpc.example.com"
HTTP_HOST = "http.example.com"
CLUSTER = "outbound|9000||echo.default.svc.cluster.local"
STREAM_REPLIES = 21  # one a second, the first at once: 20 s, past Envoy's 15 s default
SLOW_MS = 10_000

EnvoyFactory = Callable[..., EnvoyProcess]
MeshxdsFactory = Callable[..., MeshxdsProcess]


@dataclass(frozen=True, slots=True)
class Gateway:
    mode: str
    port: int
    envoy: EnvoyProcess

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def manifests(ports: dict[str, int], upstream_port: int) -> str:
    docs: list[dict[str, object]] = []
    for mode, port in ports.items():
        gateway_docs = gateway_api_docs(
            [gateway_listener(port, allowed_from="Same")], name=mode, namespace="default"
        )
        docs += gateway_docs if not docs else gateway_docs[1:]  # the GatewayClass once
    parents = [{"name": mode} for mode in ports]
    strip_deadline = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": ["grpc-timeout"]}}
    backend = [{"name": "echo", "port": 9000}]
    docs += [
        *service_docs("echo", upstream_port=upstream_port, port=9000, port_name="api", app_protocol="grpc"),
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {
                "parentRefs": parents,
                "hostnames": [GRPC_HOST],
                "rules": [{"filters": [strip_deadline], "backendRefs": backend}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {
                "parentRefs": parents,
                "hostnames": [HTTP_HOST],
                "rules": [
                    {
                        "matches": [{"headers": [{"name": "x-per-try", "value": "1s"}]}],
                        "timeouts": {"request": "5s", "backendRequest": "1s"},
                        "backendRefs": backend,
                    },
                    {"backendRefs": backend},
                ],
            },
        },
    ]
    return to_yaml(docs)


@pytest.fixture
def gateways(
    manifest_dir: Path,
    grpc_upstream: GrpcEchoServer,
    meshxds_factory: MeshxdsFactory,
    envoy_factory: EnvoyFactory,
) -> Iterator[list[Gateway]]:
    ports = {"sotw": free_port(), "delta": free_port()}
    (manifest_dir / "grpc.yaml").write_text(manifests(ports, grpc_upstream.port))
    server = meshxds_factory(manifest_dir, extra_args=("--listener-address", "127.0.0.1"))
    found = []
    for mode, port in ports.items():
        envoy = envoy_factory(
            node_id=f"grpc-{mode}",
            namespace="default",
            labels={"gateway.networking.k8s.io/gateway-name": mode},
            delta=mode == "delta",
        )
        server.wait_synced(envoy.node_id, types=(CDS, LDS, RDS))
        gateway = Gateway(mode=mode, port=port, envoy=envoy)
        for host in (GRPC_HOST, HTTP_HOST):
            wait_until(
                lambda target=gateway.target, host=host: echo_call(
                    target, "warm-up", authority=host, timeout=2
                ),
                timeout=15,
                what=f"{mode}: {host} serving",
            )
        found.append(gateway)
    yield found


def _stream(gateway: Gateway, host: str) -> tuple[list[int], float]:
    started = time.monotonic()
    replies = echo_stream(
        gateway.target, f"{gateway.mode} {host}", count=STREAM_REPLIES, interval_s=1.0, authority=host
    )
    return [r.sequence for r in replies], time.monotonic() - started


def test_server_stream_outlives_envoys_default_route_timeout(gateways: list[Gateway]) -> None:
    cases = [(g, host) for g in gateways for host in (GRPC_HOST, HTTP_HOST)]
    with ThreadPoolExecutor(max_workers=len(cases), thread_name_prefix="stream") as pool:
        futures = {(g.mode, host): pool.submit(_stream, g, host) for g, host in cases}
        results = {case: future.result(timeout=60) for case, future in futures.items()}
    for case, (sequences, elapsed) in results.items():
        assert sequences == list(range(STREAM_REPLIES)), case
        assert elapsed >= STREAM_REPLIES - 1, (case, elapsed)
    for gateway in gateways:
        stats = gateway.envoy.stats()
        assert stats[f"cluster.{CLUSTER}.upstream_rq_timeout"] == 0, gateway.mode


def test_grpc_timeout_header_is_enforced_by_envoy(
    gateways: list[Gateway], grpc_upstream: GrpcEchoServer
) -> None:
    request = echo_pb2.EchoRequest(message="slow", delay_ms=SLOW_MS)
    for gateway in gateways:
        cancelled = grpc_upstream.cancelled
        started = time.monotonic()
        result = curl_grpc(
            f"http://{gateway.target}/{ECHO_SERVICE}/Echo",
            request,
            headers={"host": GRPC_HOST, "grpc-timeout": "1S"},
            timeout=SLOW_MS / 1000 - 2,
        )
        elapsed = time.monotonic() - started
        assert result.status == 200, (gateway.mode, result)
        # A trailers-only answer: Envoy's own reply, the upstream never answered.
        assert result.headers.get("grpc-status") == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0]), (
            gateway.mode,
            result.headers,
        )
        assert 0.9 <= elapsed < 4, (gateway.mode, elapsed)
        # The upstream got the call without the header (the route strips it), so its end came from
        # Envoy's timer, which also reset the upstream stream.
        last = grpc_upstream.last_request
        assert last is not None and last.path.endswith("/Echo") and "grpc-timeout" not in last.headers
        wait_until(
            lambda before=cancelled: grpc_upstream.cancelled > before or None,
            timeout=5,
            what=f"{gateway.mode}: the upstream saw the call cancelled",
        )
        stats = gateway.envoy.stats()
        reached = sum(v for k, v in stats.items() if k.endswith(".downstream_rq_max_duration_reached"))
        assert reached >= 1, gateway.mode


def test_backend_request_timeout_is_the_per_try_timeout(
    gateways: list[Gateway], grpc_upstream: GrpcEchoServer
) -> None:
    for gateway in gateways:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            echo_call(
                gateway.target,
                "slow",
                authority=HTTP_HOST,
                metadata=[("x-per-try", "1s")],
                delay_ms=SLOW_MS,
                timeout=SLOW_MS / 1000 - 2,
            )
        elapsed = time.monotonic() - started
        # The try is bounded at 1 s although the client allowed 8 s and the route 5 s.
        assert 0.9 <= elapsed < 4, (gateway.mode, elapsed)
        # Envoy tells the backend the try's deadline (x-envoy-expected-rq-timeout-ms, and as
        # grpc-timeout, which grpcio turns into the call's deadline rather than metadata), so the
        # try ends at 1 s one of two ways, whichever comes first: Envoy's per-try timer (its 504
        # "upstream request timeout" reaches a gRPC client as UNAVAILABLE), or the backend
        # honouring that deadline itself (DEADLINE_EXCEEDED, passed through).
        last = grpc_upstream.last_request
        assert last is not None, gateway.mode
        assert last.headers.get("x-envoy-expected-rq-timeout-ms") == "1000", (gateway.mode, last)
        per_try_timeouts = gateway.envoy.stat(f"cluster.{CLUSTER}.upstream_rq_per_try_timeout")
        if err.value.code() == grpc.StatusCode.UNAVAILABLE:
            assert per_try_timeouts >= 1, (gateway.mode, err.value)
        else:
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, (gateway.mode, err.value)
