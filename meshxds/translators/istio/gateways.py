"""Istio ``Gateway`` servers → listeners, with VirtualServices bound to them.

Servers on one (bind, port) become one listener; HTTPS servers are grouped into filter chains by
TLS settings through :mod:`meshxds.translators.listeners`, so servers sharing a certificate share
a route table and other hosts on a reused connection get 421.
"""

from __future__ import annotations

import base64
import binascii
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from meshxds import ir, names
from meshxds.model import istio
from meshxds.translators.certificates import secret_value, tls_secret_from
from meshxds.translators.hostnames import intersect_hostnames
from meshxds.translators.istio.context import At, BuildContext
from meshxds.translators.istio.messages import (
    CONFLICTING_CLAIMS,
    INVALID_GATEWAY_CREDENTIAL,
    REFERENCED_RESOURCE_NOT_FOUND,
    SCHEMA_VALIDATION_ERROR,
    UNSUPPORTED_FEATURE,
)
from meshxds.translators.istio.registry import visible_to
from meshxds.translators.istio.routes import RouteContext, http_routes, l4_backends, vs_gateways
from meshxds.translators.labels import labels_match
from meshxds.translators.listeners import (
    HttpServer,
    RouteBucket,
    TcpServer,
    assemble_http_listener,
    assemble_tcp_listener,
)
from meshxds.translators.protocol import Protocol, is_grpc, is_http, is_opaque_tcp, is_tls, parse_protocol

__all__ = ["build_gateways", "parse_server_host", "selects"]

_TLS_VERSIONS = {"TLSV1_0": "TLSv1_0", "TLSV1_1": "TLSv1_1", "TLSV1_2": "TLSv1_2", "TLSV1_3": "TLSv1_3"}


def _is_spki_pin(value: str) -> bool:
    """Envoy takes base64 of a SHA-256 digest: 32 bytes, 44 characters."""
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _is_cert_hash(value: str) -> bool:
    """Envoy takes hex SHA-256, plain or colon-separated."""
    digits = value.replace(":", "")
    return len(digits) == 64 and all(c in "0123456789abcdefABCDEF" for c in digits)


def selects(gateway: istio.Gateway, labels: dict[str, str]) -> bool:
    """A Gateway applies to workloads whose labels include its selector (empty: every workload)."""
    return labels_match(labels, gateway.spec.selector)


def parse_server_host(host: str, gateway_namespace: str) -> tuple[str, str]:
    """``ns/host`` → (namespace filter, host): ``*`` any namespace, ``.`` the gateway's own."""
    if "/" not in host:
        return "*", host
    namespace, _, hostname = host.partition("/")
    return (gateway_namespace if namespace == "." else namespace), hostname


@dataclass(slots=True)
class _Server:
    gateway: istio.Gateway
    index: int
    spec: istio.Server

    @property
    def at(self) -> At:
        return At.of(self.gateway, f"spec.servers[{self.index}]")

    @property
    def key(self) -> str:
        return f"{self.gateway.namespace}/{self.gateway.name}"


def _bound_virtual_services(
    ctx_gateway: str, server: _Server, vses: Iterable[istio.VirtualService]
) -> list[tuple[istio.VirtualService, list[str]]]:
    """VirtualServices bound to this server, with the hostnames each serves on it."""
    hosts = [parse_server_host(h, server.gateway.namespace) for h in server.spec.hosts]
    out = []
    for vs in vses:
        if ctx_gateway not in vs_gateways(vs):
            continue
        if not visible_to(tuple(vs.spec.export_to), vs.namespace, server.gateway.namespace):
            continue
        served: list[str] = []
        for ns_filter, server_host in hosts:
            if ns_filter not in ("*", vs.namespace):
                continue
            for hostname in intersect_hostnames(server_host, list(vs.spec.hosts)):
                if hostname not in served:
                    served.append(hostname)
        if served:
            out.append((vs, served))
    return out


def _downstream_tls(
    server: _Server, build: BuildContext, *, alpn: tuple[str, ...]
) -> ir.DownstreamTls | None:
    tls = server.spec.tls
    assert tls is not None
    proxy_namespace = build.proxy_namespace
    resources_secret = build.secrets
    secrets, ca_secrets = build.clusters.secrets, build.clusters.ca_secrets
    at = server.at.sub(".tls")
    mode = tls.mode or "SIMPLE"
    certificates: list[str] = []
    ca_secret: str | None = None
    credential_names = [tls.credential_name] if tls.credential_name else list(tls.credential_names)
    for credential in credential_names:
        # The Secret lives in the gateway workload's namespace (Istio's rule).
        secret = resources_secret.get((proxy_namespace, credential))
        if secret is None:
            build.error(
                at.sub(".credentialName"),
                REFERENCED_RESOURCE_NOT_FOUND,
                f"Secret {proxy_namespace}/{credential} not found",
            )
            return None
        found = tls_secret_from(secret)
        if isinstance(found, str):
            build.error(at.sub(".credentialName"), INVALID_GATEWAY_CREDENTIAL, found)
            return None
        secrets[found.name] = found
        certificates.append(found.name)
        if mode in ("MUTUAL", "OPTIONAL_MUTUAL") and ca_secret is None:
            ca = secret_value(secret, "ca.crt")
            ca_holder = secret
            if ca is None:
                ca_holder = resources_secret.get((proxy_namespace, f"{credential}-cacert")) or secret
                ca = secret_value(ca_holder, "ca.crt") or secret_value(ca_holder, "cacert")
            if ca is not None:
                ca_secret = names.sds_secret_name(ca_holder.namespace, credential) + "-cacert"
                ca_secrets[ca_secret] = ir.CaSecret(name=ca_secret, ca_certificates=ca)
    files = [(tls.server_certificate, tls.private_key)] if tls.server_certificate and tls.private_key else []
    files += [
        (c.server_certificate, c.private_key)
        for c in tls.tls_certificates
        if c.server_certificate and c.private_key
    ]
    if not certificates and not files:
        build.error(
            at, SCHEMA_VALIDATION_ERROR, f"{mode} needs credentialName or serverCertificate and privateKey"
        )
        return None
    bad_pins = [p for p in tls.verify_certificate_spki if not _is_spki_pin(p)]
    bad_pins += [h for h in tls.verify_certificate_hash if not _is_cert_hash(h)]
    if bad_pins:
        build.error(
            at,
            SCHEMA_VALIDATION_ERROR,
            f"{', '.join(map(repr, bad_pins))} is not a base64 SHA-256 SPKI pin "
            "(verifyCertificateSpki) or a hex SHA-256 certificate hash (verifyCertificateHash)",
        )
        return None
    if mode in ("MUTUAL", "OPTIONAL_MUTUAL") and ca_secret is None and not tls.ca_certificates:
        build.error(at, SCHEMA_VALIDATION_ERROR, f"{mode} needs caCertificates or a CA in the credential")
        return None
    return ir.DownstreamTls(
        certificates=tuple(certificates),
        certificate_files=tuple((c, k) for c, k in files if c and k),
        alpn=alpn,
        require_client_certificate=mode == "MUTUAL",
        ca_secret=ca_secret,
        ca_file=tls.ca_certificates if mode in ("MUTUAL", "OPTIONAL_MUTUAL") else None,
        subject_alt_names=tuple(tls.subject_alt_names),
        spki_hashes=tuple(tls.verify_certificate_spki),
        cert_hashes=tuple(tls.verify_certificate_hash),
        min_version=_TLS_VERSIONS.get(tls.min_protocol_version or ""),
        max_version=_TLS_VERSIONS.get(tls.max_protocol_version or ""),
        cipher_suites=tuple(tls.cipher_suites),
    )


def build_gateways(
    build: BuildContext, gateways: list[istio.Gateway], vses: list[istio.VirtualService]
) -> None:
    """Listeners for every server of the selected gateways."""
    by_address: dict[tuple[str, int], list[_Server]] = defaultdict(list)
    for gw in gateways:
        for index, spec in enumerate(gw.spec.servers):
            # bind: an IP, or a Unix socket path (``unix:///path``, ``unix://@abstract``) with port 0.
            address = spec.bind or build.listener_address
            by_address[(address, spec.port.number)].append(_Server(gateway=gw, index=index, spec=spec))
    # The VirtualServices naming each gateway, once per gateway rather than once per server.
    by_gateway: dict[str, list[istio.VirtualService]] = defaultdict(list)
    for vs in vses:
        for gateway in dict.fromkeys(vs_gateways(vs)):
            by_gateway[gateway].append(vs)
    for (address, port), servers in sorted(by_address.items()):
        name = names.listener_name(port, bind=address)
        http: list[HttpServer] = []
        tcp: list[TcpServer] = []
        for server in servers:
            protocol = parse_protocol(server.spec.port.protocol)
            context = RouteContext(build=build, gateway=server.key, port=port, grpc_web=is_grpc(protocol))
            tls = server.spec.tls
            mode = (tls.mode or "SIMPLE") if tls is not None else None
            if mode == "ISTIO_MUTUAL":
                build.error(
                    server.at.sub(".tls.mode"),
                    UNSUPPORTED_FEATURE,
                    "ISTIO_MUTUAL needs Istio's mesh CA, which meshxds does not provide; the server is "
                    "not served (use SIMPLE or MUTUAL with credentialName)",
                )
                continue
            bound = _bound_virtual_services(server.key, server, by_gateway.get(server.key, []))
            # HTTP_PROXY (a forward proxy's protocol) is not one a gateway server serves.
            plain_http = is_http(protocol) and protocol is not Protocol.HTTP_PROXY
            if plain_http or (protocol is Protocol.HTTPS and mode not in ("PASSTHROUGH", "AUTO_PASSTHROUGH")):
                downstream = None
                if protocol is Protocol.HTTPS:
                    if tls is None:
                        build.error(
                            server.at.sub(".tls"), SCHEMA_VALIDATION_ERROR, "an HTTPS server needs tls"
                        )
                        continue
                    downstream = _downstream_tls(server, build, alpn=("h2", "http/1.1"))
                    if downstream is None:
                        continue
                redirect = bool(tls is not None and tls.https_redirect and protocol is not Protocol.HTTPS)
                http.append(_http_server(context, server, bound, downstream, redirect))
            elif mode == "PASSTHROUGH" and is_tls(protocol):
                tcp.extend(_passthrough_servers(context, server, bound))
            elif mode == "AUTO_PASSTHROUGH":
                tcp.extend(_auto_passthrough_servers(context))
            elif is_opaque_tcp(protocol) or protocol is Protocol.TLS:
                downstream = None
                if protocol is Protocol.TLS and tls is not None:
                    downstream = _downstream_tls(server, build, alpn=())
                    if downstream is None:
                        continue
                if protocol is not Protocol.TCP and protocol is not Protocol.TLS:
                    named = server.spec.port.protocol.upper()
                    build.warn(
                        server.at.sub(".port.protocol"),
                        UNSUPPORTED_FEATURE,
                        f"{named} is proxied as plain TCP",
                    )
                backends = next((b for vs, _ in bound if (b := l4_backends(context, vs))), None)
                if backends:
                    tcp.append(TcpServer(server_names=(), backends=backends, tls=downstream))
            else:
                build.error(
                    server.at.sub(".port.protocol"),
                    UNSUPPORTED_FEATURE,
                    f"{server.spec.port.protocol} is not supported",
                )
        sources = tuple(
            ir.ObjectRef(
                kind="Gateway",
                namespace=s.gateway.namespace,
                name=s.gateway.name,
                section=s.spec.name or str(s.index),
            )
            for s in servers
        )
        if http and tcp:
            build.error(
                None,
                CONFLICTING_CLAIMS,
                f"listener {name}: HTTP and TCP servers cannot share a port; the TCP servers are dropped",
            )
        if http:
            build.listeners.append(
                assemble_http_listener(name=name, address=address, port=port, servers=http, sources=sources)
            )
        elif tcp:
            tcp = [replace(s, options=build.clusters.tcp_proxy_options(s.backends)) for s in tcp]
            build.listeners.append(
                assemble_tcp_listener(name=name, address=address, port=port, servers=tcp, sources=sources)
            )


def _http_server(
    ctx: RouteContext,
    server: _Server,
    bound: list[tuple[istio.VirtualService, list[str]]],
    tls: ir.DownstreamTls | None,
    https_redirect: bool,
) -> HttpServer:
    hosts: dict[str, RouteBucket] = {}
    for vs, hostnames in bound:
        routes = http_routes(ctx, vs)
        if not routes:
            continue  # e.g. a VirtualService with only tcp rules
        for hostname in hostnames:
            hosts.setdefault(hostname, RouteBucket()).extend(routes)
    server_hosts = tuple(
        dict.fromkeys(parse_server_host(h, server.gateway.namespace)[1] for h in server.spec.hosts)
    )
    if https_redirect:
        # Every request on this plain-HTTP server is redirected: Envoy's require_tls answers 301.
        for hostname in server_hosts:
            hosts.setdefault(hostname, RouteBucket())
    return HttpServer(
        hostnames=server_hosts,
        routes=tuple((h, tuple(bucket.routes)) for h, bucket in hosts.items()),
        tls=tls,
        require_tls=https_redirect,
    )


def _passthrough_servers(
    ctx: RouteContext, server: _Server, bound: list[tuple[istio.VirtualService, list[str]]]
) -> list[TcpServer]:
    out: list[TcpServer] = []
    for vs, _ in bound:
        for rule in vs.spec.tls:
            for match in rule.match:
                for sni in match.sni_hosts:
                    if any(s.server_names == (sni,) for s in out):
                        continue
                    backends = l4_backends(ctx, vs, sni=sni)
                    if backends:
                        out.append(TcpServer(server_names=(sni,), backends=backends))
    return out


def _auto_passthrough_servers(ctx: RouteContext) -> list[TcpServer]:
    out = []
    for service in ctx.build.registry.services.values():
        for port in service.ports:
            cluster = ctx.build.clusters.cluster(service.hostname, port.number, None)
            if isinstance(cluster, ir.Cluster):
                sni = f"outbound_.{port.number}_._.{service.hostname}"
                out.append(
                    TcpServer(
                        server_names=(sni,), backends=(ir.WeightedCluster(cluster=cluster.name, weight=1),)
                    )
                )
    return out
