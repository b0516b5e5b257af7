"""HTTPRoute ``retry`` (GEP-1731) through real Envoy, SotW and Delta: a backend that fails the
first attempt with 503 is retried (the client sees 200, the backend saw two requests); without a
retry stanza, or with ``attempts: 0``, the 503 reaches the client; a code not listed is not
retried; ``attempts`` bounds the retries; a gRPC backend's UNAVAILABLE is retried."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from httproute_support import GATEWAY_CLASS, NS, Stack, gateway_yaml, join, run_stack, service_yaml

from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.upstreams import GrpcEchoServer, Http1OnlyServer, echo_call

GW = "retries"
FLAKY, GRPC = "flaky", "flaky-grpc"


def _route(
    host: str, retry: str | None, backend: str = FLAKY, port: int = 8080, timeouts: str | None = None
) -> str:
    stanza = f"\n    retry: {retry}" if retry is not None else ""
    stanza += f"\n    timeouts: {timeouts}" if timeouts is not None else ""
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {host.split(".")[0]}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [{host}]
  rules:
  - backendRefs: [{{name: {backend}, port: {port}}}]{stanza}
"""


ROUTES = join(
    _route("retry.example", "{codes: [503], attempts: 2, backoff: 10ms}"),
    _route("other-code.example", "{codes: [500], attempts: 2}"),
    _route("no-retry.example", None),
    _route("zero.example", "{codes: [503], attempts: 0}"),
    _route("one.example", "{codes: [503], attempts: 1}"),
    _route("grpc.example", "{attempts: 2}", backend=GRPC, port=9000),
    # Conformance's HTTPRouteRetryConnectionError and HTTPRouteRetryBackendTimeout: no codes.
    _route("conn.example", "{attempts: 3}"),
    _route("slow.example", "{attempts: 2}", timeouts="{backendRequest: 200ms}"),
)


def _grpc_service(upstream_port: int) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {GRPC}, namespace: {NS}}}
spec:
  ports: [{{name: grpc, port: 9000, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {GRPC}-1
  namespace: {NS}
  labels: {{kubernetes.io/service-name: {GRPC}}}
addressType: IPv4
ports: [{{name: grpc, port: {upstream_port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""


@dataclass(frozen=True, slots=True)
class Retries:
    stack: Stack
    flaky: Http1OnlyServer
    grpc: GrpcEchoServer


@pytest.fixture(scope="module", params=["sotw", "delta"])
def retries(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retries]:
    port = free_port()
    with Http1OnlyServer(name=FLAKY) as flaky, GrpcEchoServer(name=GRPC) as grpc_upstream:
        files = {
            "gateway.yaml": join(GATEWAY_CLASS, gateway_yaml(GW, [{"name": "http", "port": port}])),
            "backends.yaml": join(service_yaml(FLAKY, flaky.port), _grpc_service(grpc_upstream.port)),
            "routes.yaml": ROUTES,
        }
        with run_stack(
            tmp_path_factory.mktemp(f"retries-{request.param}"),
            files,
            gateways={GW: port},
            probes=[(GW, host, "/") for host in ("retry.example", "zero.example", "one.example")],
            delta=request.param == "delta",
        ) as running:
            yield Retries(stack=running, flaky=flaky, grpc=grpc_upstream)


@pytest.mark.parametrize(
    ("host", "failures", "status", "tries"),
    [
        ("retry.example", 1, 200, 2),  # retried once, then served
        ("retry.example", 2, 200, 3),  # attempts: 2 retries
        ("retry.example", 3, 503, 3),  # ...and no more: the last failure is the answer
        ("one.example", 2, 503, 2),  # attempts: 1
        ("zero.example", 1, 503, 1),  # attempts: 0 turns retries off
        ("no-retry.example", 1, 503, 1),  # no stanza, no retry
        ("other-code.example", 1, 503, 1),  # 503 is not among the codes
    ],
)
def test_a_failing_first_attempt_is_retried_as_the_stanza_says(
    retries: Retries, host: str, failures: int, status: int, tries: int
) -> None:
    flaky = retries.flaky
    flaky.reset()
    flaky.fail_next(failures)
    try:
        reply = retries.stack.request(host, "/")
        assert reply.status == status, (host, reply)
        assert flaky.requests == tries, host
    finally:
        flaky.fail_next(0)


@pytest.mark.parametrize(("failures", "status", "tries"), [(2, 200, 3), (4, 503, 4)])
def test_a_connection_closed_without_an_answer_is_retried(
    retries: Retries, failures: int, status: int, tries: int
) -> None:
    # GEP-1731: "retry on connection errors (disconnect, reset, timeout, TCP failure)", codes or
    # not; attempts: 3 bounds them, and then the proxy's own 503 is the answer.
    flaky = retries.flaky
    flaky.reset()
    flaky.fail_next(failures, status=Http1OnlyServer.DISCONNECT)
    try:
        reply = retries.stack.request("conn.example", "/")
        assert reply.status == status, reply
        assert flaky.requests == tries
    finally:
        flaky.fail_next(0)


@pytest.mark.parametrize(("slow", "status", "tries"), [(2, 200, 3), (3, 504, 3)])
def test_a_try_that_outlives_backend_request_is_retried(
    retries: Retries, slow: int, status: int, tries: int
) -> None:
    # backendRequest: 200ms bounds each try; a try that times out is retried (attempts: 2).
    flaky = retries.flaky
    flaky.reset()
    flaky.slow_next(slow, 0.6)
    try:
        reply = retries.stack.request("slow.example", "/")
        assert reply.status == status, reply
        wait_until(lambda: flaky.requests >= tries or None, timeout=5, what=f"{tries} tries")
        assert flaky.requests == tries
    finally:
        flaky.slow_next(0, 0)


def test_a_grpc_backends_unavailable_is_retried(retries: Retries) -> None:
    upstream = retries.grpc
    upstream.reset()
    upstream.fail_next(1)
    try:
        reply = echo_call(
            f"127.0.0.1:{retries.stack.ports[GW]}", "again", authority="grpc.example", timeout=5
        )
        assert reply.message == "again"
        assert upstream.requests == 2
    finally:
        upstream.fail_next(0)


def test_envoy_holds_the_codes_attempts_and_backoff(retries: Retries) -> None:
    dump = retries.stack.envoys[GW].config_dump()
    policies = {
        vhost["domains"][0]: route["route"].get("retry_policy")
        for config in dump["configs"]
        if config["@type"].endswith("RoutesConfigDump")
        for dynamic in config.get("dynamic_route_configs", [])
        for vhost in dynamic["route_config"].get("virtual_hosts", [])
        for route in vhost["routes"]
        if "route" in route
    }
    policy = policies["retry.example"]
    assert policy["num_retries"] == 2
    assert policy["retriable_status_codes"] == [503]
    assert policy["retry_on"] == "connect-failure,refused-stream,reset,unavailable,retriable-status-codes"
    assert policy["retry_back_off"] == {"base_interval": "0.010s", "max_interval": "0.100s"}
    assert policies["no-retry.example"] is None
