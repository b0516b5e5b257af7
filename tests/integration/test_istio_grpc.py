"""gRPC through an Istio gateway to a grpcio backend on a ``grpc-`` named Service port, over SotW
and Delta ADS: HTTP/2 upstream because of the port name; a VirtualService ``fault.delay``
(fixedDelay 2s, 100%) makes the client's 0.5 s deadline expire; ``fault.abort.grpcStatus``
answers that status; without a fault the same call succeeds; a ``grpc-timeout`` header, sent with
no client-side deadline, makes Envoy end a call to a slow method after ~1 s (Istio honours it on
every route)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from istio_support import (
    PortReservation,
    Stack,
    backend,
    gateway,
    run_stack,
    server,
    virtual_service,
    write_manifests,
)

from meshxds.testing._generated import echo_pb2
from meshxds.testing.ports import wait_until
from meshxds.testing.upstreams import ECHO_SERVICE, GrpcEchoServer, curl_grpc, echo_call

CLUSTER = "outbound|9000||echo.grpc.svc.cluster.local"
DEADLINE_S = 0.5


@dataclass
class GrpcGateway:
    stack: Stack
    target: str
    upstream: GrpcEchoServer


def manifests(port: int, upstream_port: int) -> list[dict[str, object]]:
    def rule(host: str, **extra: object) -> dict[str, object]:
        return {
            "hosts": [host],
            "gateways": ["istio-system/grpc-gateway"],
            "http": [{"route": [{"destination": {"host": "echo.grpc.svc.cluster.local"}}], **extra}],
        }

    return [
        gateway("grpc-gateway", "istio-system", [server(port, "GRPC", ["*.example.com"], name="grpc")]),
        *backend("echo", "grpc", port=9000, upstream_port=upstream_port, port_name="grpc-echo"),
        virtual_service("echo", "grpc", rule("echo.example.com")),
        virtual_service(
            "echo-slow",
            "grpc",
            rule(
                "slow.example.com",
                fault={"delay": {"fixedDelay": "2s", "percentage": {"value": 100}}},
            ),
        ),
        virtual_service(
            "echo-deadline",
            "grpc",
            # The upstream never sees the client's deadline: only Envoy can enforce it.
            rule("deadline.example.com", headers={"request": {"remove": ["grpc-timeout"]}}),
        ),
        virtual_service(
            "echo-abort",
            "grpc",
            rule(
                "abort.example.com",
                fault={"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 100}}},
            ),
        ),
    ]


@pytest.fixture(params=["sotw", "delta"])
def grpc_gateway(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    manifest_dir: Path,
    grpc_upstream: GrpcEchoServer,
    harness_processes: list[Any],
) -> Iterator[GrpcGateway]:
    reserved = PortReservation(1)
    port = reserved.ports[0]
    write_manifests(manifest_dir, manifests(port, grpc_upstream.port))
    with (
        reserved,
        run_stack(
            tmp_path,
            manifest_dir,
            delta=request.param == "delta",
            listener_ports=[port],
            reserved=reserved,
            processes=harness_processes,
        ) as stack,
    ):
        target = f"127.0.0.1:{port}"
        wait_until(
            lambda: echo_call(target, "warm-up", authority="echo.example.com", timeout=2),
            timeout=15,
            what="gRPC route serving",
        )
        yield GrpcGateway(stack=stack, target=target, upstream=grpc_upstream)


def test_grpc_without_fault_succeeds_within_the_deadline(grpc_gateway: GrpcGateway) -> None:
    reply = echo_call(grpc_gateway.target, "ping", authority="echo.example.com", timeout=DEADLINE_S)
    assert (reply.message, reply.upstream) == ("ping", "grpc")
    envoy = grpc_gateway.stack.envoy
    # grpc-echo: the port name alone makes the cluster speak HTTP/2.
    assert envoy.stat(f"cluster.{CLUSTER}.upstream_cx_http2_total") >= 1
    assert envoy.stat(f"cluster.{CLUSTER}.upstream_cx_http1_total") == 0


def test_fault_delay_makes_the_deadline_expire(grpc_gateway: GrpcGateway) -> None:
    before = grpc_gateway.upstream.requests
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        echo_call(grpc_gateway.target, "slow", authority="slow.example.com", timeout=DEADLINE_S)
    elapsed = time.monotonic() - started
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.value
    assert elapsed < 1.9, f"the deadline, not the 2 s delay, ended the call ({elapsed:.2f}s)"
    # Envoy was still holding the request in the fault filter: nothing reached the backend.
    assert grpc_gateway.upstream.requests == before
    stats = grpc_gateway.stack.envoy.stats()
    assert sum(v for k, v in stats.items() if k.endswith("fault.delays_injected")) >= 1


def test_fault_delay_is_served_after_the_delay_with_a_longer_deadline(grpc_gateway: GrpcGateway) -> None:
    started = time.monotonic()
    reply = echo_call(grpc_gateway.target, "patient", authority="slow.example.com", timeout=5)
    assert reply.message == "patient"
    assert time.monotonic() - started >= 1.9


def test_fault_abort_grpc_status(grpc_gateway: GrpcGateway) -> None:
    before = grpc_gateway.upstream.requests
    with pytest.raises(grpc.RpcError) as err:
        echo_call(grpc_gateway.target, "x", authority="abort.example.com", timeout=2)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value
    assert grpc_gateway.upstream.requests == before


def test_grpc_timeout_header_is_enforced_by_envoy(grpc_gateway: GrpcGateway) -> None:
    upstream = grpc_gateway.upstream
    cancelled = upstream.cancelled
    started = time.monotonic()
    result = curl_grpc(
        f"http://{grpc_gateway.target}/{ECHO_SERVICE}/Echo",
        echo_pb2.EchoRequest(message="slow", delay_ms=10_000),
        headers={"host": "deadline.example.com", "grpc-timeout": "1S"},
        timeout=8,
    )
    elapsed = time.monotonic() - started
    # Envoy's own trailers-only answer: DEADLINE_EXCEEDED.
    assert (result.status, result.headers.get("grpc-status")) == (200, "4"), result
    assert 0.9 <= elapsed < 4, elapsed
    last = upstream.last_request
    assert last is not None and "grpc-timeout" not in last.headers
    wait_until(lambda: upstream.cancelled > cancelled or None, timeout=5, what="the upstream saw the cancel")
    stats = grpc_gateway.stack.envoy.stats()
    assert sum(v for k, v in stats.items() if k.endswith(".downstream_rq_max_duration_reached")) >= 1
