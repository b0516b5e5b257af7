"""kgateway TrafficPolicy ``retry`` and ``timeouts`` through real Envoy, SotW and Delta.

One Gateway with listeners ``http`` and ``retrying``, one HTTP/1.1 backend that can fail or stall
its next requests:

- a policy on HTTPRoute ``retry`` (retriable-status-codes, 503, attempts 2): a first answer 503
  is retried, the client gets 200 and the backend saw two requests; HTTPRoute ``plain``, without
  a policy, passes the 503 on;
- ``timeouts.request: 500ms`` answers 504 when the backend is slower than that, and
  ``timeouts.streamIdle: 500ms`` when it stays silent longer (Envoy's route ``idle_timeout``);
- ``retry.perTryTimeout`` with ``retryOn: [reset]``: a first try that stalls is abandoned and the
  second answers, well before the stalled one would have;
- a policy naming one rule by ``sectionName`` retries that rule only; one that an ExtensionRef
  filter names retries the rule of the filter;
- a policy on listener ``retrying`` retries HTTPRoute ``plain`` there (and not on ``http``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from httproute_support import (
    GATEWAY_CLASS,
    NS,
    Reply,
    Stack,
    gateway_yaml,
    http_request,
    join,
    run_stack,
    service_yaml,
)

from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.upstreams import Http1OnlyServer

GW = "traffic"
BACKEND = "flaky"
RETRY_503 = "{retryOn: [retriable-status-codes], statusCodes: [503], attempts: 2}"


def _route(name: str, rules: str) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [{name}.example]
  rules:
{rules}"""


def _rule(path: str = "/", name: str | None = None, filters: str | None = None) -> str:
    rule = f"  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n"
    rule += f"    backendRefs: [{{name: {BACKEND}, port: 8080}}]\n"
    if name is not None:
        rule += f"    name: {name}\n"
    if filters is not None:
        rule += f"    filters: {filters}\n"
    return rule


def _policy(name: str, spec: str) -> str:
    return f"""\
apiVersion: gateway.kgateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: {name}, namespace: {NS}}}
spec:
{spec}"""


def _targets(kind: str, name: str, section: str | None = None) -> str:
    section_name = f", sectionName: {section}" if section is not None else ""
    return f"  targetRefs: [{{group: gateway.networking.k8s.io, kind: {kind}, name: {name}{section_name}}}]\n"


EXTENSION_REF = (
    "[{type: ExtensionRef, extensionRef: {group: gateway.kgateway.dev, kind: TrafficPolicy, "
    "name: by-filter}}]"
)

MANIFESTS = join(
    _route("retry", _rule()),
    _route("plain", _rule()),
    _route("timeout", _rule()),
    _route("idle", _rule()),
    _route("pertry", _rule()),
    _route("sections", _rule("/guarded", name="guarded") + _rule("/open", name="open")),
    _route("filtered", _rule("/filtered", filters=EXTENSION_REF) + _rule("/bare")),
    _policy("retry-503", _targets("HTTPRoute", "retry") + f"  retry: {RETRY_503}\n"),
    _policy("request-timeout", _targets("HTTPRoute", "timeout") + "  timeouts: {request: 500ms}\n"),
    _policy("stream-idle", _targets("HTTPRoute", "idle") + "  timeouts: {streamIdle: 500ms}\n"),
    _policy(
        "per-try",
        _targets("HTTPRoute", "pertry") + "  retry: {retryOn: [reset], attempts: 1, perTryTimeout: 300ms}\n",
    ),
    _policy("guarded-only", _targets("HTTPRoute", "sections", "guarded") + f"  retry: {RETRY_503}\n"),
    _policy("by-filter", f"  retry: {RETRY_503}\n"),
    _policy("listener-retry", _targets("Gateway", GW, "retrying") + f"  retry: {RETRY_503}\n"),
)


@dataclass(frozen=True, slots=True)
class Traffic:
    stack: Stack
    backend: Http1OnlyServer
    retrying_port: int

    def request(self, host: str, path: str = "/", *, port: int | None = None) -> Reply:
        return http_request(port or self.stack.ports[GW], host, path)

    def failing_first(self, host: str, path: str = "/", *, port: int | None = None) -> tuple[Reply, int]:
        """The answer when the backend fails the first request with 503, and how many it saw."""
        self.backend.reset()
        self.backend.fail_next(1)
        try:
            reply = self.request(host, path, port=port)
            return reply, self.backend.requests
        finally:
            self.backend.fail_next(0)


@pytest.fixture(scope="module", params=["sotw", "delta"])
def traffic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    port, retrying_port = free_port(), free_port()
    listeners = [{"name": "http", "port": port}, {"name": "retrying", "port": retrying_port}]
    with Http1OnlyServer(name=BACKEND) as backend:
        files = {
            "gateway.yaml": join(GATEWAY_CLASS, gateway_yaml(GW, listeners)),
            "backend.yaml": service_yaml(BACKEND, backend.port),
            "routes.yaml": MANIFESTS,
        }
        with run_stack(
            tmp_path_factory.mktemp(f"traffic-policy-{request.param}"),
            files,
            gateways={GW: port},
            probes=[(GW, host, "/") for host in ("retry.example", "plain.example", "timeout.example")],
            delta=request.param == "delta",
        ) as running:
            # The second listener is a second Envoy listener: wait for it as well.
            wait_until(
                lambda: http_request(retrying_port, "plain.example").backend,
                timeout=15,
                what="the retrying listener",
            )
            yield Traffic(stack=running, backend=backend, retrying_port=retrying_port)


def test_a_policy_on_the_httproute_retries_a_503_and_a_route_without_one_does_not(traffic: Traffic) -> None:
    reply, seen = traffic.failing_first("retry.example")
    assert (reply.status, seen) == (200, 2), reply
    reply, seen = traffic.failing_first("plain.example")
    assert (reply.status, seen) == (503, 1), reply


def test_attempts_bound_the_retries(traffic: Traffic) -> None:
    backend = traffic.backend
    backend.reset()
    backend.fail_next(3)
    try:
        reply = traffic.request("retry.example")
        assert reply.status == 503, reply  # attempts: 2 retries, and the third 503 is the answer
        assert backend.requests == 3
    finally:
        backend.fail_next(0)


def test_a_request_timeout_answers_504_for_a_slower_backend(traffic: Traffic) -> None:
    backend = traffic.backend
    backend.slow_next(1, 1.5)
    try:
        reply = traffic.request("timeout.example")
        assert reply.status == 504, reply
        assert reply.elapsed < 1.4, reply.elapsed  # Envoy gave up at 500ms, before the backend answered
    finally:
        backend.slow_next(0, 0)
    assert traffic.request("timeout.example").status == 200  # a fast answer is within the limit


def test_a_stream_idle_timeout_ends_a_request_the_backend_leaves_silent(traffic: Traffic) -> None:
    backend = traffic.backend
    backend.slow_next(1, 1.5)
    try:
        reply = traffic.request("idle.example")
        assert reply.status == 504, reply  # Envoy's answer when no response header came in time
        assert reply.elapsed < 1.4, reply.elapsed
    finally:
        backend.slow_next(0, 0)
    backend.slow_next(1, 1.0)  # the same silence on a route without the policy is waited out
    try:
        assert traffic.request("plain.example").status == 200
    finally:
        backend.slow_next(0, 0)


def test_a_per_try_timeout_retries_a_stalled_first_try(traffic: Traffic) -> None:
    backend = traffic.backend
    backend.reset()
    backend.slow_next(1, 2.0)
    try:
        reply = traffic.request("pertry.example")
        assert reply.status == 200, reply
        assert reply.elapsed < 1.5, reply.elapsed  # the second try answered, not the stalled first
        wait_until(lambda: backend.requests >= 2 or None, timeout=5, what="both tries answered")
        assert backend.requests == 2
    finally:
        backend.slow_next(0, 0)


def test_a_policy_naming_one_rule_retries_that_rule_only(traffic: Traffic) -> None:
    reply, seen = traffic.failing_first("sections.example", "/guarded")
    assert (reply.status, seen) == (200, 2), reply
    reply, seen = traffic.failing_first("sections.example", "/open")
    assert (reply.status, seen) == (503, 1), reply


def test_a_policy_an_extension_ref_filter_names_retries_that_rule(traffic: Traffic) -> None:
    reply, seen = traffic.failing_first("filtered.example", "/filtered")
    assert (reply.status, seen) == (200, 2), reply
    reply, seen = traffic.failing_first("filtered.example", "/bare")
    assert (reply.status, seen) == (503, 1), reply


def test_a_listener_policy_retries_the_routes_of_that_listener_only(traffic: Traffic) -> None:
    reply, seen = traffic.failing_first("plain.example", port=traffic.retrying_port)
    assert (reply.status, seen) == (200, 2), reply
    reply, seen = traffic.failing_first("plain.example")
    assert (reply.status, seen) == (503, 1), reply


def test_envoy_holds_the_policies_settings(traffic: Traffic) -> None:
    stack = traffic.stack
    retry = stack.route_entry(GW, f"httproute/{NS}/retry/rule/0/match/0")["route"]
    assert retry["retry_policy"] == {
        "retry_on": "retriable-status-codes",
        "num_retries": 2,
        "retriable_status_codes": [503],
    }
    assert stack.route_entry(GW, f"httproute/{NS}/timeout/rule/0/match/0")["route"]["timeout"] == "0.500s"
    per_try = stack.route_entry(GW, f"httproute/{NS}/pertry/rule/0/match/0")["route"]["retry_policy"]
    assert (per_try["retry_on"], per_try["per_try_timeout"]) == ("reset", "0.300s")
    assert stack.route_entry(GW, f"httproute/{NS}/idle/rule/0/match/0")["route"]["idle_timeout"] == "0.500s"
