"""Cluster construction: what Envoy speaks upstream (and why), how it finds the endpoints, and the
one constructor of ``ir.Cluster`` every frontend calls with its own policy (Istio's
DestinationRule, Gateway API's defaults, a kgateway Backend's hosts)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from meshxds import ir
from meshxds.translators.protocol import Protocol, ProtocolDecision, is_http, is_http2
from meshxds.translators.upstream.endpoints import is_ip

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_H2_IDLE_TIMEOUT_S",
    "DEFAULT_H2_KEEPALIVE",
    "NO_POLICY",
    "ClusterPolicy",
    "Discovery",
    "alpn_for",
    "build_cluster",
    "decide_discovery",
    "decide_upstream_protocol",
]

DEFAULT_CONNECT_TIMEOUT_S = 10.0
"""Istio's default ``connectTimeout``, and ours wherever no policy sets one."""

DEFAULT_H2_KEEPALIVE = ir.Http2Keepalive(interval_s=300.0, timeout_s=20.0)
"""HTTP/2 PINGs on every cluster Envoy may speak HTTP/2 to, unless a policy sets its own: a
connection that went half-dead (a NAT or load balancer dropped it without a RST) is closed
within interval + timeout, instead of calls hanging on it until TCP gives up.

Why these values: gRPC servers police PINGs. grpc-core and grpc-go count a PING that comes
sooner than 5 minutes after the previous one (``GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS``
= 300000, grpc-go's ``MinTime``) as a strike, and answer the third strike (``max_ping_strikes``
2) with GOAWAY ENHANCE_YOUR_CALM "too_many_pings", failing the calls on that connection. Envoy
only adds jitter to the interval (up to 15 %), so 300 s is never too soon while calls are open.
(Strikes reset whenever the server sends headers or data.) On a connection with no call open
the servers allow one PING per 2 hours, so an idle connection gets that GOAWAY at the third
PING after it went idle (10 to 17 minutes). So with this default comes
``DEFAULT_H2_IDLE_TIMEOUT_S``: Envoy closes such a connection itself before that PING, and the
backend's log never shows "too_many_pings". 20 s is gRPC's own default keepalive timeout."""

DEFAULT_H2_IDLE_TIMEOUT_S = 600.0
"""The upstream idle timeout (Envoy's default: 1 h) of a cluster given ``DEFAULT_H2_KEEPALIVE``
whose policy sets none: an idle connection sees at most two PINGs, which gRPC servers tolerate."""

Discovery = Literal["EDS", "STATIC", "STRICT_DNS"]


def decide_upstream_protocol(
    decision: ProtocolDecision,
    *,
    default: ir.UpstreamProtocol | None = None,
    client_protocol: str = "",
    h2_upgrade: str = "",
) -> tuple[ir.UpstreamProtocol, str]:
    """What Envoy speaks to a port's endpoints, with the reason in words.

    Istio's precedence (``shouldH2Upgrade``): the client's protocol when a policy says so
    (``client_protocol`` is the policy's reason), HTTP/2 for an HTTP2/GRPC port (nothing
    downgrades it), an HTTP port upgraded when a policy says so (``h2_upgrade``), HTTP/1.1 for
    an HTTP port. A port that is not HTTP takes the frontend's ``default`` when it has one
    (Gateway API's route kinds, GEP-1911); without one, Istio's rule: an undecided port is
    detected from the client's protocol, any other is proxied as TCP.
    """
    detail, protocol = decision.detail, decision.protocol
    if client_protocol:
        return ir.UpstreamProtocol.DOWNSTREAM, client_protocol
    if is_http2(protocol):
        return ir.UpstreamProtocol.HTTP2, f"{detail}: {protocol.value} needs HTTP/2"
    if is_http(protocol):
        if h2_upgrade:
            return ir.UpstreamProtocol.HTTP2, h2_upgrade
        return ir.UpstreamProtocol.HTTP1, f"{detail}: HTTP/1.1"
    if default is not None:
        return default, f"{detail}: using the default, {default.value}"
    if protocol is Protocol.UNSUPPORTED:
        return ir.UpstreamProtocol.DOWNSTREAM, f"{detail}: protocol detected from the client's"
    return ir.UpstreamProtocol.TCP, f"{detail}: {protocol.value} is proxied as TCP"


def decide_discovery(addresses: Iterable[str], *, dns: bool = False, eds: bool = False) -> Discovery:
    """``STRICT_DNS`` when asked to resolve names (``dns``) or any address is a name; else
    ``EDS`` for endpoints served from the index (``eds``), ``STATIC`` for fixed IPs."""
    if dns or not all(is_ip(a) for a in addresses):
        return "STRICT_DNS"
    return "EDS" if eds else "STATIC"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterPolicy:
    """How a frontend's policy shapes a cluster beyond where and how it connects (Istio's
    DestinationRule traffic policy); the defaults are Envoy's behaviour and Gateway API's."""

    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    lb_policy: ir.LbPolicy = "ROUND_ROBIN"
    hash_policy: ir.HashPolicy | None = None
    ring_size: int | None = None
    circuit_breaker: ir.CircuitBreaker | None = None
    outlier_detection: ir.OutlierDetection | None = None
    upstream_tls: ir.UpstreamTls | None = None
    max_requests_per_connection: int | None = None
    health_checks: tuple[ir.HealthCheck, ...] = ()
    tcp_keepalive: ir.TcpKeepalive | None = None
    http_options: ir.UpstreamHttpOptions | None = None


NO_POLICY = ClusterPolicy()

_ALPN: dict[ir.UpstreamProtocol, tuple[str, ...]] = {
    ir.UpstreamProtocol.HTTP2: ("h2",),
    ir.UpstreamProtocol.HTTP1: ("http/1.1",),
}


_MAY_SPEAK_HTTP2 = (ir.UpstreamProtocol.HTTP2, ir.UpstreamProtocol.DOWNSTREAM)
"""HTTP/2 always, or whenever the client speaks it."""


def alpn_for(protocol: ir.UpstreamProtocol) -> tuple[str, ...]:
    """What a TLS-originating cluster offers in ALPN: ``h2`` for HTTP/2 (gRPC servers refuse a
    TLS connection without it), ``http/1.1`` for HTTP/1.1. None for TCP (the bytes are not HTTP)
    nor for the client's protocol (Envoy picks per request; one fixed offer could contradict it)."""
    return _ALPN.get(protocol, ())


def build_cluster(
    *,
    name: str,
    source: ir.ObjectRef,
    protocol: tuple[ir.UpstreamProtocol, str],
    endpoints: tuple[ir.LbEndpoint, ...],
    discovery: Discovery = "EDS",
    endpoint_key: ir.EndpointKey | None = None,
    policy: ClusterPolicy = NO_POLICY,
) -> ir.Cluster:
    """The one constructor of ``ir.Cluster``. ``protocol`` is a ``decide_upstream_protocol``
    answer, its reason prefixed here with ``source``; ``endpoint_key`` is kept only for EDS
    (a DNS or static cluster carries its endpoints itself, so the endpoint fast path skips it).
    gRPC health checks are kept only on HTTP/2 clusters, the only ones Envoy checks over gRPC.
    A TLS policy that names no ALPN gets the protocol's (``alpn_for``). A cluster that may speak
    HTTP/2 gets ``DEFAULT_H2_KEEPALIVE`` (and ``DEFAULT_H2_IDLE_TIMEOUT_S`` unless the policy sets an
    idle timeout) unless the policy sets a keepalive."""
    upstream, reason = protocol
    checks = policy.health_checks
    if upstream is not ir.UpstreamProtocol.HTTP2 and any(c.kind == "grpc" for c in checks):
        # Envoy rejects the whole cluster otherwise; the frontend reports it (it knows the field).
        checks = tuple(c for c in checks if c.kind != "grpc")
    tls = policy.upstream_tls
    if tls is not None and not tls.alpn:
        tls = replace(tls, alpn=alpn_for(upstream))
    http = policy.http_options
    if upstream in _MAY_SPEAK_HTTP2 and (http is None or http.h2_keepalive is None):
        http = http or ir.UpstreamHttpOptions()
        idle = DEFAULT_H2_IDLE_TIMEOUT_S if http.idle_timeout_s is None else http.idle_timeout_s
        http = replace(http, h2_keepalive=DEFAULT_H2_KEEPALIVE, idle_timeout_s=idle)
    return ir.Cluster(
        name=name,
        discovery=discovery,
        upstream_protocol=upstream,
        protocol_reason=f"{source} {reason}",
        endpoints=endpoints,
        endpoint_key=endpoint_key if discovery == "EDS" else None,
        connect_timeout_s=policy.connect_timeout_s,
        lb_policy=policy.lb_policy,
        hash_policy=policy.hash_policy,
        ring_size=policy.ring_size,
        circuit_breaker=policy.circuit_breaker,
        outlier_detection=policy.outlier_detection,
        upstream_tls=tls,
        max_requests_per_connection=policy.max_requests_per_connection,
        health_checks=checks,
        tcp_keepalive=policy.tcp_keepalive,
        http_options=http,
        source=source,
    )
