"""Gateway API → IR.

``translate_gateway_api`` runs in phases, like Envoy Gateway's translator: index the inputs,
accept Gateways of our class and their listeners, attach each HTTPRoute to the listeners its
parentRefs name and admit, turn its rules into IR routes with resolved backends, then assemble
one ``ProxyConfig`` per Gateway and the status of every object read. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from meshxds import ir, names
from meshxds.conditions import Condition, ObjectStatus, condition, merge_conditions
from meshxds.model import core, gatewayapi
from meshxds.model.manifests import ResourceSet
from meshxds.options import GATEWAY_NAME_LABEL, TranslateOptions
from meshxds.translators.backends import BackendIndex
from meshxds.translators.certificates import resolve_certificate_ref
from meshxds.translators.endpoints import EndpointIndex
from meshxds.translators.gatewayapi import httproutes
from meshxds.translators.gatewayapi.grpcroutes import compile_grpc_route
from meshxds.translators.gatewayapi.precedence import SortableRoute, more_specific_hostname, rank_hosts
from meshxds.translators.gatewayapi.tcproutes import compile_tcp_route
from meshxds.translators.hostnames import HostnamePatterns, intersect_hostnames
from meshxds.translators.kgateway import ListenerPolicies, listener_policies
from meshxds.translators.listeners import HttpServer, TcpServer, assemble_http_listener, assemble_tcp_listener

__all__ = [
    "GatewayAPIMemo",
    "GatewayAPIResult",
    "translate_gateway_api",
]

# Listener protocol → route kinds it can carry (the spec's defaults for allowedRoutes.kinds).
_ROUTE_KINDS_BY_PROTOCOL: dict[str, tuple[str, ...]] = {
    "HTTP": ("HTTPRoute", "GRPCRoute"),
    "HTTPS": ("HTTPRoute", "GRPCRoute"),
    "TLS": ("TLSRoute",),
    "TCP": ("TCPRoute",),
}
# A TLS listener that terminates can hand the decrypted stream to a TCPRoute too.
_TLS_TERMINATE_KINDS = ("TLSRoute", "TCPRoute")
_HTTP_PROTOCOLS = ("HTTP", "HTTPS")


@dataclass(slots=True)
class GatewayAPIMemo:
    """What one run hands the next when none of the objects routes compile from changed
    (Envoy Gateway re-translates only what changed): each route's compiled result, by object
    identity, and each Gateway's config with the inputs it was assembled from."""

    compiled: dict[int, tuple[object, httproutes.CompiledRoute]] = field(default_factory=dict)
    configs: dict[tuple[str, str], tuple[tuple[object, ...], ir.ProxyConfig, tuple[str, ...]]] = field(
        default_factory=dict
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayAPIResult:
    gateways: dict[tuple[str, str], ir.ProxyConfig]
    """``(namespace, name)`` of each Gateway we serve → its proxies' config."""
    statuses: tuple[ObjectStatus, ...]
    warnings: tuple[str, ...]
    memo: GatewayAPIMemo = field(default_factory=GatewayAPIMemo, compare=False, repr=False)


@dataclass(slots=True)
class _ListenerContext:
    gateway: gatewayapi.Gateway
    spec: gatewayapi.GatewayListener
    kinds: tuple[str, ...]
    conditions: list[Condition] = field(default_factory=list)
    attached: int = 0
    routes: list[tuple[tuple[str, ...], SortableRoute]] = field(default_factory=list)
    tcp_routes: list[tuple[tuple[str, ...], tuple[ir.WeightedCluster, ...]]] = field(default_factory=list)
    tls: ir.DownstreamTls | None = None

    @property
    def valid(self) -> bool:
        return all(c.status for c in self.conditions if c.type in ("Accepted", "ResolvedRefs"))


@dataclass(slots=True)
class _Run:
    """State of one translation run: indexes in, contexts and warnings out."""

    resources: ResourceSet
    options: TranslateOptions
    backends: BackendIndex
    namespaces: dict[str, dict[str, str]]
    listeners: dict[tuple[str, str], list[_ListenerContext]] = field(default_factory=dict)
    statuses: list[ObjectStatus] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    clusters: dict[tuple[str, str], dict[str, ir.Cluster]] = field(default_factory=lambda: defaultdict(dict))
    secrets: dict[tuple[str, str], dict[str, ir.TlsSecret]] = field(default_factory=lambda: defaultdict(dict))
    previous: GatewayAPIMemo | None = None
    """The last run's memo, when what routes compile from is unchanged since."""
    memo: GatewayAPIMemo = field(default_factory=GatewayAPIMemo)


def _namespace_labels(resources: ResourceSet) -> dict[str, dict[str, str]]:
    labels = {
        ns.name: {"kubernetes.io/metadata.name": ns.name, **ns.metadata.labels}
        for ns in resources.all(core.Namespace)
    }
    return labels


def _selector_matches(selector: gatewayapi.LabelSelector | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in selector.match_labels.items()):
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


def _process_gateway_classes(run: _Run) -> set[str]:
    ours: set[str] = set()
    for gc in run.resources.all(gatewayapi.GatewayClass):
        if gc.spec.controller_name != run.options.controller_name:
            continue
        ours.add(gc.name)
        accepted = condition(
            "Accepted", True, "Accepted", "handled by meshxds", generation=gc.metadata.generation
        )
        run.statuses.append(
            ObjectStatus(
                kind="GatewayClass", namespace="", name=gc.name, status={"conditions": [accepted.as_dict()]}
            )
        )
    return ours


def _process_gateways(run: _Run, classes: set[str]) -> list[gatewayapi.Gateway]:
    gateways = [g for g in run.resources.all(gatewayapi.Gateway) if g.spec.gateway_class_name in classes]
    for gw in gateways:
        contexts: list[_ListenerContext] = []
        generation = gw.metadata.generation
        seen_names: set[str] = set()
        for listener in gw.spec.listeners:
            ctx = _ListenerContext(gateway=gw, spec=listener, kinds=())
            supported = _ROUTE_KINDS_BY_PROTOCOL.get(listener.protocol)
            if listener.name in seen_names:
                ctx.conditions.append(
                    condition(
                        "Accepted",
                        False,
                        "Invalid",
                        f"listener name {listener.name} is used twice",
                        generation=generation,
                    )
                )
            seen_names.add(listener.name)
            if supported is None:
                ctx.conditions.append(
                    condition(
                        "Accepted",
                        False,
                        "UnsupportedProtocol",
                        f"protocol {listener.protocol} is not supported by meshxds yet",
                        generation=generation,
                    )
                )
                run.warnings.append(
                    f"{gw.ref}: listener {listener.name}: protocol {listener.protocol} is not supported"
                )
            else:
                if (
                    listener.protocol == "TLS"
                    and listener.tls is not None
                    and listener.tls.mode == "Terminate"
                ):
                    supported = _TLS_TERMINATE_KINDS
                if listener.protocol in ("HTTPS", "TLS"):
                    _resolve_listener_tls(run, gw, ctx)
                requested = listener.allowed_routes.kinds
                if requested:
                    ok = tuple(
                        k.kind for k in requested if k.group == gatewayapi.GROUP and k.kind in supported
                    )
                    if len(ok) != len(requested):
                        ctx.conditions.append(
                            condition(
                                "ResolvedRefs",
                                False,
                                "InvalidRouteKinds",
                                "some allowedRoutes.kinds are not supported",
                                generation=generation,
                            )
                        )
                    ctx.kinds = ok
                else:
                    ctx.kinds = supported
            contexts.append(ctx)
        _detect_port_conflicts(contexts, generation)
        run.listeners[gw.key] = contexts
    return gateways


def _resolve_listener_tls(run: _Run, gw: gatewayapi.Gateway, ctx: _ListenerContext) -> None:
    """HTTPS and TLS-Terminate listeners: certificateRefs → SDS secrets (conditions on failure)."""
    generation = gw.metadata.generation
    tls = ctx.spec.tls
    if tls is None:
        ctx.conditions.append(
            condition(
                "Accepted",
                False,
                "Invalid",
                f"a {ctx.spec.protocol} listener needs tls",
                generation=generation,
            )
        )
        return
    if tls.mode == "Passthrough":
        if ctx.spec.protocol == "HTTPS":
            ctx.conditions.append(
                condition(
                    "Accepted",
                    False,
                    "Invalid",
                    "HTTPS listeners cannot pass TLS through",
                    generation=generation,
                )
            )
        return
    if gw.spec.tls is not None and gw.spec.tls.frontend is not None:
        # Security settings fail closed: serving this listener without the client-certificate
        # validation it asks for would admit every client.
        ctx.conditions.append(
            condition(
                "Accepted",
                False,
                "UnsupportedValue",
                "spec.tls.frontend (client certificate validation) is not supported by meshxds yet; "
                "the listener is not programmed rather than served without it",
                generation=generation,
            )
        )
        return
    if not tls.certificate_refs:
        ctx.conditions.append(
            condition(
                "ResolvedRefs",
                False,
                "InvalidCertificateRef",
                "tls.certificateRefs is empty",
                generation=generation,
            )
        )
        return
    names_: list[str] = []
    for index, ref in enumerate(tls.certificate_refs):
        found = resolve_certificate_ref(
            run.resources,
            run.backends,
            ref,
            gateway=gw,
            at=f"spec.listeners[{ctx.spec.name}].tls.certificateRefs[{index}]",
        )
        if isinstance(found, str):
            ctx.conditions.append(
                condition("ResolvedRefs", False, _certificate_reason(found), found, generation=generation)
            )
            continue
        run.secrets[gw.key][found.name] = found
        names_.append(found.name)
    if names_ and len(names_) == len(tls.certificate_refs):
        ctx.tls = ir.DownstreamTls(certificates=tuple(names_))


def _certificate_reason(message: str) -> str:
    return "RefNotPermitted" if "ReferenceGrant" in message else "InvalidCertificateRef"


def _detect_port_conflicts(contexts: list[_ListenerContext], generation: int) -> None:
    by_port: dict[int, list[_ListenerContext]] = defaultdict(list)
    for ctx in contexts:
        by_port[ctx.spec.port].append(ctx)
    for group in by_port.values():
        protocols = {c.spec.protocol for c in group}
        hostnames = [c.spec.hostname or "" for c in group]
        if len(protocols) > 1:
            reason, msg = "ProtocolConflict", "listeners on one port must share a protocol"
        elif len(set(hostnames)) != len(hostnames):
            reason, msg = "HostnameConflict", "listeners on one port must have distinct hostnames"
        else:
            continue
        for ctx in group:
            ctx.conditions.append(condition("Conflicted", True, reason, msg, generation=generation))
            ctx.conditions.append(condition("Accepted", False, reason, msg, generation=generation))


def _route_allowed(run: _Run, ctx: _ListenerContext, route_namespace: str, route_kind: str) -> bool:
    if route_kind not in ctx.kinds:
        return False
    allowed = ctx.spec.allowed_routes.namespaces
    if allowed.from_ == "All":
        return True
    if allowed.from_ == "Same":
        return route_namespace == ctx.gateway.namespace
    return _selector_matches(allowed.selector, run.namespaces.get(route_namespace, {}))


_Route = gatewayapi.HTTPRoute | gatewayapi.GRPCRoute | gatewayapi.TLSRoute | gatewayapi.TCPRoute


def _compile(route: _Route, backends: BackendIndex) -> httproutes.CompiledRoute:
    if isinstance(route, gatewayapi.GRPCRoute):
        return compile_grpc_route(route, backends=backends)
    if isinstance(route, gatewayapi.TLSRoute | gatewayapi.TCPRoute):
        return compile_tcp_route(route, backends=backends)
    return httproutes.compile_http_route(route, backends=backends)


def _compiled(run: _Run, route: _Route) -> httproutes.CompiledRoute:
    """The route compiled, or the last run's result for this very object."""
    if run.previous is not None:
        hit = run.previous.compiled.get(id(route))
        if hit is not None and hit[0] is route:
            run.memo.compiled[id(route)] = hit
            return hit[1]
    compiled = _compile(route, run.backends)
    run.memo.compiled[id(route)] = (route, compiled)
    return compiled


def _route_hostnames(route: _Route) -> list[str]:
    return [] if isinstance(route, gatewayapi.TCPRoute) else list(route.spec.hostnames)


def _process_routes(run: _Run) -> None:
    routes: list[_Route] = [
        *run.resources.all(gatewayapi.HTTPRoute),
        *run.resources.all(gatewayapi.GRPCRoute),
        *run.resources.all(gatewayapi.TLSRoute),
        *run.resources.all(gatewayapi.TCPRoute),
    ]
    for route in routes:
        parents: list[dict[str, Any]] = []
        compiled: httproutes.CompiledRoute | None = None
        for ref in route.spec.parent_refs:
            if ref.group != gatewayapi.GROUP or ref.kind != "Gateway":
                continue
            gw_key = (ref.namespace or route.namespace, ref.name)
            if gw_key not in run.listeners and run.resources.get(gatewayapi.Gateway, *gw_key) is not None:
                continue  # a Gateway of another controller: not ours to report on
            if compiled is None:
                compiled = _compiled(run, route)
                run.warnings.extend(compiled.warnings)
            clashes: list[str] = []
            accepted = _attach(run, route, ref, gw_key, compiled, clashes)
            resolved = compiled.resolved_refs
            if clashes:
                resolved = _clash_condition(route, clashes, resolved)
            parent_ref: dict[str, Any] = {
                "group": ref.group,
                "kind": ref.kind,
                "namespace": gw_key[0],
                "name": ref.name,
            }
            if ref.section_name:
                parent_ref["sectionName"] = ref.section_name
            if ref.port:
                parent_ref["port"] = ref.port
            parents.append(
                {
                    "parentRef": parent_ref,
                    "controllerName": run.options.controller_name,
                    # Accepted, ResolvedRefs (and PartiallyInvalid): distinct types, nothing to merge.
                    "conditions": [
                        accepted.as_dict(),
                        resolved.as_dict(),
                        *_partially_invalid(route, compiled),
                    ],
                }
            )
        if parents:
            run.statuses.append(
                ObjectStatus(
                    kind=route.KIND, namespace=route.namespace, name=route.name, status={"parents": parents}
                )
            )


def _partially_invalid(route: _Route, compiled: httproutes.CompiledRoute) -> list[dict[str, Any]]:
    """GEP-1364's condition for a route some of whose rules fail closed (their filter cannot be
    applied, so they answer 500): the rest of the route is served."""
    if not compiled.invalid:
        return []
    message = "; ".join(compiled.invalid) + "; those rules answer 500"
    found = condition(
        "PartiallyInvalid", True, "UnsupportedValue", message, generation=route.metadata.generation
    )
    return [found.as_dict()]


def _attach(
    run: _Run,
    route: _Route,
    ref: gatewayapi.ParentReference,
    gw_key: tuple[str, str],
    compiled: httproutes.CompiledRoute,
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
        ctx.routes.extend([(hostnames, sortable) for sortable in compiled.routes])
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


def _clash_condition(route: _Route, clashes: list[str], resolved: Condition) -> Condition:
    """ResolvedRefs=False for a route whose backend cluster another route defined differently."""
    message = (
        f"cluster {', '.join(clashes)} is already defined differently by another route to the "
        "same backend port; that definition is served"
    )
    reason = "BackendConflict"
    if not resolved.status:  # the earlier problem keeps its reason
        reason, message = resolved.reason, f"{resolved.message.rstrip('.')}; {message}"
    return condition("ResolvedRefs", False, reason, message, generation=route.metadata.generation)


def _redirect_port(route: ir.Route, hostname: str, listener_port: int) -> ir.Route:
    """The spec's redirect port when the filter names none: the listener's port, or, with a new
    scheme, that scheme's well-known port (left out of Location). Envoy keeps the request's port
    unless told otherwise, and drops it only when it rewrites the host, hence the host below."""
    action = route.action
    if not isinstance(action, ir.Redirect) or action.port is not None:
        return route
    if action.scheme is None:
        return replace(route, action=replace(action, port=listener_port))
    if action.host is not None:
        return route  # host_redirect without a port: Envoy leaves the port out
    if "*" not in hostname:
        return replace(route, action=replace(action, host=hostname))
    return replace(route, action=replace(action, port=443 if action.scheme == "https" else 80))


def _http_server(ctx: _ListenerContext, port_listeners: list[_ListenerContext]) -> HttpServer:
    # A request belongs to the most specific listener of its port whose hostname matches it: a
    # hostname another, more specific listener covers is not served by this one.
    claimed = HostnamePatterns(
        other.spec.hostname
        for other in port_listeners
        if other is not ctx
        and other.spec.hostname
        and more_specific_hostname(other.spec.hostname, ctx.spec.hostname)
    )
    # Keyed by identity: a route is compiled once, so the same rule reaching this listener twice
    # (two parentRefs) is the same object; a dict keeps first-seen order.
    hosts: dict[str, dict[int, SortableRoute]] = {}
    covers = claimed.covers if claimed else None
    for hostnames, sortable in ctx.routes:
        for hostname in hostnames:
            if covers is not None and covers(hostname):
                continue
            bucket = hosts.get(hostname)
            if bucket is None:
                hosts[hostname] = {id(sortable): sortable}
            else:
                bucket.setdefault(id(sortable), sortable)
    merged = rank_hosts(hosts)
    port = ctx.spec.port
    if any(isinstance(s.route.action, ir.Redirect) for _, s in ctx.routes):
        routes = tuple(
            (hostname, tuple(_redirect_port(s.route, hostname, port) for s in bucket))
            for hostname, bucket in merged.items()
        )
    else:
        routes = tuple((hostname, tuple([s.route for s in bucket])) for hostname, bucket in merged.items())
    return HttpServer(hostnames=(ctx.spec.hostname or "*",), routes=routes, tls=ctx.tls)


def _tcp_servers(run: _Run, ctx: _ListenerContext) -> list[TcpServer]:
    by_names: dict[tuple[str, ...], tuple[ir.WeightedCluster, ...]] = {}
    for hostnames, backends in ctx.tcp_routes:
        server_names = () if hostnames == ("*",) else hostnames
        if server_names in by_names:
            run.warnings.append(
                f"{ctx.gateway.ref}: listener {ctx.spec.name}: several routes claim "
                f"{', '.join(server_names) or 'every connection'}; the first one wins"
            )
            continue
        by_names[server_names] = backends
    return [TcpServer(server_names=n, backends=b, tls=ctx.tls) for n, b in by_names.items()]


def _build_proxy_config(run: _Run, gw: gatewayapi.Gateway) -> ir.ProxyConfig:
    """The Gateway's config; the last run's when it was assembled from the same inputs (the
    same objects, mostly: reused compiled routes make the comparison an identity check)."""
    policies = listener_policies(run.resources, gw)
    run.warnings.extend(policies.warnings)
    inputs = (
        gw,
        run.options,
        policies,
        tuple(
            (c.spec, c.kinds, c.valid, c.tls, tuple(c.routes), tuple(c.tcp_routes))
            for c in run.listeners[gw.key]
        ),
        tuple(sorted(run.clusters.get(gw.key, {}).items())),
        tuple(sorted(run.secrets.get(gw.key, {}).items())),
    )
    if run.previous is not None:
        hit = run.previous.configs.get(gw.key)
        if hit is not None and hit[0] == inputs:
            run.memo.configs[gw.key] = hit
            run.warnings.extend(hit[2])
            return hit[1]
    mark = len(run.warnings)
    config = _assemble_proxy_config(run, gw, policies)
    run.memo.configs[gw.key] = (inputs, config, tuple(run.warnings[mark:]))
    return config


def _assemble_proxy_config(run: _Run, gw: gatewayapi.Gateway, policies: ListenerPolicies) -> ir.ProxyConfig:
    by_port: dict[int, list[_ListenerContext]] = defaultdict(list)
    for ctx in run.listeners[gw.key]:
        if ctx.valid and ctx.kinds:
            by_port[ctx.spec.port].append(ctx)
    listeners: list[ir.Listener] = []
    for port in sorted(by_port):
        contexts = sorted(by_port[port], key=lambda c: c.spec.name)
        name = names.listener_name(port, bind=run.options.listener_address)
        common = {
            "name": name,
            "address": run.options.listener_address,
            "port": port,
            "access_logs": policies.for_listeners([c.spec.name for c in contexts]),
            "sources": tuple(
                ir.ObjectRef(kind="Gateway", namespace=gw.namespace, name=gw.name, section=c.spec.name)
                for c in contexts
            ),
        }
        if contexts[0].spec.protocol in _HTTP_PROTOCOLS:
            http_servers = [_http_server(c, contexts) for c in contexts]
            listeners.append(assemble_http_listener(servers=http_servers, **common))  # type: ignore[arg-type]
        else:
            servers = [s for c in contexts for s in _tcp_servers(run, c)]
            if servers:  # a TCP listener without routes has nothing to proxy to
                listeners.append(assemble_tcp_listener(servers=servers, **common))  # type: ignore[arg-type]
    clusters = run.clusters.get(gw.key, {})
    used_secrets = {n for lis in listeners for c in lis.chains if c.tls for n in c.tls.certificates}
    secrets = {k: v for k, v in run.secrets.get(gw.key, {}).items() if k in used_secrets}
    return ir.ProxyConfig(
        listeners=tuple(listeners),
        clusters=tuple(clusters[k] for k in sorted(clusters)),
        secrets=tuple(secrets[k] for k in sorted(secrets)),
    )


def _gateway_status(run: _Run, gw: gatewayapi.Gateway) -> ObjectStatus:
    generation = gw.metadata.generation
    listener_status = []
    for ctx in run.listeners[gw.key]:
        defaults = [
            condition("Accepted", True, "Accepted", "listener accepted", generation=generation),
            condition("ResolvedRefs", True, "ResolvedRefs", "all references resolved", generation=generation),
            condition("Conflicted", False, "NoConflicts", "no conflicts", generation=generation),
        ]
        # Defaults only fill in types nothing reported: merge_conditions lets False win, which
        # would hide a Conflicted=True (a problem, unlike the other types' False) behind the default.
        reported = {c.type for c in ctx.conditions}
        merged = merge_conditions([*ctx.conditions, *(d for d in defaults if d.type not in reported)])
        programmed = ctx.valid
        merged += (
            condition(
                "Programmed",
                programmed,
                "Programmed" if programmed else "Invalid",
                "listener is programmed" if programmed else "listener is invalid",
                generation=generation,
            ),
        )
        listener_status.append(
            {
                "name": ctx.spec.name,
                "supportedKinds": [{"group": gatewayapi.GROUP, "kind": k} for k in ctx.kinds],
                "attachedRoutes": ctx.attached,
                "conditions": [c.as_dict() for c in merged],
            }
        )
    any_valid = any(ctx.valid for ctx in run.listeners[gw.key])
    conditions = [
        condition("Accepted", True, "Accepted", "Gateway accepted by meshxds", generation=generation),
        condition(
            "Programmed",
            any_valid,
            "Programmed" if any_valid else "Invalid",
            f"served to proxies labelled {GATEWAY_NAME_LABEL}={gw.name} in namespace {gw.namespace}"
            if any_valid
            else "no listener is valid",
            generation=generation,
        ),
    ]
    return ObjectStatus(
        kind="Gateway",
        namespace=gw.namespace,
        name=gw.name,
        status={"conditions": [c.as_dict() for c in conditions], "listeners": listener_status},
    )


def translate_gateway_api(
    resources: ResourceSet,
    options: TranslateOptions | None = None,
    *,
    endpoint_index: EndpointIndex | None = None,
    previous: GatewayAPIResult | None = None,
) -> GatewayAPIResult:
    """Every Gateway of our class → its proxies' IR, plus the status of everything read.

    ``previous``: the last result, given only when no object routes compile from (Services,
    kgateway Backends, ReferenceGrants, endpoints) changed since; its compiled routes and
    unchanged Gateways' configs are reused. Their clusters may carry older endpoints: the
    snapshot builder takes endpoints from the current index."""
    options = options or TranslateOptions()
    run = _Run(
        resources=resources,
        options=options,
        backends=BackendIndex(
            resources=resources, cluster_domain=options.cluster_domain, endpoint_index=endpoint_index
        ),
        namespaces=_namespace_labels(resources),
        previous=previous.memo if previous is not None else None,
    )
    classes = _process_gateway_classes(run)
    gateways = {g.key: g for g in _process_gateways(run, classes)}
    _process_routes(run)
    configs = {key: _build_proxy_config(run, gw) for key, gw in gateways.items()}
    run.statuses.extend(_gateway_status(run, gw) for gw in gateways.values())
    return GatewayAPIResult(
        gateways=configs,
        statuses=tuple(sorted(run.statuses, key=lambda s: (s.kind, s.namespace, s.name))),
        warnings=tuple(run.warnings),
        memo=run.memo,
    )
