"""HTTPRoute hostnames against real Envoy, as the Gateway API conformance tests expect them: route
wildcards (``*.wildcard.io`` covers ``foo.wildcard.io`` and ``a.b.wildcard.io``, never
``wildcard.io``), exact beats wildcard, a port in the Host header is ignored, and route hostnames
intersected with listener hostnames (conformance ``HTTPRouteHostnameIntersection`` and
``HTTPRouteListenerHostnameMatching``), with route status and listener ``attachedRoutes``.

One module-scoped stack: ``meshxds serve`` + one SotW Envoy per Gateway: ``same-namespace`` (one
listener without hostname) and ``httproute-hostname-intersection`` (seven hostname listeners on one
port).
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
HGW = "httproute-hostname-intersection"
V1, V2, V3 = "infra-backend-v1", "infra-backend-v2", "infra-backend-v3"

# Route hostnames: a wildcard covers one or more labels, never the bare suffix; exact beats wildcard.
WILDCARDS = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: wildcard, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: ["*.wildcard.io"]
  rules:
  - backendRefs: [{{name: {V1}, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: wildcard-exact, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [exact.wildcard.io]
  rules:
  - backendRefs: [{{name: {V2}, port: 8080}}]
"""


def _hostname_gateway(port: int) -> str:
    # conformance/tests/httproute-hostname-intersection.yaml's listeners plus
    # conformance/tests/httproute-listener-hostname-matching.yaml's, all on one port.
    listeners = [
        {"name": "listener-1", "port": port, "hostname": "very.specific.com"},
        {"name": "listener-2", "port": port, "hostname": "*.wildcard.io"},
        {"name": "listener-3", "port": port, "hostname": "*.anotherwildcard.io"},
        {"name": "bar", "port": port, "hostname": "bar.com"},
        {"name": "foo-bar", "port": port, "hostname": "foo.bar.com"},
        {"name": "wild-bar", "port": port, "hostname": "*.bar.com"},
        {"name": "wild-foo", "port": port, "hostname": "*.foo.com"},
    ]
    return gateway_yaml(HGW, listeners)


def _hostname_route(name: str, hostnames: list[str], prefix: str, backend: str) -> str:
    quoted = ", ".join(f'"{h}"' for h in hostnames)
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {HGW}, namespace: {NS}}}]
  hostnames: [{quoted}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    backendRefs: [{{name: {backend}, port: 8080}}]
"""


def _section_route(name: str, sections: list[str], backend: str) -> str:
    refs = ", ".join(f"{{name: {HGW}, sectionName: {s}}}" for s in sections)
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{refs}]
  rules:
  - backendRefs: [{{name: {backend}, port: 8080}}]
"""


HOSTNAME_ROUTES = join(
    _hostname_route(
        "specific-host-matches-listener-specific-host",
        ["non.matching.com", "*.nonmatchingwildcard.io", "very.specific.com"],
        "/s1",
        V1,
    ),
    _hostname_route(
        "specific-host-matches-listener-wildcard-host",
        ["non.matching.com", "wildcard.io", "foo.wildcard.io", "bar.wildcard.io", "foo.bar.wildcard.io"],
        "/s2",
        V2,
    ),
    _hostname_route(
        "wildcard-host-matches-listener-specific-host", ["non.matching.com", "*.specific.com"], "/s3", V3
    ),
    _hostname_route("wildcard-host-matches-listener-wildcard-host", ["*.anotherwildcard.io"], "/s4", V1),
    _hostname_route("no-intersecting-hosts", ["specific.but.wrong.com", "wildcard.io"], "/s5", V2),
    _section_route("backend-v1", ["bar"], V1),
    _section_route("backend-v2", ["foo-bar"], V2),
    _section_route("backend-v3", ["wild-bar", "wild-foo"], V3),
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port, hport = free_port(), free_port()
    with (
        Http1OnlyServer(name=V1) as v1,
        Http1OnlyServer(name=V2) as v2,
        Http1OnlyServer(name=V3) as v3,
    ):
        files = {
            "gateways.yaml": join(
                GATEWAY_CLASS, gateway_yaml(GW, [{"name": "http", "port": port}]), _hostname_gateway(hport)
            ),
            "backends.yaml": join(*(service_yaml(up.name, up.port) for up in (v1, v2, v3))),
            "wildcards.yaml": WILDCARDS,
            "hostnames.yaml": HOSTNAME_ROUTES,
        }
        with run_stack(
            tmp_path_factory.mktemp("httproute-hostnames"),
            files,
            gateways={GW: port, HGW: hport},
            probes=[(GW, "foo.wildcard.io", "/"), (HGW, "bar.com", "/")],
        ) as running:
            yield running


# --- route hostnames on a listener without hostname -----------------------------------------


@pytest.mark.parametrize(
    ("host", "backend"),
    [
        ("foo.wildcard.io", V1),
        ("a.b.wildcard.io", V1),
        ("wildcard.io", None),  # the bare suffix is not covered
        ("foowildcard.io", None),
        ("exact.wildcard.io", V2),  # an exact hostname beats the wildcard
        ("EXACT.Wildcard.IO", V2),  # hostnames are case-insensitive
        ("foo.wildcard.io:1234", V1),  # a port in the Host header is not part of the match
        ("exact.wildcard.io:80", V2),
    ],
)
def test_route_hostnames(stack: Stack, host: str, backend: str | None) -> None:
    expect_backend(stack, host, "/", backend)


def test_host_header_with_the_listener_port_matches(stack: Stack) -> None:
    expect_backend(stack, f"foo.wildcard.io:{stack.ports[GW]}", "/", V1)
    expect_backend(stack, f"exact.wildcard.io:{stack.ports[GW]}", "/any/path", V2)


@pytest.mark.parametrize(
    ("host", "path", "backend"),
    [
        # specific-host-matches-listener-specific-host
        ("very.specific.com", "/s1", V1),
        ("very.specific.com:1234", "/s1", V1),
        ("non.matching.com", "/s1", None),
        ("foo.nonmatchingwildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s1", None),
        ("very.specific.com", "/non-matching-prefix", None),
        # specific-host-matches-listener-wildcard-host
        ("foo.wildcard.io", "/s2", V2),
        ("bar.wildcard.io", "/s2", V2),
        ("foo.bar.wildcard.io", "/s2", V2),
        ("non.matching.com", "/s2", None),
        ("wildcard.io", "/s2", None),
        ("very.specific.com", "/s2", None),
        ("foo.wildcard.io", "/non-matching-prefix", None),
        # wildcard-host-matches-listener-specific-host
        ("very.specific.com", "/s3", V3),
        ("non.matching.com", "/s3", None),
        ("foo.specific.com", "/s3", None),
        ("foo.wildcard.io", "/s3", None),
        ("very.specific.com", "/non-matching-prefix", None),
        # wildcard-host-matches-listener-wildcard-host
        ("foo.anotherwildcard.io", "/s4", V1),
        ("bar.anotherwildcard.io", "/s4", V1),
        ("foo.bar.anotherwildcard.io", "/s4", V1),
        ("anotherwildcard.io", "/s4", None),
        ("foo.wildcard.io", "/s4", None),
        ("very.specific.com", "/s4", None),
        ("foo.anotherwildcard.io", "/non-matching-prefix", None),
        # no-intersecting-hosts
        ("specific.but.wrong.com", "/s5", None),
        ("wildcard.io", "/s5", None),
    ],
)
def test_httproute_hostname_intersection(stack: Stack, host: str, path: str, backend: str | None) -> None:
    expect_backend(stack, host, path, backend, gateway=HGW)


@pytest.mark.parametrize(
    ("host", "backend"),
    [
        ("bar.com", V1),
        ("foo.bar.com", V2),  # the exact listener, not *.bar.com
        ("baz.bar.com", V3),
        ("boo.bar.com", V3),
        ("multiple.prefixes.bar.com", V3),
        ("multiple.prefixes.foo.com", V3),
        ("foo.com", None),
        ("no.matching.host", None),
    ],
)
def test_httproute_listener_hostname_matching(stack: Stack, host: str, backend: str | None) -> None:
    expect_backend(stack, host, "/", backend, gateway=HGW)


# --- status ---------------------------------------------------------------------------------


def test_wildcard_routes_status(stack: Stack) -> None:
    for route in ("wildcard", "wildcard-exact"):
        conditions = stack.route_conditions(route, gateway=GW)
        assert conditions["Accepted"]["status"] == "True", (route, conditions)
        assert conditions["ResolvedRefs"]["status"] == "True", (route, conditions)
    assert stack.attached_routes(GW) == {"http": 2}


def test_hostname_intersection_status(stack: Stack) -> None:
    for route, section in (
        ("specific-host-matches-listener-specific-host", None),
        ("specific-host-matches-listener-wildcard-host", None),
        ("wildcard-host-matches-listener-specific-host", None),
        ("wildcard-host-matches-listener-wildcard-host", None),
        ("backend-v1", "bar"),
        ("backend-v2", "foo-bar"),
        ("backend-v3", "wild-bar"),
        ("backend-v3", "wild-foo"),
    ):
        conditions = stack.route_conditions(route, gateway=HGW, section=section)
        assert conditions["Accepted"]["status"] == "True", (route, conditions)
        assert conditions["ResolvedRefs"]["status"] == "True", (route, conditions)
    refused = stack.route_conditions("no-intersecting-hosts", gateway=HGW)
    assert refused["Accepted"]["status"] == "False", refused
    assert refused["Accepted"]["reason"] == "NoMatchingListenerHostname"
    # Only accepted routes count (conformance: "AttachedRoutes only if they are Accepted").
    assert stack.attached_routes(HGW) == {
        "listener-1": 2,
        "listener-2": 1,
        "listener-3": 1,
        "bar": 1,
        "foo-bar": 1,
        "wild-bar": 1,
        "wild-foo": 1,
    }
