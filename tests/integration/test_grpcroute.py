"""GRPCRoute through real Envoy to a grpcio backend: method matching, header matching, and HTTP/2
upstream even when the Service port's name says ``http``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, service_docs, to_yaml
from meshxds.testing.ports import free_port
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import GrpcEchoServer, echo_call

LABELS = {"gateway.networking.k8s.io/gateway-name": "grpc"}
# The port says HTTP/1.1, so the GRPCRoute gets the HTTP/2 variant cluster of its own (names.py).
CLUSTER = "outbound|9000|~http2|echo.default.svc.cluster.local"


def manifests(listener_port: int, upstream_port: int) -> str:
    gateway = gateway_api_docs(
        [gateway_listener(listener_port, name="h2c", allowed_from="Same")], name="grpc", namespace="default"
    )
    return (
        to_yaml(
            [
                *gateway,
                *service_docs("echo", upstream_port=upstream_port, port=9000, port_name="http"),
            ]
        )
        + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo, namespace: default}
spec:
  parentRefs: [{name: grpc}]
  hostnames: [grpc.example.com]
  rules:
    - matches:
        - method: {service: meshxds.echo.v1.Echo, method: Echo}
          headers: [{name: x-tenant, value: blue}]
      backendRefs: [{name: echo, port: 9000}]
"""
    )


@pytest.fixture(params=["sotw", "delta"])
def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, manifest_dir: Path, grpc_upstream: GrpcEchoServer
) -> Iterator[tuple[int, EnvoyProcess]]:
    port = free_port()
    (manifest_dir / "grpc.yaml").write_text(manifests(port, grpc_upstream.port))
    with local_gateway(
        manifest_dir,
        node_id="grpc-gw",
        namespace="default",
        labels=LABELS,
        delta=request.param == "delta",
        work_dir=tmp_path,
    ) as (_, envoy):
        yield port, envoy


def test_grpc_call_routed_by_method_and_header(gateway: tuple[int, EnvoyProcess]) -> None:
    port, envoy = gateway
    reply = echo_call(
        f"127.0.0.1:{port}", "ping", metadata=[("x-tenant", "blue")], authority="grpc.example.com"
    )
    assert reply.message == "ping"
    assert reply.upstream == "grpc"
    assert envoy.stat(f"cluster.{CLUSTER}.upstream_cx_http2_total") >= 1
    assert envoy.stat(f"cluster.{CLUSTER}.upstream_cx_http1_total") == 0


def test_grpc_call_without_matching_header_is_unrouted(gateway: tuple[int, EnvoyProcess]) -> None:
    port, _ = gateway
    with pytest.raises(grpc.RpcError) as err:
        echo_call(f"127.0.0.1:{port}", "ping", authority="grpc.example.com")
    # Envoy answers 404 for no route, which gRPC maps to UNIMPLEMENTED.
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
