"""One ``ProxyConfig`` per Gateway: its listeners by port (HTTP routes ranked by precedence.py,
TCP servers by SNI), the clusters its routes use, the secrets its listeners serve."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

from meshxds import ir, names
from meshxds.model import gatewayapi
from meshxds.translators.gatewayapi.context import ListenerContext, Run
from meshxds.translators.gatewayapi.precedence import SortableRoute, more_specific_hostname, rank_hosts
from meshxds.translators.hostnames import HostnamePatterns
from meshxds.translators.kgateway import ListenerPolicies, listener_policies
from meshxds.translators.listeners import HttpServer, TcpServer, assemble_http_listener, assemble_tcp_listener

__all__ = ["build_proxy_config"]

_HTTP_PROTOCOLS = ("HTTP", "HTTPS")


def build_proxy_config(run: Run, gw: gatewayapi.Gateway) -> ir.ProxyConfig:
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
        tuple(sorted(run.ca_secrets.get(gw.key, {}).items())),
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


def _assemble_proxy_config(run: Run, gw: gatewayapi.Gateway, policies: ListenerPolicies) -> ir.ProxyConfig:
    by_port: dict[int, list[ListenerContext]] = defaultdict(list)
    for ctx in run.listeners[gw.key]:
        if ctx.valid and ctx.kinds:
            by_port[ctx.spec.port].append(ctx)
    listeners: list[ir.Listener] = []
    for port in sorted(by_port):
        contexts = sorted(by_port[port], key=lambda c: c.spec.name)
        name = names.listener_name(port, bind=run.options.listener_address)
        access_logs = policies.for_listeners([c.spec.name for c in contexts])
        sources = tuple(
            ir.ObjectRef(kind="Gateway", namespace=gw.namespace, name=gw.name, section=c.spec.name)
            for c in contexts
        )
        address = run.options.listener_address
        if contexts[0].spec.protocol in _HTTP_PROTOCOLS:
            http_servers = [_http_server(c, contexts) for c in contexts]
            http_listener = assemble_http_listener(
                name=name,
                address=address,
                port=port,
                servers=http_servers,
                access_logs=access_logs,
                sources=sources,
            )
            listeners.append(policies.apply(http_listener, http=True))
        else:
            servers = [s for c in contexts for s in _tcp_servers(run, c)]
            if servers:  # a TCP listener without routes has nothing to proxy to
                tcp_listener = assemble_tcp_listener(
                    name=name,
                    address=address,
                    port=port,
                    servers=servers,
                    access_logs=access_logs,
                    sources=sources,
                )
                listeners.append(policies.apply(tcp_listener, http=False))
    clusters = run.clusters.get(gw.key, {})
    used_secrets = {n for lis in listeners for c in lis.chains if c.tls for n in c.tls.certificates}
    secrets = {k: v for k, v in run.secrets.get(gw.key, {}).items() if k in used_secrets}
    used_cas = {c.tls.ca_secret for lis in listeners for c in lis.chains if c.tls and c.tls.ca_secret}
    cas = {k: v for k, v in run.ca_secrets.get(gw.key, {}).items() if k in used_cas}
    assert run.backends.tls_policies is not None
    for cluster in clusters.values():  # BackendTLSPolicy CA bundles the clusters verify with
        ca_name = cluster.upstream_tls.ca_secret if cluster.upstream_tls is not None else None
        found = run.backends.tls_policies.ca_secret(ca_name) if ca_name else None
        if found is not None:
            cas[found.name] = found
    return ir.ProxyConfig(
        listeners=tuple(listeners),
        clusters=tuple(clusters[k] for k in sorted(clusters)),
        secrets=tuple(secrets[k] for k in sorted(secrets)),
        ca_secrets=tuple(cas[k] for k in sorted(cas)),
    )


def _http_server(ctx: ListenerContext, port_listeners: list[ListenerContext]) -> HttpServer:
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


def _tcp_servers(run: Run, ctx: ListenerContext) -> list[TcpServer]:
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
