"""HTTPRoute matching against real Envoy, as the Gateway API conformance tests expect it: paths
(Exact, PathPrefix by segment, trailing slash, RegularExpression), headers, query params, methods,
and the spec's precedence across rules and routes, with the status meshxds reports for each route.

One module-scoped stack: ``meshxds serve`` + one SotW Envoy for Gateway ``same-namespace``, and
upstreams ``infra-backend-v1..v3`` whose ``x-upstream-name`` says which backend answered.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httproute_support import (
    GATEWAY_CLASS,
    NS,
    Stack,
    expect_backend,
    gateway_yaml,
    join,
    run_stack,
    service_yaml,
)

from meshxds.testing.ports import free_port
from meshxds.testing.upstreams import Http1OnlyServer

GW = "same-namespace"
V1, V2, V3 = "infra-backend-v1", "infra-backend-v2", "infra-backend-v3"

# conformance/tests/httproute-matching.yaml, on its own hostname
MATCHING = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: matching, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [matching.example]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /}}
    - headers: [{{name: version, value: one}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches:
    - path: {{type: PathPrefix, value: /v2}}
    - headers: [{{name: version, value: two}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
"""

# conformance/tests/httproute-matching-across-routes.yaml
ACROSS_ROUTES = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: matching-part1, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [example.com, example.net]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /}}
    - headers: [{{name: version, value: one}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: matching-part2, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: ["*.com"]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /v2}}
    - headers: [{{name: version, value: two}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
"""

# conformance/tests/httproute-path-match-order.yaml, plus Exact/PathPrefix/RegularExpression edges
PATHS = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: paths, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [paths.example]
  rules:
  - matches: [{{path: {{type: Exact, value: /match}}}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: Exact, value: /match/exact}}}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{path: {{type: Exact, value: /match/exact/one}}}}]
    backendRefs: [{{name: {V3}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /match/}}}}]
    backendRefs: [{{name: {V3}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /match/prefix/}}}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /match/prefix/one}}}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{path: {{type: Exact, value: /exact}}}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /slash/}}}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{path: {{type: RegularExpression, value: "/regex/[0-9]+"}}}}]
    backendRefs: [{{name: {V3}, port: 8080}}]
"""

# conformance/tests/httproute-header-matching.yaml, plus a RegularExpression header match
HEADERS = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: header-matching, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [headers.example]
  rules:
  - matches: [{{headers: [{{name: version, value: one}}]}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{headers: [{{name: version, value: two}}]}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{headers: [{{name: version, value: two}}, {{name: color, value: orange}}]}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches:
    - headers: [{{name: color, value: blue}}]
    - headers: [{{name: color, value: green}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches:
    - headers: [{{name: color, value: red}}]
    - headers: [{{name: color, value: yellow}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{headers: [{{type: RegularExpression, name: X-Build, value: "v[0-9]+-(alpha|beta)"}}]}}]
    backendRefs: [{{name: {V3}, port: 8080}}]
"""

# after conformance/tests/httproute-query-param-matching.yaml
QUERY = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: query-param-matching, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [query.example]
  rules:
  - matches: [{{queryParams: [{{name: animal, value: whale}}]}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{queryParams: [{{name: animal, value: dolphin}}]}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{queryParams: [{{name: animal, value: dolphin}}, {{name: color, value: blue}}]}}]
    backendRefs: [{{name: {V3}, port: 8080}}]
  - matches: [{{queryParams: [{{name: ANIMAL, value: Whale}}]}}]
    backendRefs: [{{name: {V3}, port: 8080}}]
  - matches:
    - path: {{type: PathPrefix, value: /regex}}
      queryParams: [{{type: RegularExpression, name: id, value: "[0-9]{{3}}"}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
"""

# after conformance/tests/httproute-method-matching.yaml
METHODS = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: method-matching, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [method.example]
  rules:
  - matches: [{{method: POST}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{method: GET}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /path1}}, method: GET}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{headers: [{{name: version, value: one}}], method: PUT}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches:
    - path: {{type: PathPrefix, value: /path2}}
      headers: [{{name: version, value: two}}]
      method: POST
    backendRefs: [{{name: {V3}, port: 8080}}]
"""


def _precedence_route(name: str, created: str, rules: str) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}, creationTimestamp: "{created}"}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [precedence.example]
  rules:
{rules}"""


# The spec's order, across rules AND routes: Exact path, longer prefix, method, more headers,
# more query params, then the older route, then namespace/name, then rule order.
PRECEDENCE = join(
    _precedence_route(
        "precedence-a",
        "2024-01-02T00:00:00Z",
        f"""\
  - matches: [{{path: {{type: PathPrefix, value: /a}}}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: Exact, value: /a/b/c}}}}]
    backendRefs: [{{name: {V3}, port: 8080}}]
  - matches:
    - path: {{type: PathPrefix, value: /m}}
      headers: [{{name: x, value: "1"}}, {{name: y, value: "1"}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /h}}, headers: [{{name: x, value: "1"}}]}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches:
    - path: {{type: PathPrefix, value: /h}}
      queryParams: [{{name: q, value: "1"}}, {{name: r, value: "1"}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /q}}, queryParams: [{{name: q, value: "1"}}]}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /tie}}}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /first}}}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /first}}}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
""",
    ),
    _precedence_route(
        "precedence-b",
        "2024-01-01T00:00:00Z",
        f"""\
  - matches: [{{path: {{type: PathPrefix, value: /a/b}}}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /m}}, method: POST}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches:
    - path: {{type: PathPrefix, value: /h}}
      headers: [{{name: x, value: "1"}}, {{name: y, value: "1"}}]
    backendRefs: [{{name: {V3}, port: 8080}}]
  - matches:
    - path: {{type: PathPrefix, value: /q}}
      queryParams: [{{name: q, value: "1"}}, {{name: r, value: "1"}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /tie}}}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
""",
    ),
    # Same age: "namespace/name" order decides, so precedence-c wins over precedence-d.
    _precedence_route(
        "precedence-d",
        "2024-01-03T00:00:00Z",
        f"""\
  - matches: [{{path: {{type: PathPrefix, value: /alpha}}}}]
    backendRefs: [{{name: {V2}, port: 8080}}]
""",
    ),
    _precedence_route(
        "precedence-c",
        "2024-01-03T00:00:00Z",
        f"""\
  - matches: [{{path: {{type: PathPrefix, value: /alpha}}}}]
    backendRefs: [{{name: {V1}, port: 8080}}]
""",
    ),
)

MAIN_ROUTES = {
    "matching": 1,
    "matching-part1": 1,
    "matching-part2": 1,
    "paths": 1,
    "header-matching": 1,
    "query-param-matching": 1,
    "method-matching": 1,
    "precedence-a": 1,
    "precedence-b": 1,
    "precedence-c": 1,
    "precedence-d": 1,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    with (
        Http1OnlyServer(name=V1) as v1,
        Http1OnlyServer(name=V2) as v2,
        Http1OnlyServer(name=V3) as v3,
    ):
        files = {
            "gateway.yaml": join(GATEWAY_CLASS, gateway_yaml(GW, [{"name": "http", "port": port}])),
            "backends.yaml": join(*(service_yaml(up.name, up.port) for up in (v1, v2, v3))),
            "matching.yaml": join(MATCHING, ACROSS_ROUTES),
            "paths.yaml": PATHS,
            "headers.yaml": HEADERS,
            "query.yaml": QUERY,
            "methods.yaml": METHODS,
            "precedence.yaml": PRECEDENCE,
        }
        with run_stack(
            tmp_path_factory.mktemp("httproute-matching"),
            files,
            gateways={GW: port},
            probes=[(GW, "matching.example", "/")],
        ) as running:
            yield running


# --- HTTPRouteMatching / HTTPRouteMatchingAcrossRoutes ---------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "backend"),
    [
        ("/", {}, V1),
        ("/example", {}, V1),
        ("/", {"Version": "one"}, V1),
        ("/v2", {}, V2),
        ("/v2/", {}, V2),
        ("/v2/example", {}, V2),
        ("/", {"Version": "two"}, V2),
        ("/v2example", {}, V1),  # a prefix matches whole segments only
        ("/v2?x=y", {}, V2),
    ],
)
def test_httproute_matching(stack: Stack, path: str, headers: dict[str, str], backend: str) -> None:
    expect_backend(stack, "matching.example", path, backend, headers=headers)


@pytest.mark.parametrize(
    ("host", "path", "headers", "backend"),
    [
        ("example.com", "/", {}, V1),
        ("example.com", "/example", {}, V1),
        ("example.net", "/example", {}, V1),
        ("example.com", "/example", {"Version": "one"}, V1),
        ("example.com", "/v2", {}, V2),
        ("example.net", "/v2", {}, V1),  # the v2 route's "*.com" does not cover example.net
        ("example.com", "/v2/example", {}, V2),
        ("example.com", "/", {"Version": "two"}, V2),
        ("other.com", "/v2", {}, V2),
        ("other.com", "/", {}, None),
    ],
)
def test_httproute_matching_across_routes(
    stack: Stack, host: str, path: str, headers: dict[str, str], backend: str | None
) -> None:
    expect_backend(stack, host, path, backend, headers=headers)


# --- paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "backend"),
    [
        # HTTPRoutePathMatchOrder
        ("/match/exact/one", V3),
        ("/match/exact", V2),
        ("/match", V1),
        ("/match/prefix/one/any", V2),
        ("/match/prefix/any", V1),
        ("/match/any", V3),
        # Exact is the whole path, case-sensitive, nothing more and nothing less
        ("/exact", V1),
        ("/exact?q=1", V1),
        ("/exact/", None),
        ("/exact/x", None),
        ("/exactly", None),
        ("/EXACT", None),
        # a trailing "/" in a PathPrefix is ignored: /slash/ matches /slash, /slash/, /slash/x
        ("/slash", V2),
        ("/slash/", V2),
        ("/slash/x/y", V2),
        ("/slashx", None),
        ("/Slash", None),
        # RegularExpression
        ("/regex/123", V3),
        ("/regex/abc", None),
        ("/regex/", None),
    ],
)
def test_path_matching(stack: Stack, path: str, backend: str | None) -> None:
    expect_backend(stack, "paths.example", path, backend)


# --- headers, query params, methods -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "backend"),
    [
        ({"Version": "one"}, V1),
        ({"Version": "two"}, V2),
        ({"Version": "two", "Color": "orange"}, V1),
        ({"Version": "two", "Color": "blue"}, V2),
        ({"Color": "orange"}, None),
        ({"Some-Other-Header": "one"}, None),
        ({"Color": "blue"}, V1),
        ({"Color": "green"}, V1),
        ({"Color": "red"}, V2),
        ({"Color": "yellow"}, V2),
        ({"Color": "purple"}, None),
        # header names are case-insensitive, values are not
        ({"VERSION": "one"}, V1),
        ({"vErSiOn": "two"}, V2),
        ({"version": "ONE"}, None),
        # RegularExpression (the route spells the name X-Build)
        ({"x-build": "v12-beta"}, V3),
        ({"X-BUILD": "v7-alpha"}, V3),
        ({"x-build": "v12-gamma"}, None),
        ({"x-build": "vX-beta"}, None),
    ],
)
def test_header_matching(stack: Stack, headers: dict[str, str], backend: str | None) -> None:
    expect_backend(stack, "headers.example", "/", backend, headers=headers)


@pytest.mark.parametrize(
    ("path", "backend"),
    [
        ("/?animal=whale", V1),
        ("/?animal=dolphin", V2),
        ("/?animal=dolphin&color=blue", V3),
        ("/?color=blue&animal=dolphin", V3),
        ("/?ANIMAL=Whale", V3),
        ("/?animal=whale&otherparam=irrelevant", V1),
        ("/?animal=dolphin&color=yellow", V2),
        ("/?color=blue", None),
        ("/?animal=dog", None),
        ("/?animal=whaledolphin", None),
        ("/?animal=Whale", None),  # values are case-sensitive
        ("/?Animal=whale", None),  # and so are names
        ("/", None),
        ("/regex?id=123", V2),
        ("/regex?id=12a", None),
    ],
)
def test_query_param_matching(stack: Stack, path: str, backend: str | None) -> None:
    expect_backend(stack, "query.example", path, backend)


@pytest.mark.parametrize(
    ("method", "path", "headers", "backend"),
    [
        ("POST", "/", {}, V1),
        ("GET", "/", {}, V2),
        ("HEAD", "/", {}, None),
        ("DELETE", "/", {}, None),
        ("GET", "/path1", {}, V1),
        ("PUT", "/", {"version": "one"}, V2),
        ("PUT", "/", {}, None),
        ("POST", "/path2", {"version": "two"}, V3),
        ("POST", "/path2", {}, V1),
        ("DELETE", "/path2", {"version": "two"}, None),
    ],
)
def test_method_matching(
    stack: Stack, method: str, path: str, headers: dict[str, str], backend: str | None
) -> None:
    expect_backend(stack, "method.example", path, backend, method=method, headers=headers)


# --- precedence -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "headers", "backend", "why"),
    [
        ("GET", "/a", {}, V1, "only /a matches"),
        ("GET", "/a/x", {}, V1, "only /a matches"),
        ("GET", "/a/b", {}, V2, "the longer prefix /a/b (another route) wins"),
        ("GET", "/a/b/x", {}, V2, "the longer prefix /a/b wins"),
        ("GET", "/a/b/c", {}, V3, "Exact beats any prefix"),
        ("GET", "/a/b/c/d", {}, V2, "Exact /a/b/c does not cover /a/b/c/d"),
        ("POST", "/m", {"x": "1", "y": "1"}, V2, "a method match beats two header matches"),
        ("GET", "/m", {"x": "1", "y": "1"}, V1, "without POST only the header rule matches"),
        ("GET", "/h", {"x": "1", "y": "1"}, V3, "two header matches beat one"),
        ("GET", "/h", {"x": "1"}, V1, "one header match"),
        ("GET", "/h?q=1&r=1", {"x": "1"}, V1, "one header match beats two query param matches"),
        ("GET", "/h?q=1&r=1", {}, V2, "only the query rule matches"),
        ("GET", "/q?q=1&r=1", {}, V2, "two query param matches beat one"),
        ("GET", "/q?q=1", {}, V1, "one query param match"),
        ("GET", "/tie", {}, V2, "equal matches: the older route wins"),
        ("GET", "/alpha", {}, V1, "equal matches and age: precedence-c sorts before precedence-d"),
        ("GET", "/first", {}, V1, "equal matches in one route: the first rule wins"),
    ],
)
def test_precedence_across_rules_and_routes(
    stack: Stack, method: str, path: str, headers: dict[str, str], backend: str, why: str
) -> None:
    reply = stack.request("precedence.example", path, method=method, headers=headers)
    assert (reply.status, reply.backend) == (200, backend), f"{method} {path} {headers}: {why}; got {reply}"


# --- status ---------------------------------------------------------------------------------


@pytest.mark.parametrize("route", sorted(MAIN_ROUTES))
def test_every_route_is_accepted_with_resolved_refs(stack: Stack, route: str) -> None:
    conditions = stack.route_conditions(route, gateway=GW)
    assert conditions["Accepted"]["status"] == "True", conditions
    assert conditions["Accepted"]["reason"] == "Accepted"
    assert conditions["ResolvedRefs"]["status"] == "True", conditions
    assert conditions["ResolvedRefs"]["reason"] == "ResolvedRefs"


def test_listener_counts_every_attached_route(stack: Stack) -> None:
    assert stack.attached_routes(GW) == {"http": len(MAIN_ROUTES)}
