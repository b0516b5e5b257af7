"""Active health checks from a kgateway BackendConfigPolicy, against real Envoy: two upstreams
behind one Service, one turned unhealthy (gRPC ``NOT_SERVING``; an HTTP health path answering
503) stops receiving traffic within a few check intervals, and gets it back once healthy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, to_yaml
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import GrpcEchoServer, Http1OnlyServer, curl, echo_call

LABELS = {"gateway.networking.k8s.io/gateway-name": "http"}
GRPC_CLUSTER = "outbound|9000||echo.default.svc.cluster.local"
HTTP_CLUSTER = "outbound|8080||web.default.svc.cluster.local"


def _service(name: str, port: int, app_protocol: str | None, upstream_ports: tuple[int, int]) -> str:
    """A Service with one port whose two endpoints (one EndpointSlice each) are 127.0.0.1 at
    ``upstream_ports``."""
    service_port = f"{{name: main, port: {port}" + (
        f", appProtocol: {app_protocol}}}" if app_protocol else "}"
    )
    out = f"""\
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{service_port}]
"""
    for index, upstream_port in enumerate(upstream_ports):
        out += f"""\
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-{index}, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: main, port: {upstream_port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"""
    return out


def manifests(listener_port: int, grpc_ports: tuple[int, int], http_ports: tuple[int, int]) -> str:
    return (
        to_yaml(gateway_api_docs([gateway_listener(listener_port)]))
        + _service("echo", 9000, "grpc", grpc_ports)
        + _service("web", 8080, None, http_ports)
        + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: http, namespace: gateway-system}]
  hostnames: [grpc.example]
  rules: [{backendRefs: [{name: echo, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: http, namespace: gateway-system}]
  hostnames: [web.example]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata: {name: echo-health, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: echo}]
  healthCheck:
    interval: 500ms
    timeout: 1s
    unhealthyThreshold: 1
    healthyThreshold: 1
    grpc: {serviceName: meshxds.echo.v1.Echo}
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: BackendConfigPolicy
metadata: {name: web-health, namespace: default}
spec:
  targetRefs: [{group: "", kind: Service, name: web, sectionName: main}]
  healthCheck:
    interval: 0.5s
    timeout: 1s
    unhealthyThreshold: 1
    healthyThreshold: 1
    http: {path: /healthz}
"""
    )


Stack = tuple[
    int, EnvoyProcess, tuple[GrpcEchoServer, GrpcEchoServer], tuple[Http1OnlyServer, Http1OnlyServer]
]


@pytest.fixture(params=["sotw", "delta"])
def stack(request: pytest.FixtureRequest, tmp_path: Path, manifest_dir: Path) -> Iterator[Stack]:
    port = free_port()
    with (
        GrpcEchoServer(name="grpc-a") as grpc_a,
        GrpcEchoServer(name="grpc-b") as grpc_b,
        Http1OnlyServer(name="web-a") as web_a,
        Http1OnlyServer(name="web-b") as web_b,
    ):
        (manifest_dir / "all.yaml").write_text(
            manifests(port, (grpc_a.port, grpc_b.port), (web_a.port, web_b.port))
        )
        with local_gateway(
            manifest_dir,
            node_id="gw",
            namespace="gateway-system",
            labels=LABELS,
            delta=request.param == "delta",
            work_dir=tmp_path,
        ) as (_, envoy):
            yield port, envoy, (grpc_a, grpc_b), (web_a, web_b)


def _answers(call: Callable[[], str], count: int) -> set[str]:
    return {call() for _ in range(count)}


def _prove_failover(
    envoy: EnvoyProcess, cluster: str, call: Callable[[], str], mark_a: Callable[[bool], None]
) -> None:
    # Both endpoints serve: round robin reaches each (the checks have passed at least once).
    wait_until(lambda: _answers(call, 10) == {"a", "b"}, timeout=15, what="both upstreams answering")
    mark_a(False)
    # Unhealthy after one failed check (interval 0.5 s): give it a few intervals.
    wait_until(
        lambda: envoy.stat(f"cluster.{cluster}.health_check.failure") > 0,
        timeout=10,
        what="a failed active health check",
    )
    wait_until(lambda: _answers(call, 10) == {"b"}, timeout=10, what="traffic only to the healthy upstream")
    assert _answers(call, 30) == {"b"}
    mark_a(True)
    wait_until(lambda: _answers(call, 10) == {"a", "b"}, timeout=10, what="the recovered upstream back")


def test_grpc_not_serving_upstream_stops_receiving_calls(stack: Stack) -> None:
    port, envoy, (grpc_a, _), _ = stack

    def call() -> str:
        upstream: str = echo_call(f"127.0.0.1:{port}", authority="grpc.example", timeout=5).upstream
        return upstream.removeprefix("grpc-")

    _prove_failover(envoy, GRPC_CLUSTER, call, grpc_a.set_serving)


def test_http_health_path_503_stops_traffic_to_that_upstream(stack: Stack) -> None:
    port, envoy, _, (web_a, _) = stack

    def call() -> str:
        result = curl(f"http://127.0.0.1:{port}/hello", headers={"host": "web.example"})
        assert result.status == 200, result
        return result.headers["x-upstream-name"].removeprefix("web-")

    _prove_failover(
        envoy, HTTP_CLUSTER, call, lambda healthy: web_a.answer_path("/healthz", None if healthy else 503)
    )
