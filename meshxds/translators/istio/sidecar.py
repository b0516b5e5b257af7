"""Outbound config of a sidecar: a proxy no Gateway selects.

Without iptables interception, an application sends to the sidecar's port with the service's
Host; so every HTTP service port becomes a listener ``0.0.0.0_PORT`` whose route table (named
``PORT``, as Istio's) has a virtual host per service answering every name form of it, with the
VirtualServices bound to ``mesh`` applied. TCP ports get a TCP proxy (by destination address
when several services share a port).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from meshxds import ir, names
from meshxds.model import istio
from meshxds.translators.hostnames import covering_patterns
from meshxds.translators.istio.context import At, BuildContext
from meshxds.translators.istio.messages import CONFLICTING_CLAIMS, REFERENCED_RESOURCE_NOT_FOUND
from meshxds.translators.istio.registry import RegisteredService, visible_to
from meshxds.translators.istio.routes import MESH, RouteContext, http_routes, l4_backends, vs_gateways
from meshxds.translators.listeners import TcpServer, assemble_tcp_listener
from meshxds.translators.protocol import Protocol, is_grpc, is_http

__all__ = ["build_sidecar"]


def _mesh_virtual_services(ctx: RouteContext, vses: list[istio.VirtualService]) -> list[istio.VirtualService]:
    return [
        vs
        for vs in vses
        if MESH in vs_gateways(vs)
        and visible_to(tuple(vs.spec.export_to), vs.namespace, ctx.build.proxy_namespace)
    ]


class _VirtualServiceIndex:
    """The oldest mesh VirtualService naming a service among its hosts (Istio picks one), found
    by probing the service hostname's covering patterns instead of testing every host."""

    def __init__(self, ctx: RouteContext, vses: list[istio.VirtualService]) -> None:
        self._vses = vses
        self._first: dict[str, int] = {}
        for position, vs in enumerate(vses):
            for host in vs.spec.hosts:
                self._first.setdefault(ctx.build.registry.resolve(host, vs.namespace).lower(), position)

    def for_service(self, service: RegisteredService) -> istio.VirtualService | None:
        positions = [self._first[p] for p in covering_patterns(service.hostname) if p in self._first]
        return self._vses[min(positions)] if positions else None


def _domains(service: RegisteredService, port: int, client_namespace: str) -> tuple[str, ...]:
    forms = service.name_forms(client_namespace)
    return tuple(d for form in forms for d in (form, f"{form}:{port}"))


def build_sidecar(build: BuildContext, vses: list[istio.VirtualService]) -> None:
    """The outbound listeners of a sidecar in ``build``'s namespace."""
    listener_address = build.listener_address
    http_ports: dict[int, list[ir.VirtualHost]] = defaultdict(list)
    tcp_ports: dict[int, list[tuple[RegisteredService, TcpServer]]] = defaultdict(list)
    base = RouteContext(build=build, gateway=MESH, port=0)
    mesh_vses = _VirtualServiceIndex(base, _mesh_virtual_services(base, vses))
    for service in sorted(build.registry.services.values(), key=lambda s: s.hostname):
        if not visible_to(service.export_to, service.namespace, build.proxy_namespace):
            continue
        vs = mesh_vses.for_service(service)
        for svc_port in service.ports:
            if svc_port.protocol in (Protocol.UDP,):
                continue
            ctx = RouteContext(
                build=build, gateway=MESH, port=svc_port.number, grpc_web=is_grpc(svc_port.protocol)
            )
            if is_http(svc_port.protocol) or svc_port.protocol is Protocol.UNSUPPORTED:
                routes = http_routes(ctx, vs) if vs is not None else []
                if not routes:
                    cluster = build.clusters.cluster(service.hostname, svc_port.number, None)
                    if isinstance(cluster, str):
                        build.warn(At.source(service.source), REFERENCED_RESOURCE_NOT_FOUND, cluster)
                        continue
                    routes = [
                        ir.Route(
                            name=f"{service.hostname}:{svc_port.number}/default",
                            match=ir.RouteMatch(),
                            action=ir.ForwardAction(
                                backends=(ir.WeightedCluster(cluster=cluster.name, weight=1),),
                                timeout_s=0.0,
                                grpc_timeout_header_max_s=0.0,
                                hash_policies=(cluster.hash_policy,) if cluster.hash_policy else (),
                                grpc_web=ctx.grpc_web,
                            ),
                            retries=ir.RetryPolicy(attempts=2),
                            source=service.source,
                        )
                    ]
                http_ports[svc_port.number].append(
                    ir.VirtualHost(
                        name=names.virtual_host_name(service.hostname, svc_port.number),
                        domains=_domains(service, svc_port.number, build.proxy_namespace),
                        routes=tuple(routes),
                    )
                )
            else:
                backends = l4_backends(ctx, vs) if vs is not None else None
                if backends is None:
                    cluster = build.clusters.cluster(service.hostname, svc_port.number, None)
                    if isinstance(cluster, str):
                        build.warn(At.source(service.source), REFERENCED_RESOURCE_NOT_FOUND, cluster)
                        continue
                    backends = (ir.WeightedCluster(cluster=cluster.name, weight=1),)
                tcp_ports[svc_port.number].append(
                    (
                        service,
                        TcpServer(server_names=(), backends=backends, destination_ranges=service.cluster_ips),
                    )
                )
    for port, vhosts in sorted(http_ports.items()):
        if port in tcp_ports:
            build.warn(
                None,
                CONFLICTING_CLAIMS,
                f"port {port}: HTTP and TCP services share it; without protocol sniffing the HTTP ones win",
            )
        name = names.listener_name(port, bind=listener_address)
        table = ir.RouteTable(name=str(port), virtual_hosts=tuple(_unique_domains(vhosts, build)))
        build.listeners.append(
            ir.Listener(
                name=name,
                address=listener_address,
                port=port,
                chains=(ir.FilterChain(name=name, route_table=table),),
                stat_prefix=name,
            )
        )
    for port, claims in sorted(tcp_ports.items()):
        if port in http_ports:
            continue
        servers = _unique_destinations(port, claims, build)
        if len(servers) > 1 and any(not s.destination_ranges for s in servers):
            build.warn(
                None,
                CONFLICTING_CLAIMS,
                f"port {port}: several TCP services without cluster IPs share it; "
                "only the first is reachable",
            )
            servers = servers[:1]
        if len(servers) == 1:
            servers = [TcpServer(server_names=(), backends=servers[0].backends)]
        servers = [
            dataclasses.replace(s, options=build.clusters.tcp_proxy_options(s.backends)) for s in servers
        ]
        build.listeners.append(
            assemble_tcp_listener(
                name=names.listener_name(port, bind=listener_address),
                address=listener_address,
                port=port,
                servers=servers,
            )
        )


def _unique_destinations(
    port: int, claims: list[tuple[RegisteredService, TcpServer]], build: BuildContext
) -> list[TcpServer]:
    """Envoy rejects two filter chains matching one destination address (two ServiceEntries may
    share an address; Services that share a cluster IP come from outside the API server): the
    first service, by hostname, keeps the address, the later one is warned about and loses it."""
    claimed: dict[str, str] = {}
    servers = []
    for service, server in claims:
        ranges = []
        for cidr in server.destination_ranges:
            if cidr in claimed:
                build.warn(
                    At.source(service.source),
                    CONFLICTING_CLAIMS,
                    f"port {port}: address {cidr} is also {claimed[cidr]}'s, which keeps it; "
                    f"{service.hostname} is not reachable there",
                )
            else:
                claimed[cidr] = service.hostname
                ranges.append(cidr)
        if ranges or not server.destination_ranges:
            servers.append(dataclasses.replace(server, destination_ranges=tuple(ranges)))
    return servers


def _unique_domains(vhosts: list[ir.VirtualHost], build: BuildContext) -> list[ir.VirtualHost]:
    """Envoy rejects a domain in two virtual hosts: the first service to claim a name keeps it."""
    seen: set[str] = set()
    out = []
    for vhost in vhosts:
        domains = tuple(d for d in vhost.domains if d not in seen)
        if len(domains) != len(vhost.domains):
            build.warn(
                None,
                CONFLICTING_CLAIMS,
                f"virtual host {vhost.name}: some names are claimed by another service; dropped",
            )
        seen.update(domains)
        if domains:
            out.append(ir.VirtualHost(name=vhost.name, domains=domains, routes=vhost.routes))
    return out
