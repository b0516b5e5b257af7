"""Attaching a route to a Gateway: the listeners its parentRef names that admit it (kind,
namespace, hostname), with the defaults a listener's kgateway TrafficPolicy gives its routes, and
its clusters joining the Gateway's."""

from __future__ import annotations

from meshxds import ir
from meshxds.conditions import Condition, condition
from meshxds.model import gatewayapi
from meshxds.translators.gatewayapi.context import AnyRoute, ListenerContext, Run
from meshxds.translators.gatewayapi.httproutes import CompiledRoute, with_listener_defaults
from meshxds.translators.hostnames import intersect_hostnames
from meshxds.translators.labels import labels_match

__all__ = ["attach"]


def attach(
    run: Run,
    route: AnyRoute,
    ref: gatewayapi.ParentReference,
    gw_key: tuple[str, str],
    compiled: CompiledRoute,
    clashes: list[str],
) -> Condition:
    """Attach ``route`` to the Gateway's listeners; a cluster of the route that differs from
    one the Gateway already has under its name joins ``clashes``."""
    generation = route.metadata.generation
    contexts = run.listeners.get(gw_key)
    if contexts is None:
        return condition(
            "Accepted",
            False,
            "NoMatchingParent",
            f"Gateway {gw_key[0]}/{gw_key[1]} not found",
            generation=generation,
        )
    candidates = [
        c
        for c in contexts
        if (ref.section_name is None or c.spec.name == ref.section_name)
        and (ref.port is None or c.spec.port == ref.port)
    ]
    if not candidates:
        return condition(
            "Accepted",
            False,
            "NoMatchingParent",
            "no listener matches the parentRef's sectionName/port",
            generation=generation,
        )
    allowed = [c for c in candidates if c.valid and _route_allowed(run, c, route.namespace, route.KIND)]
    if not allowed:
        return condition(
            "Accepted", False, "NotAllowedByListeners", "no listener admits this route", generation=generation
        )
    attached = False
    route_hostnames = _route_hostnames(route)
    for ctx in allowed:
        hostnames = tuple(intersect_hostnames(ctx.spec.hostname, route_hostnames))
        if not hostnames:
            continue
        attached = True
        ctx.attached += 1
        routes = compiled.routes
        if compiled.open_to_defaults and run.traffic:
            defaults = run.traffic.for_listener(ctx.gateway, ctx.spec.name)
            if defaults is not None:
                routes = with_listener_defaults(compiled, defaults, run.defaulted)
        ctx.routes.extend([(hostnames, sortable) for sortable in routes])
        if compiled.tcp_backends:
            ctx.tcp_routes.append((hostnames, compiled.tcp_backends))
        clusters = run.clusters[gw_key]
        for cluster in compiled.clusters:
            known = clusters.setdefault(cluster.name, cluster)
            # Protocol variants have names of their own (backends.py), so a clash left here is a
            # value only one of two routes can have (an undecided port as HTTP/1.1 and as TCP).
            if known is not cluster and known != cluster and cluster.name not in clashes:
                clashes.append(cluster.name)
                run.warnings.append(
                    f"{route.ref}: Gateway {gw_key[0]}/{gw_key[1]}: cluster {cluster.name} is defined "
                    f"twice, differently ({ir.describe_difference(known, cluster)}); the first is served"
                )
    if not attached:
        return condition(
            "Accepted",
            False,
            "NoMatchingListenerHostname",
            "no listener hostname intersects the route's hostnames",
            generation=generation,
        )
    return condition("Accepted", True, "Accepted", "attached to the Gateway", generation=generation)


def _route_allowed(run: Run, ctx: ListenerContext, route_namespace: str, route_kind: str) -> bool:
    if route_kind not in ctx.kinds:
        return False
    allowed = ctx.spec.allowed_routes.namespaces
    if allowed.from_ == "All":
        return True
    if allowed.from_ == "Same":
        return route_namespace == ctx.gateway.namespace
    return _selector_matches(allowed.selector, run.namespaces.get(route_namespace, {}))


def _selector_matches(selector: gatewayapi.LabelSelector | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    if not labels_match(labels, selector.match_labels):
        return False
    for expr in selector.match_expressions:
        present, value = expr.key in labels, labels.get(expr.key)
        if expr.operator == "In" and value not in expr.values:
            return False
        if expr.operator == "NotIn" and value in expr.values:
            return False
        if expr.operator == "Exists" and not present:
            return False
        if expr.operator == "DoesNotExist" and present:
            return False
    return True


def _route_hostnames(route: AnyRoute) -> list[str]:
    return [] if isinstance(route, gatewayapi.TCPRoute) else list(route.spec.hostnames)
