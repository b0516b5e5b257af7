"""Route precedence (``precedence.py``): the spec's order of matches, and of routes attached
through different hostnames of one listener."""

from __future__ import annotations

from meshxds import ir
from meshxds.model import gatewayapi
from meshxds.translators.gatewayapi.precedence import (
    SortableRoute,
    grpc_route_key,
    http_route_key,
    rank_hosts,
)


def _http(name: str, path_type: str, path: str, *, age: str = "2024-01-01T00:00:00Z") -> SortableRoute:
    match = gatewayapi.HTTPRouteMatch.model_validate({"path": {"type": path_type, "value": path}})
    key = http_route_key(match, age, "default", name, 0, 0)
    return SortableRoute(key=key, route=_route(name))


def _grpc(name: str, method: dict[str, str]) -> SortableRoute:
    route = gatewayapi.GRPCRoute.model_validate(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {},
        }
    )
    match = gatewayapi.GRPCRouteMatch.model_validate({"method": method})
    return SortableRoute(key=grpc_route_key(route, match, 0, 0), route=_route(name))


def _route(name: str) -> ir.Route:
    return ir.Route(
        name=name,
        match=ir.RouteMatch(path=ir.PathMatch(kind="prefix", value="/")),
        action=ir.DirectResponse(status=200),
    )


def _bucket(*routes: SortableRoute) -> dict[int, SortableRoute]:
    return {id(s): s for s in routes}


def _names(table: list[SortableRoute]) -> list[str]:
    return [s.route.name for s in table]


def test_exact_path_then_longer_prefix_then_older_route() -> None:
    root = _http("root", "PathPrefix", "/")
    api_new = _http("api-new", "PathPrefix", "/api", age="2024-06-01T00:00:00Z")
    api_old = _http("api-old", "PathPrefix", "/api")
    exact = _http("exact", "Exact", "/")
    table = rank_hosts({"a.example.com": _bucket(root, api_new, api_old, exact)})
    assert _names(table["a.example.com"]) == ["exact", "api-old", "api-new", "root"]


def test_a_longer_prefix_on_a_wildcard_beats_root_on_the_exact_host() -> None:
    exact_host_root = _http("exact-host-root", "PathPrefix", "/")
    wildcard_api = _http("wildcard-api", "PathPrefix", "/api")
    table = rank_hosts({"a.example.com": _bucket(exact_host_root), "*.example.com": _bucket(wildcard_api)})
    assert _names(table["a.example.com"]) == ["wildcard-api", "exact-host-root"]
    assert _names(table["*.example.com"]) == ["wildcard-api"]


def test_equal_matches_rank_the_more_specific_hostname_first() -> None:
    on_wildcard = _http("on-wildcard", "PathPrefix", "/", age="2020-01-01T00:00:00Z")
    on_host = _http("on-host", "PathPrefix", "/")
    table = rank_hosts({"*.example.com": _bucket(on_wildcard), "a.example.com": _bucket(on_host)})
    assert _names(table["a.example.com"]) == ["on-host", "on-wildcard"]


def test_grpc_and_http_keys_share_one_order() -> None:
    method = _grpc("grpc-method", {"service": "echo.Echo", "method": "Ping"})
    service = _grpc("grpc-service", {"service": "echo.Echo"})
    prefix = _http("http-prefix", "PathPrefix", "/x")
    exact = _http("http-exact", "Exact", "/echo.Echo/Ping/longer")
    table = rank_hosts({"h": _bucket(service, prefix, method, exact)})
    # An exact gRPC method ranks with exact paths, any other gRPC match with path prefixes; in
    # one rank the second field (the path's length, the service's) decides.
    assert _names(table["h"]) == ["http-exact", "grpc-method", "grpc-service", "http-prefix"]
