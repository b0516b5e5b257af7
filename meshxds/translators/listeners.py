"""Assembling IR listeners from per-hostname servers — shared by the Gateway API and Istio
translators, so HTTP/2 connection reuse is handled by one mechanism.

Browsers reuse one HTTP/2 connection for every host its certificate covers, but Envoy picks a
filter chain by SNI once per connection. So:

1. HTTPS servers on one port with identical TLS settings are merged into ONE filter chain whose
   route table serves all their hosts: a reused connection is routed correctly.
2. Where settings differ, each chain's route table answers hosts that belong to another chain
   of the listener with **421 Misdirected Request** (RFC 9110 §15.5.20), so the client retries on
   a new connection, with the right SNI — never a 404.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from meshxds import ir, names

__all__ = [
    "HttpServer",
    "RouteBucket",
    "TcpServer",
    "assemble_http_listener",
    "assemble_tcp_listener",
    "virtual_hosts",
]

MISDIRECTED = 421


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpServer:
    """Routes served for some hostnames, optionally behind TLS (one Gateway API listener or one
    Istio gateway server)."""

    hostnames: tuple[str, ...]
    """``("*",)`` for any host."""
    routes: tuple[tuple[str, tuple[ir.Route, ...]], ...]
    """``(hostname, routes in precedence order)`` for each virtual host."""
    tls: ir.DownstreamTls | None = None
    require_tls: bool = False
    """Plain HTTP that answers 301 to https for its hostnames (Istio ``httpsRedirect``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpServer:
    """A TCP proxy for some SNI names (``()``: any connection)."""

    server_names: tuple[str, ...]
    backends: tuple[ir.WeightedCluster, ...]
    tls: ir.DownstreamTls | None = None
    destination_ranges: tuple[str, ...] = ()
    """Original-destination CIDRs (a sidecar's TCP services sharing a port, by cluster IP)."""
    options: ir.TcpProxyOptions | None = None


class RouteBucket:
    """Routes in first-seen order, each once by value. Equal routes have equal names, so a new
    route is compared only with those of its name: linear, where a list scan per route is
    quadratic (a catch-all host can hold every route of the mesh)."""

    __slots__ = ("_by_name", "routes")

    def __init__(self) -> None:
        self.routes: list[ir.Route] = []
        self._by_name: dict[str, list[ir.Route]] | None = None
        """Built when a second batch arrives: most buckets get one batch of distinct names."""

    def extend(self, routes: Sequence[ir.Route]) -> None:
        if not self.routes and len({route.name for route in routes}) == len(routes):
            self.routes = list(routes)  # distinct names, so no two routes are equal
            return
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = {}
            for route in self.routes:
                by_name.setdefault(route.name, []).append(route)
        for route in routes:
            same = by_name.setdefault(route.name, [])
            if route not in same:
                same.append(route)
                self.routes.append(route)


@dataclass(slots=True)
class _Chain:
    tls: ir.DownstreamTls | None
    hostnames: dict[str, None] = field(default_factory=dict)
    """An ordered set."""
    hosts: dict[str, RouteBucket] = field(default_factory=dict)
    require_tls: set[str] = field(default_factory=set)

    def host_routes(self) -> dict[str, list[ir.Route]]:
        return {h: bucket.routes for h, bucket in self.hosts.items()}


def virtual_hosts(
    hosts: dict[str, list[ir.Route]],
    port: int,
    *,
    misdirected: Iterable[str] = (),
    require_tls: Iterable[str] = (),
) -> tuple[ir.VirtualHost, ...]:
    """One virtual host per hostname (catch-all ``*`` last) plus a 421 host for each of
    ``misdirected`` this table does not serve itself."""
    redirect = set(require_tls)
    order = sorted(h for h in hosts if h != "*")
    if "*" in hosts:
        order.append("*")
    out = [
        ir.VirtualHost(
            name=names.virtual_host_name(h, port),
            domains=(h,),
            routes=tuple(hosts[h]),
            require_tls=h in redirect,
        )
        for h in order
    ]
    for hostname in sorted(set(misdirected) - set(hosts) - {"*"}):
        out.append(
            ir.VirtualHost(
                name=names.virtual_host_name(hostname, port) + "/misdirected",
                domains=(hostname,),
                routes=(
                    ir.Route(
                        name=f"misdirected/{hostname}",
                        match=ir.RouteMatch(),
                        action=ir.DirectResponse(
                            status=MISDIRECTED,
                            body=f"{hostname} is served on another connection: retry with SNI {hostname}\n",
                        ),
                    ),
                ),
            )
        )
    return tuple(out)


def _chains(servers: Sequence[HttpServer]) -> list[_Chain]:
    """Merge servers by TLS settings: identical settings share one chain (and one route table)."""
    chains: dict[ir.DownstreamTls | None, _Chain] = {}
    for server in servers:
        chain = chains.setdefault(server.tls, _Chain(tls=server.tls))
        chain.hostnames.update(dict.fromkeys(server.hostnames))
        hosts = chain.hosts
        for hostname, routes in server.routes:
            bucket = hosts.get(hostname)
            if bucket is None:
                bucket = hosts[hostname] = RouteBucket()
            bucket.extend(routes)
            if server.require_tls:
                chain.require_tls.add(hostname)
    return list(chains.values())


def _chain_key(hostnames: Iterable[str]) -> str:
    specific = sorted(h for h in hostnames if h != "*")
    return specific[0] if specific else "default"


def assemble_http_listener(
    *,
    name: str,
    address: str,
    port: int,
    servers: Sequence[HttpServer],
    access_logs: tuple[ir.AccessLog, ...] = (),
    sources: tuple[ir.ObjectRef, ...] = (),
    route_table_name: str | None = None,
) -> ir.Listener:
    """An HTTP listener (one chain, route table ``http.PORT``) or an HTTPS one (a chain per TLS
    setting, matched by SNI, route tables ``https.PORT.<first host>``, 421 across chains)."""
    chains: tuple[ir.FilterChain, ...]
    if all(s.tls is None for s in servers):
        merged = _chains(servers)[0] if servers else _Chain(tls=None)
        table = ir.RouteTable(
            name=route_table_name or names.route_config_name(port),
            virtual_hosts=virtual_hosts(merged.host_routes(), port, require_tls=merged.require_tls),
        )
        chains = (ir.FilterChain(name=name, route_table=table),)
    else:
        built = _chains(servers)
        every_host = [h for c in built for h in c.hostnames]
        chains = tuple(
            ir.FilterChain(
                name=f"{name}/{_chain_key(c.hostnames)}",
                server_names=tuple(sorted(h for h in c.hostnames if h != "*"))
                if "*" not in c.hostnames
                else (),
                tls=c.tls,
                route_table=ir.RouteTable(
                    name=names.https_route_config_name(port, _chain_key(c.hostnames)),
                    virtual_hosts=virtual_hosts(
                        c.host_routes(), port, misdirected=[h for h in every_host if h not in c.hostnames]
                    ),
                ),
            )
            for c in sorted(built, key=lambda c: _chain_key(c.hostnames))
        )
    return ir.Listener(
        name=name,
        address=address,
        port=port,
        chains=chains,
        stat_prefix=name,
        access_logs=access_logs,
        sources=sources,
    )


def assemble_tcp_listener(
    *,
    name: str,
    address: str,
    port: int,
    servers: Sequence[TcpServer],
    access_logs: tuple[ir.AccessLog, ...] = (),
    sources: tuple[ir.ObjectRef, ...] = (),
) -> ir.Listener:
    """TCP proxying, by SNI when the servers name any (TLS passthrough), else one chain."""
    chains = tuple(
        ir.FilterChain(
            name=f"{name}/{_chain_key([*s.server_names, *s.destination_ranges])}",
            server_names=tuple(sorted(s.server_names)),
            tls=s.tls,
            tcp_backends=s.backends,
            destination_ranges=s.destination_ranges,
            tcp_options=s.options,
        )
        for s in sorted(
            servers,
            key=lambda s: (
                not s.server_names and not s.destination_ranges,
                _chain_key([*s.server_names, *s.destination_ranges]),
            ),
        )
    )
    return ir.Listener(
        name=name,
        address=address,
        port=port,
        chains=chains,
        stat_prefix=name,
        access_logs=access_logs,
        sources=sources,
    )
