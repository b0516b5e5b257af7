"""Protocol selection: the only place meshxds decides what a port speaks.

Follows Istio's documented rules ("Protocol Selection", ``pkg/config/kube/conversion.go``):

1. UDP ports are UDP, whatever their name.
2. An explicit ``appProtocol`` wins over the port name. Kubernetes' standard values are
   mapped first (``kubernetes.io/h2c`` → HTTP2, ``kubernetes.io/ws`` → HTTP, ``kubernetes.io/wss``
   → HTTPS, WebSocket over TLS).
3. Otherwise the port name selects by prefix: ``grpc-web…`` first (it contains a dash), then the
   part before the first ``-``, case-insensitively (``http2-web`` → HTTP2, ``GRPC-api`` → GRPC).
4. A gateway server's own ``protocol`` (Istio ``Gateway.servers[].port.protocol``) is explicit too.
5. Anything else is ``UNSUPPORTED``: the caller picks its default (auto-detect for Istio,
   HTTP/1.1 for Gateway API backends per GEP-1911) and says so in the decision.

Every decision records the field that made it, so ``meshxds validate`` can explain it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Protocol",
    "ProtocolDecision",
    "decide_port_protocol",
    "is_grpc",
    "is_http",
    "is_http2",
    "is_opaque_tcp",
    "is_tls",
    "parse_protocol",
]


class Protocol(StrEnum):
    """Istio's spellings, so users see the names they know."""

    HTTP = "HTTP"
    HTTP2 = "HTTP2"
    HTTPS = "HTTPS"
    GRPC = "GRPC"
    GRPC_WEB = "GRPC-Web"
    TCP = "TCP"
    TLS = "TLS"
    UDP = "UDP"
    MONGO = "Mongo"
    REDIS = "Redis"
    MYSQL = "MySQL"
    HTTP_PROXY = "HTTP_PROXY"
    UNSUPPORTED = "UnsupportedProtocol"


_BY_LOWER_NAME: dict[str, Protocol] = {
    "http": Protocol.HTTP,
    "http2": Protocol.HTTP2,
    "https": Protocol.HTTPS,
    "grpc": Protocol.GRPC,
    "grpc-web": Protocol.GRPC_WEB,
    "tcp": Protocol.TCP,
    "tls": Protocol.TLS,
    "udp": Protocol.UDP,
    "mongo": Protocol.MONGO,
    "redis": Protocol.REDIS,
    "mysql": Protocol.MYSQL,
    "http_proxy": Protocol.HTTP_PROXY,
}

# Kubernetes' standard appProtocol values (KEP-3726); only meaningful in appProtocol.
_KUBERNETES_APP_PROTOCOLS: dict[str, Protocol] = {
    "kubernetes.io/h2c": Protocol.HTTP2,
    "kubernetes.io/ws": Protocol.HTTP,
    "kubernetes.io/wss": Protocol.HTTPS,
}


def parse_protocol(value: str) -> Protocol:
    """Case-insensitive parse; unknown values give ``UNSUPPORTED`` instead of raising."""
    return _BY_LOWER_NAME.get(value.strip().lower(), Protocol.UNSUPPORTED)


def is_http2(protocol: Protocol) -> bool:
    """Protocols whose upstream connection must be HTTP/2."""
    return protocol in (Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB)


def is_grpc(protocol: Protocol) -> bool:
    return protocol in (Protocol.GRPC, Protocol.GRPC_WEB)


def is_http(protocol: Protocol) -> bool:
    """Protocols Envoy handles with the HTTP connection manager."""
    return protocol in (Protocol.HTTP, Protocol.HTTP2, Protocol.GRPC, Protocol.GRPC_WEB, Protocol.HTTP_PROXY)


def is_tls(protocol: Protocol) -> bool:
    return protocol in (Protocol.HTTPS, Protocol.TLS)


def is_opaque_tcp(protocol: Protocol) -> bool:
    """Protocols meshxds proxies as plain TCP: TCP, and those Envoy has filters for that we do
    not configure (Mongo, Redis, MySQL)."""
    return protocol in (Protocol.TCP, Protocol.MONGO, Protocol.REDIS, Protocol.MYSQL)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProtocolDecision:
    """A protocol and the reason for it."""

    protocol: Protocol
    source_field: str
    """The field that decided, e.g. ``spec.ports[0].appProtocol``; ``""`` when nothing did."""
    detail: str
    """One sentence a user can read in ``meshxds validate`` output."""
    warnings: tuple[str, ...] = ()
    """Contradictions noticed on the way (a port named ``http-`` whose appProtocol says ``grpc``)."""


def _from_name(name: str) -> Protocol:
    lowered = name.lower()
    if lowered.startswith("grpc-web"):
        return Protocol.GRPC_WEB
    return parse_protocol(lowered.split("-", 1)[0])


def decide_port_protocol(
    *,
    port_name: str | None,
    app_protocol: str | None = None,
    transport: str | None = "TCP",
    field_prefix: str = "",
    server_protocol: str | None = None,
) -> ProtocolDecision:
    """Decide a port's protocol from the fields Istio reads, in Istio's order.

    ``field_prefix`` is the path of the port object (``spec.ports[0]``) used in explanations;
    ``server_protocol`` is an Istio gateway server's explicit ``port.protocol``.
    """
    return _decide(port_name, app_protocol, transport, field_prefix, server_protocol)


@functools.lru_cache(maxsize=1024)
def _decide(
    port_name: str | None,
    app_protocol: str | None,
    transport: str | None,
    field_prefix: str,
    server_protocol: str | None,
) -> ProtocolDecision:
    # Memoized: the (immutable) answer depends on these few strings only, and 10,000 Services
    # name their ports with a handful of them.
    at = f"{field_prefix}." if field_prefix else ""
    if (transport or "TCP").upper() == "UDP":
        return ProtocolDecision(protocol=Protocol.UDP, source_field=f"{at}protocol", detail="the port is UDP")
    if server_protocol:
        chosen = parse_protocol(server_protocol)
        return ProtocolDecision(
            protocol=chosen,
            source_field=f"{at}protocol",
            detail=f"the server's protocol is {server_protocol!r}",
        )
    name_protocol = _from_name(port_name) if port_name else Protocol.UNSUPPORTED
    if app_protocol:
        chosen = _KUBERNETES_APP_PROTOCOLS.get(app_protocol.lower()) or _from_name(app_protocol)
        warnings: tuple[str, ...] = ()
        if name_protocol is not Protocol.UNSUPPORTED and chosen is not name_protocol:
            warnings = (
                f"{at}name {port_name!r} suggests {name_protocol.value} but {at}appProtocol "
                f"{app_protocol!r} says {chosen.value}; appProtocol wins",
            )
        return ProtocolDecision(
            protocol=chosen,
            source_field=f"{at}appProtocol",
            detail=f"{at}appProtocol is {app_protocol!r}"
            + ("" if chosen is not Protocol.UNSUPPORTED else " (not a protocol meshxds knows)"),
            warnings=warnings,
        )
    if name_protocol is not Protocol.UNSUPPORTED:
        return ProtocolDecision(
            protocol=name_protocol,
            source_field=f"{at}name",
            detail=f"{at}name {port_name!r} starts with {name_protocol.value.lower()!r}",
        )
    return ProtocolDecision(
        protocol=Protocol.UNSUPPORTED,
        source_field="",
        detail="neither appProtocol nor the port name selects a protocol"
        if not port_name
        else f"the port name {port_name!r} has no known protocol prefix and there is no appProtocol",
    )
