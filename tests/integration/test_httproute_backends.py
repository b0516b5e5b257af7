"""HTTPRoute backends against real Envoy, as the Gateway API conformance tests expect them:
weights (70/30/0, all zero), ``timeouts.request`` (504 in time; ``0s`` disables), unresolvable
backendRefs (missing Service, unknown kind, another namespace without ReferenceGrant: 500 for that
rule, about half the requests when one of two equal backends is invalid) with the status reasons
meshxds reports, and a ReferenceGrant written and deleted while everything runs.

The module-scoped stack serves all but the last test; the ReferenceGrant flip gets its own.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from httproute_support import (
    GATEWAY_CLASS,
    NS,
    EchoServer,
    Stack,
    bounded_requests,
    gateway_yaml,
    join,
    run_stack,
    service_yaml,
)

from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.server import CDS, LDS, RDS
from meshxds.testing.upstreams import Http1OnlyServer

GW = "same-namespace"
V1, V2, V3, SLOW = "infra-backend-v1", "infra-backend-v2", "infra-backend-v3", "slow"
OTHER_NS = "gateway-conformance-web-backend"


def _route(name: str, host: str, rules: str, *, namespace: str = NS) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{{name: {GW}, namespace: {NS}}}]
  hostnames: [{host}]
  rules:
{rules}"""


# conformance/tests/httproute-weight.yaml and httproute-all-backends-weight-zero.yaml
WEIGHTS = _route(
    "weighted-backends",
    "weights.example",
    f"""\
  - matches: [{{path: {{type: PathPrefix, value: /}}}}]
    backendRefs:
    - {{name: {V1}, port: 8080, weight: 70}}
    - {{name: {V2}, port: 8080, weight: 30}}
    - {{name: {V3}, port: 8080, weight: 0}}
  - matches: [{{path: {{type: PathPrefix, value: /zero}}}}]
    backendRefs:
    - {{name: {V1}, port: 8080, weight: 0}}
    - {{name: {V2}, port: 8080, weight: 0}}
""",
)

# conformance/tests/httproute-request-timeout.yaml, plus "0s" (no timeout at all)
TIMEOUTS = _route(
    "request-timeout",
    "timeout.example",
    f"""\
  - matches: [{{path: {{type: PathPrefix, value: /request-timeout}}}}]
    timeouts: {{request: 500ms}}
    backendRefs: [{{name: {SLOW}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /disable-request-timeout}}}}]
    timeouts: {{request: 0s}}
    backendRefs: [{{name: {SLOW}, port: 8080}}]
""",
)


def _invalid_route(name: str, host: str, bad_ref: str) -> str:
    """A valid rule /ok next to a rule /bad whose only backendRef cannot be resolved."""
    return _route(
        name,
        host,
        f"""\
  - matches: [{{path: {{type: PathPrefix, value: /ok}}}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /bad}}}}]
    backendRefs: [{bad_ref}]
""",
    )


INVALID = join(
    # conformance HTTPRouteInvalidNonExistentBackendRef
    _invalid_route(
        "invalid-nonexistent-backend-ref", "missing.example", "{name: does-not-exist, port: 8080}"
    ),
    # conformance HTTPRouteInvalidBackendRefUnknownKind
    _invalid_route(
        "invalid-backend-ref-unknown-kind",
        "kind.example",
        f"{{group: unknown.example.com, kind: NonExistent, name: {V1}, port: 8080}}",
    ),
    # conformance HTTPRouteInvalidCrossNamespaceBackendRef: the Service exists, no ReferenceGrant
    _invalid_route(
        "invalid-cross-namespace-backend-ref",
        "crossns.example",
        f"{{name: web-backend, namespace: {OTHER_NS}, port: 8080}}",
    ),
    # conformance HTTPRoutePartiallyInvalidViaInvalidReferenceGrant-like: one of two equal backends
    _route(
        "half-invalid",
        "half.example",
        f"""\
  - backendRefs:
    - {{name: {V1}, port: 8080, weight: 1}}
    - {{name: does-not-exist, port: 8080, weight: 1}}
""",
    ),
)

INVALID_ROUTES = {
    "invalid-nonexistent-backend-ref": ("missing.example", "BackendNotFound"),
    "invalid-backend-ref-unknown-kind": ("kind.example", "InvalidKind"),
    "invalid-cross-namespace-backend-ref": ("crossns.example", "RefNotPermitted"),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    with (
        # EchoServer answers like Http1OnlyServer, and fast enough for 1,400 requests.
        EchoServer(name=V1) as v1,
        EchoServer(name=V2) as v2,
        EchoServer(name=V3) as v3,
        EchoServer(name="web-backend") as web,
        EchoServer(name=SLOW) as slow,
    ):
        files = {
            "gateway.yaml": join(GATEWAY_CLASS, gateway_yaml(GW, [{"name": "http", "port": port}])),
            "backends.yaml": join(
                *(service_yaml(up.name, up.port) for up in (v1, v2, v3, slow)),
                service_yaml("web-backend", web.port, namespace=OTHER_NS),
            ),
            "weights.yaml": WEIGHTS,
            "timeouts.yaml": TIMEOUTS,
            "invalid.yaml": INVALID,
        }
        with run_stack(
            tmp_path_factory.mktemp("httproute-backends"),
            files,
            gateways={GW: port},
            probes=[(GW, "weights.example", "/"), (GW, "timeout.example", "/request-timeout")],
        ) as running:
            running.upstreams.update({V1: v1, V2: v2, V3: v3, "web": web, SLOW: slow})
            yield running


# --- weights --------------------------------------------------------------------------------

REQUESTS = 1000  # at 70/30, 5 points are 3.4 standard deviations: a false alarm about once in 1,500 runs


def test_weights_split_traffic_70_30_0(stack: Stack) -> None:
    replies = bounded_requests(stack, "weights.example", "/", REQUESTS)
    assert {r.status for r in replies} == {200}
    counts = Counter(r.backend for r in replies)
    assert counts[V3] == 0, counts  # weight 0 gets nothing
    assert abs(counts[V1] / REQUESTS - 0.70) <= 0.05, counts
    assert abs(counts[V2] / REQUESTS - 0.30) <= 0.05, counts
    assert set(counts) == {V1, V2}, counts


def test_all_backends_weight_zero_is_500(stack: Stack) -> None:
    before = {name: up.requests for name, up in stack.upstreams.items()}
    for reply in bounded_requests(stack, "weights.example", "/zero", 10):
        assert (reply.status, reply.backend) == (500, None), reply
    assert {name: up.requests for name, up in stack.upstreams.items()} == before


# --- timeouts -------------------------------------------------------------------------------


def test_request_timeout_gives_504_in_time(stack: Stack) -> None:
    reply = stack.request("timeout.example", "/request-timeout?delay_ms=3000", timeout=10)
    assert reply.status == 504, reply
    assert 0.4 <= reply.elapsed < 2.0, f"answered after {reply.elapsed:.2f}s, the route says 500ms"
    fast = stack.request("timeout.example", "/request-timeout?delay_ms=50")
    assert (fast.status, fast.backend) == (200, SLOW), fast


def test_zero_request_timeout_disables_it(stack: Stack) -> None:
    # Longer than the 500ms rule, and Envoy must hold no timeout of its own (its default is 15s).
    reply = stack.request("timeout.example", "/disable-request-timeout?delay_ms=1500", timeout=10)
    assert (reply.status, reply.backend) == (200, SLOW), reply
    assert reply.elapsed >= 1.5
    route = stack.route_entry(GW, f"httproute/{NS}/request-timeout/rule/1/match/0")
    assert route["route"].get("timeout") == "0s", route
    limited = stack.route_entry(GW, f"httproute/{NS}/request-timeout/rule/0/match/0")
    assert limited["route"].get("timeout") == "0.500s", limited


# --- invalid references ---------------------------------------------------------------------


@pytest.mark.parametrize("route", sorted(INVALID_ROUTES))
def test_unresolvable_backend_ref_answers_500_for_that_rule_only(stack: Stack, route: str) -> None:
    host, _ = INVALID_ROUTES[route]
    web_before = stack.upstreams["web"].requests
    bad = stack.request(host, "/bad")
    assert (bad.status, bad.backend) == (500, None), bad
    ok = stack.request(host, "/ok")
    assert (ok.status, ok.backend) == (200, V1), ok
    assert stack.upstreams["web"].requests == web_before, "the forbidden Service was reached"


@pytest.mark.parametrize("route", sorted(INVALID_ROUTES))
def test_unresolvable_backend_ref_status(stack: Stack, route: str) -> None:
    _, reason = INVALID_ROUTES[route]
    conditions = stack.route_conditions(route)
    # The route is still attached (its other rule works) but says what it could not resolve.
    assert conditions["Accepted"]["status"] == "True", conditions
    assert conditions["ResolvedRefs"]["status"] == "False", conditions
    assert conditions["ResolvedRefs"]["reason"] == reason, conditions


def test_one_invalid_of_two_equal_backends_fails_about_half(stack: Stack) -> None:
    count = 400  # 10 points either side of 50% is 4 standard deviations
    replies = bounded_requests(stack, "half.example", "/", count)
    outcomes = Counter((r.status, r.backend) for r in replies)
    assert set(outcomes) <= {(200, V1), (500, None)}, outcomes
    assert abs(outcomes[(500, None)] / count - 0.5) <= 0.10, outcomes
    conditions = stack.route_conditions("half-invalid")
    assert conditions["ResolvedRefs"]["reason"] == "BackendNotFound", conditions


def test_valid_routes_resolve_and_all_attach(stack: Stack) -> None:
    for route in ("weighted-backends", "request-timeout"):
        conditions = stack.route_conditions(route)
        assert conditions["Accepted"]["status"] == "True", conditions
        assert conditions["ResolvedRefs"]["status"] == "True", conditions
    assert stack.attached_routes(GW) == {"http": 2 + len(INVALID_ROUTES) + 1}


# --- ReferenceGrant added and removed while serving -----------------------------------------

GRANT_NS, APP_NS = "backend", "app"


def _grant(from_namespace: str) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: allow-app, namespace: {GRANT_NS}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {from_namespace}}}]
  to: [{{group: "", kind: Service}}]
"""


@pytest.fixture
def grant_stack(tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    with Http1OnlyServer(name="svc") as svc, Http1OnlyServer(name=V1) as v1:
        files = {
            "gateway.yaml": join(
                GATEWAY_CLASS, gateway_yaml(GW, [{"name": "http", "port": port, "from": "All"}])
            ),
            "backends.yaml": join(
                service_yaml("svc", svc.port, namespace=GRANT_NS), service_yaml(V1, v1.port)
            ),
            "route.yaml": join(
                _route(
                    "cross",
                    "cross.example",
                    f"""\
  - backendRefs: [{{name: svc, namespace: {GRANT_NS}, port: 8080}}]
""",
                    namespace=APP_NS,
                ),
                _route("probe", "probe.example", f"  - backendRefs: [{{name: {V1}, port: 8080}}]\n"),
            ),
        }
        with run_stack(tmp_path, files, gateways={GW: port}, probes=[(GW, "probe.example", "/")]) as running:
            running.upstreams["svc"] = svc
            yield running


def _generation(stack: Stack) -> int:
    return int(stack.config()["generation"])


def _find_named(tree: Any, name: str) -> dict[str, Any]:
    """The first mapping in ``tree`` whose ``name`` is ``name``."""
    if isinstance(tree, dict):
        if tree.get("name") == name:
            return tree
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            with contextlib.suppress(LookupError):
                return _find_named(item, name)
    raise LookupError(name)


def test_reference_grant_written_then_deleted(grant_stack: Stack) -> None:
    stack = grant_stack
    svc = stack.upstreams["svc"]
    envoy = stack.envoys[GW]

    def resolved_refs() -> dict[str, str]:
        cond = stack.route_conditions("cross", APP_NS)["ResolvedRefs"]
        return {"status": cond["status"], "reason": cond["reason"]}

    def answer() -> tuple[int, str | None]:
        reply = stack.request("cross.example", "/")
        return reply.status, reply.backend

    assert answer() == (500, None)
    assert resolved_refs() == {"status": "False", "reason": "RefNotPermitted"}
    assert stack.route_conditions("cross", APP_NS)["Accepted"]["status"] == "True"

    # A grant for another namespace changes nothing.
    grant = stack.manifests / "grant.yaml"
    before = _generation(stack)
    grant.write_text(_grant("elsewhere"))
    wait_until(lambda: _generation(stack) > before, timeout=10, what="the server read the wrong grant")
    # That generation is what the server now serves: the route still answers 500 itself.
    served = _find_named(stack.server.config_dump(envoy.node_id), f"httproute/{APP_NS}/cross/rule/0/match/0")
    assert served.get("direct_response", {}).get("status") == 500, served
    stack.server.wait_synced(envoy.node_id, types=(CDS, LDS, RDS))
    assert answer() == (500, None)
    assert resolved_refs() == {"status": "False", "reason": "RefNotPermitted"}
    assert svc.requests == 0

    # The right grant lets the route through...
    grant.write_text(_grant(APP_NS))
    wait_until(lambda: answer() == (200, "svc"), timeout=10, what="200 from backend/svc once granted")
    assert resolved_refs() == {"status": "True", "reason": "ResolvedRefs"}

    # ...and deleting it takes that back.
    grant.unlink()
    wait_until(lambda: answer() == (500, None), timeout=10, what="500 again once the grant is gone")
    assert resolved_refs() == {"status": "False", "reason": "RefNotPermitted"}
