"""TLSRoute and TCPRoute → weighted upstream clusters for a TCP proxy."""

from __future__ import annotations

from meshxds import ir
from meshxds.model import gatewayapi
from meshxds.translators.backends import BackendIndex
from meshxds.translators.gatewayapi.httproutes import CompiledRoute, forward_action, resolved_refs_condition

__all__ = ["compile_tcp_route"]


def compile_tcp_route(
    route: gatewayapi.TLSRoute | gatewayapi.TCPRoute, *, backends: BackendIndex
) -> CompiledRoute:
    """The first rule's backendRefs (the spec allows one rule); more rules are reported."""
    out = CompiledRoute()
    bad_refs: list[tuple[str, str]] = []
    rule = route.spec.rules[0]
    if len(route.spec.rules) > 1:
        out.warnings.append(f"{route.ref}: spec.rules[1:]: only the first rule of a {route.KIND} is used")
    action = forward_action(
        rule.backend_refs,
        route=route,
        at=f"{route.ref}: spec.rules[0]",
        backends=backends,
        out=out,
        bad_refs=bad_refs,
        default_protocol=ir.UpstreamProtocol.TCP,
    )
    if isinstance(action, ir.ForwardAction):
        out.tcp_backends = action.backends
    out.resolved_refs = resolved_refs_condition(bad_refs, route.metadata.generation)
    return out
