"""Gateway API CORS filter → ``ir.Cors``; which routes take gRPC-Web (``ForwardAction.grpc_web``).

Origin regexes are checked with RE2 the way Envoy applies a ``safe_regex`` string matcher: a
full match of the whole ``Origin`` value.
"""

from __future__ import annotations

from typing import Any

import pytest
import re2

from meshxds import ir
from meshxds.model import gatewayapi
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.translators.cors import origin_matcher, translate_cors
from meshxds.translators.gatewayapi import translate_gateway_api


def matches(match: ir.StringMatch, origin: str) -> bool:
    """What Envoy's CORS filter decides for this matcher (it treats one matching ``*`` as any)."""
    if match.kind == "regex":
        return re2.fullmatch(match.value, origin) is not None
    assert match.kind == "exact"
    if match.value == "*":
        return True
    return origin.lower() == match.value.lower() if match.ignore_case else origin == match.value


@pytest.mark.parametrize(
    ("configured", "origin", "allowed"),
    [
        ("*", "https://anything.test:1234", True),
        ("https://www.foo.com", "https://www.foo.com", True),
        ("https://WWW.Foo.com", "https://www.foo.com", True),
        ("https://www.foo.com", "https://www.foo.com:8443", False),
        ("https://www.foo.com", "http://www.foo.com", False),
        ("https://*.bar.com", "https://www.bar.com", True),
        ("https://*.bar.com", "https://xpto.www.bar.com", True),  # '*' takes labels to its left
        ("https://*.bar.com", "https://bar.com", False),
        ("https://*.bar.com", "https://www.bar.com.evil.com", False),
        ("https://*.bar.com", "https://evil.com/.bar.com", False),
        ("https://*.bar.com", "https://evil.com#.bar.com", False),
        ("https://*.bar.com", "https://wwwxbar.com", False),  # the dot is literal
        ("https://*.bar.com", "http://www.bar.com", False),
        ("https://*.bar.com", "https://www.bar.com:8443", False),
        ("https://*.bar.com:8443", "https://www.bar.com:8443", True),
        ("http://*", "http://localhost", True),
        ("http://*", "http://a.b.c", True),
        ("http://*", "http://a.b.c:80", False),
        ("http://*:8080", "http://a.b:8080", True),
    ],
)
def test_origin_matching(configured: str, origin: str, allowed: bool) -> None:
    assert matches(origin_matcher(configured), origin) is allowed


def test_wildcard_origin_is_a_regex_and_the_rest_exact() -> None:
    assert origin_matcher("https://*.bar.com").kind == "regex"
    assert origin_matcher("https://www.foo.com") == ir.StringMatch(
        kind="exact", value="https://www.foo.com", ignore_case=True
    )


def test_translate_cors_keeps_the_lists_and_leaves_credentials_out_unless_true() -> None:
    cors = gatewayapi.HTTPCORSFilter.model_validate(
        {
            "allowOrigins": ["https://a.com"],
            "allowMethods": ["GET", "PUT"],
            "allowHeaders": ["x-a"],
            "exposeHeaders": ["x-b"],
            "allowCredentials": False,
        }
    )
    assert translate_cors(cors) == ir.Cors(
        allow_origins=(ir.StringMatch(kind="exact", value="https://a.com", ignore_case=True),),
        allow_methods=("GET", "PUT"),
        allow_headers=("x-a",),
        expose_headers=("x-b",),
        max_age_s=5.0,
        allow_credentials=None,
    )
    with_credentials = cors.model_copy(update={"allow_credentials": True})
    assert translate_cors(with_credentials).allow_credentials is True


# --- through the Gateway API translator -----------------------------------------------------------

GATEWAY: list[dict[str, Any]] = [
    {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "meshxds"},
        "spec": {"controllerName": "meshxds.io/gateway-controller"},
    },
    {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {
            "gatewayClassName": "meshxds",
            "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}],
        },
    },
]


def service(name: str, port: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [port]}}  # fmt: skip


def routes_of(*docs: dict[str, Any]) -> dict[str, ir.Route]:
    bodies = [*GATEWAY, *docs]
    resources = parse_documents(
        [SourcedDocument(path="t.yaml", index=i, body=b) for i, b in enumerate(bodies)]
    )
    result = translate_gateway_api(resources)
    config = result.gateways[("default", "gw")]
    (listener,) = config.listeners
    return {r.name: r for t in listener.route_tables for v in t.virtual_hosts for r in v.routes}


def http_route(kind: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": kind,
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": rules},
    }


def test_httproute_cors_filter_becomes_the_route_cors_policy() -> None:
    rule = {
        "filters": [
            {"type": "CORS", "cors": {"allowOrigins": ["https://*.bar.com"], "allowMethods": ["POST"]}}
        ],
        "backendRefs": [{"name": "web", "port": 80}],
    }
    routes = routes_of(service("web", {"name": "http", "port": 80}), http_route("HTTPRoute", [rule]))
    cors = routes["httproute/default/r/rule/0/match/0"].cors
    assert cors is not None
    assert cors.allow_methods == ("POST",)
    assert [m.kind for m in cors.allow_origins] == ["regex"]


@pytest.mark.parametrize(
    ("kind", "port", "grpc_web"),
    [
        ("HTTPRoute", {"name": "web", "port": 80, "appProtocol": "grpc-web"}, True),
        ("HTTPRoute", {"name": "grpc-echo", "port": 80}, True),
        ("HTTPRoute", {"name": "web", "port": 80, "appProtocol": "kubernetes.io/h2c"}, False),
        ("HTTPRoute", {"name": "http", "port": 80}, False),
        ("GRPCRoute", {"name": "http", "port": 80}, True),
    ],
    ids=["grpc-web-appprotocol", "grpc-port-name", "h2c-is-not-grpc", "http-port", "grpcroute"],
)
def test_routes_to_grpc_backends_take_grpc_web(kind: str, port: dict[str, Any], grpc_web: bool) -> None:
    rule = {"backendRefs": [{"name": "svc", "port": 80}]}
    (route,) = routes_of(service("svc", port), http_route(kind, [rule])).values()
    assert isinstance(route.action, ir.ForwardAction)
    assert route.action.grpc_web is grpc_web


def test_a_grpc_backend_with_weight_zero_does_not_make_the_route_grpc_web() -> None:
    rule = {"backendRefs": [{"name": "web", "port": 80}, {"name": "grpc", "port": 80, "weight": 0}]}
    routes = routes_of(
        service("web", {"name": "http", "port": 80}),
        service("grpc", {"name": "grpc", "port": 80}),
        http_route("HTTPRoute", [rule]),
    )
    (route,) = routes.values()
    assert isinstance(route.action, ir.ForwardAction)
    assert route.action.grpc_web is False
