"""GRPCRoute rules → IR routes. A gRPC method is the HTTP/2 path ``/<service>/<method>``, so
method matches become path matches; backends always speak HTTP/2."""

from __future__ import annotations

import re

from meshxds import ir
from meshxds.model import gatewayapi
from meshxds.translators.backends import BackendIndex
from meshxds.translators.gatewayapi.httproutes import (
    CompiledRoute,
    OpenToDefaults,
    fail_closed,
    forward_action,
    header_matches,
    resolved_refs_condition,
    rule_filters,
)
from meshxds.translators.gatewayapi.precedence import SortableRoute, grpc_route_key
from meshxds.translators.regex import route_match_regex_problems

__all__ = ["compile_grpc_route", "grpc_path_match"]

_GRPC_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror")
_FORCE_HTTP2 = (ir.UpstreamProtocol.HTTP2, "GRPCRoute backends always speak HTTP/2")
_ANY_SEGMENT = "[^/]+"


def grpc_path_match(method: gatewayapi.GRPCMethodMatch | None) -> ir.PathMatch:
    """``/svc/Method`` exact; service only → prefix ``/svc/``; method only or regex → a regex."""
    if method is None or (not method.service and not method.method):
        return ir.PathMatch(kind="prefix", value="/")
    if method.type == "Exact":
        if method.service and method.method:
            return ir.PathMatch(kind="exact", value=f"/{method.service}/{method.method}")
        if method.service:
            return ir.PathMatch(kind="prefix", value=f"/{method.service}/")
        return ir.PathMatch(kind="regex", value=f"/{_ANY_SEGMENT}/{re.escape(method.method or '')}")
    service = method.service or _ANY_SEGMENT
    name = method.method or _ANY_SEGMENT
    return ir.PathMatch(kind="regex", value=f"/{service}/{name}")


def compile_grpc_route(route: gatewayapi.GRPCRoute, *, backends: BackendIndex) -> CompiledRoute:
    out = CompiledRoute()
    source = ir.ObjectRef(kind="GRPCRoute", namespace=route.namespace, name=route.name)
    bad_refs: list[tuple[str, str]] = []
    for r_index, rule in enumerate(route.spec.rules):
        at = f"{route.ref}: spec.rules[{r_index}]"
        filters = rule_filters(rule.filters, at=at, out=out, allowed=_GRPC_FILTERS)
        action: ir.ForwardAction | ir.DirectResponse
        if filters.invalid:
            action = fail_closed(filters, out)
        else:
            action = forward_action(
                rule.backend_refs,
                route=route,
                at=at,
                backends=backends,
                out=out,
                bad_refs=bad_refs,
                force_protocol=_FORCE_HTTP2,
                mirrors=filters.mirrors,
                grpc=True,
            )
            if isinstance(action, ir.ForwardAction):
                # A listener's TrafficPolicy retry reaches GRPCRoutes (kgateway sets it on the
                # virtual host); its timeouts do not (no Gateway API timeouts for GRPCRoute).
                out.open_to_defaults[r_index] = OpenToDefaults(retry=True, request=False, idle=False)
        for m_index, match in enumerate(rule.matches):
            route_match = ir.RouteMatch(
                path=grpc_path_match(match.method), headers=tuple(header_matches(match.headers))
            )
            problems = route_match_regex_problems(route_match)
            if problems:
                out.warnings.extend(f"{at}.matches[{m_index}]: {p}; this match is dropped" for p in problems)
                continue
            out.routes.append(
                SortableRoute(
                    key=grpc_route_key(route, match, r_index, m_index),
                    route=ir.Route(
                        name=f"grpcroute/{route.namespace}/{route.name}/rule/{r_index}/match/{m_index}",
                        match=route_match,
                        action=action,
                        request_headers=filters.request_headers,
                        response_headers=filters.response_headers,
                        source=source,
                    ),
                )
            )
    out.resolved_refs = resolved_refs_condition(bad_refs, route.metadata.generation)
    return out
