"""The routes phase: every route of every kind compiled once (one module per kind), attached to
the Gateways its parentRefs name (attach.py), its parents' status recorded."""

from __future__ import annotations

from typing import Any

from meshxds.conditions import ObjectStatus
from meshxds.model import gatewayapi
from meshxds.translators.gatewayapi.attach import attach
from meshxds.translators.gatewayapi.context import AnyRoute, Run
from meshxds.translators.gatewayapi.grpcroutes import compile_grpc_route
from meshxds.translators.gatewayapi.httproutes import CompiledRoute, compile_http_route
from meshxds.translators.gatewayapi.status import clash_condition, route_parent_status
from meshxds.translators.gatewayapi.tcproutes import compile_tcp_route
from meshxds.translators.unserved import unserved_condition

__all__ = ["process_routes"]


def _compile(route: AnyRoute, run: Run) -> CompiledRoute:
    """One module per route kind; each gives the listener-independent ``CompiledRoute``."""
    if isinstance(route, gatewayapi.GRPCRoute):
        return compile_grpc_route(route, backends=run.backends)
    if isinstance(route, gatewayapi.TLSRoute | gatewayapi.TCPRoute):
        return compile_tcp_route(route, backends=run.backends)
    return compile_http_route(route, backends=run.backends, traffic=run.traffic)


def _compiled(run: Run, route: AnyRoute) -> CompiledRoute:
    """The route compiled, or the last run's result for this very object."""
    if run.previous is not None:
        hit = run.previous.compiled.get(id(route))
        if hit is not None and hit[0] is route:
            run.memo.compiled[id(route)] = hit
            return hit[1]
    compiled = _compile(route, run)
    compiled.unserved = unserved_condition(route)
    run.memo.compiled[id(route)] = (route, compiled)
    return compiled


def process_routes(run: Run) -> None:
    """Every route attached to each of our Gateways its parentRefs name, with its status."""
    routes: list[AnyRoute] = [
        *run.resources.all(gatewayapi.HTTPRoute),
        *run.resources.all(gatewayapi.GRPCRoute),
        *run.resources.all(gatewayapi.TLSRoute),
        *run.resources.all(gatewayapi.TCPRoute),
    ]
    for route in routes:
        parents: list[dict[str, Any]] = []
        compiled: CompiledRoute | None = None
        for ref in route.spec.parent_refs:
            if ref.group != gatewayapi.GROUP or ref.kind != "Gateway":
                continue
            gw_key = (ref.namespace or route.namespace, ref.name)
            if gw_key not in run.listeners and run.resources.get(gatewayapi.Gateway, *gw_key) is not None:
                continue  # a Gateway of another controller: not ours to report on
            if not run.wanted(gw_key):
                continue  # a partial run (one proxy's config): another Gateway's business
            if compiled is None:
                compiled = _compiled(run, route)
                run.warnings.extend(compiled.warnings)
            clashes: list[str] = []
            accepted = attach(run, route, ref, gw_key, compiled, clashes)
            resolved = compiled.resolved_refs
            if clashes:
                resolved = clash_condition(route, clashes, resolved)
            parents.append(
                route_parent_status(
                    route,
                    ref,
                    gw_key[0],
                    controller_name=run.options.controller_name,
                    accepted=accepted,
                    resolved=resolved,
                    compiled=compiled,
                )
            )
        if parents:
            run.statuses.append(
                ObjectStatus(
                    kind=route.KIND, namespace=route.namespace, name=route.name, status={"parents": parents}
                )
            )
