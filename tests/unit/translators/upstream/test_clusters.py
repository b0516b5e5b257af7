"""The upstream layer's decisions and its one cluster constructor: every frontend's protocol,
discovery and cluster come from here, with the reason in words."""

from __future__ import annotations

import pytest

from meshxds import ir
from meshxds.translators.protocol import ProtocolDecision, decide_port_protocol
from meshxds.translators.upstream import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_H2_IDLE_TIMEOUT_S,
    DEFAULT_H2_KEEPALIVE,
    ClusterPolicy,
    alpn_for,
    build_cluster,
    decide_discovery,
    decide_upstream_protocol,
)

P = ir.UpstreamProtocol


def _port(name: str | None) -> ProtocolDecision:
    return decide_port_protocol(port_name=name, field_prefix="spec.ports[0]")


@pytest.mark.parametrize(
    ("name", "default", "expected", "reason_ends"),
    [
        pytest.param("grpc", None, P.HTTP2, "GRPC needs HTTP/2", id="a gRPC port is HTTP/2"),
        pytest.param("http2", P.HTTP1, P.HTTP2, "HTTP2 needs HTTP/2", id="a default never downgrades HTTP/2"),
        pytest.param("http", None, P.HTTP1, "HTTP/1.1", id="an HTTP port is HTTP/1.1"),
        pytest.param(
            None, None, P.DOWNSTREAM, "detected from the client's", id="istio: undecided is sniffed"
        ),
        pytest.param("tcp", None, P.TCP, "TCP is proxied as TCP", id="istio: TCP is TCP"),
        pytest.param("mongo", None, P.TCP, "Mongo is proxied as TCP", id="istio: Mongo is TCP"),
        pytest.param(
            None, P.HTTP1, P.HTTP1, "using the default, HTTP/1.1", id="gateway api: HTTPRoute default"
        ),
        pytest.param("https", P.TCP, P.TCP, "using the default, TCP", id="gateway api: TCPRoute default"),
    ],
)
def test_decide_upstream_protocol(
    name: str | None, default: ir.UpstreamProtocol | None, expected: ir.UpstreamProtocol, reason_ends: str
) -> None:
    protocol, reason = decide_upstream_protocol(_port(name), default=default)
    assert protocol is expected
    assert reason.endswith(reason_ends)
    assert reason.startswith("spec.ports[0]") or name is None


def test_the_clients_protocol_wins_over_everything_with_the_policys_reason() -> None:
    assert decide_upstream_protocol(_port("grpc"), client_protocol="policy says so") == (
        P.DOWNSTREAM,
        "policy says so",
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("http", P.HTTP2, id="an HTTP port is upgraded"),
        pytest.param("tcp", P.TCP, id="a TCP port is not upgraded"),
        pytest.param(None, P.DOWNSTREAM, id="an undecided port is not upgraded"),
    ],
)
def test_h2_upgrade_applies_to_http_ports_only(name: str | None, expected: ir.UpstreamProtocol) -> None:
    protocol, reason = decide_upstream_protocol(_port(name), h2_upgrade="upgrade policy")
    assert protocol is expected
    assert (reason == "upgrade policy") is (expected is P.HTTP2)


@pytest.mark.parametrize(
    ("addresses", "dns", "eds", "expected"),
    [
        pytest.param(["10.0.0.1", "fd00::1"], False, False, "STATIC", id="fixed IPs are STATIC"),
        pytest.param(["10.0.0.1", "db.example.com"], False, False, "STRICT_DNS", id="a name is resolved"),
        pytest.param(["10.0.0.1"], False, True, "EDS", id="IPs from the index are EDS"),
        pytest.param(["db.example.com"], False, True, "STRICT_DNS", id="a name beats the index"),
        pytest.param(["10.0.0.1"], True, True, "STRICT_DNS", id="asked to resolve"),
        pytest.param([], False, True, "EDS", id="no endpoints yet: EDS"),
    ],
)
def test_decide_discovery(addresses: list[str], dns: bool, eds: bool, expected: str) -> None:
    assert decide_discovery(addresses, dns=dns, eds=eds) == expected


SOURCE = ir.ObjectRef(kind="Service", namespace="default", name="web")
KEY = ir.EndpointKey(namespace="default", service="web", port_name="http")
ENDPOINTS = (ir.LbEndpoint(address="10.0.0.1", port=8080),)


def test_build_cluster_prefixes_the_reason_with_its_source_and_keeps_the_key_for_eds() -> None:
    cluster = build_cluster(
        name="outbound|80||web.default.svc.cluster.local",
        source=SOURCE,
        protocol=(P.HTTP1, "spec.ports[0].name 'http' starts with 'http': HTTP/1.1"),
        endpoints=ENDPOINTS,
        endpoint_key=KEY,
    )
    assert cluster == ir.Cluster(
        name="outbound|80||web.default.svc.cluster.local",
        discovery="EDS",
        upstream_protocol=P.HTTP1,
        protocol_reason="Service/default/web spec.ports[0].name 'http' starts with 'http': HTTP/1.1",
        endpoints=ENDPOINTS,
        endpoint_key=KEY,
        connect_timeout_s=DEFAULT_CONNECT_TIMEOUT_S,
        source=SOURCE,
    )


@pytest.mark.parametrize("discovery", ["STATIC", "STRICT_DNS"])
def test_a_cluster_that_carries_its_endpoints_has_no_endpoint_key(discovery: str) -> None:
    # The endpoint fast path recomputes load assignments by key: only EDS clusters have one.
    cluster = build_cluster(
        name="c",
        source=SOURCE,
        protocol=(P.TCP, "r"),
        endpoints=ENDPOINTS,
        discovery=discovery,  # type: ignore[arg-type]
        endpoint_key=KEY,
    )
    assert cluster.endpoint_key is None
    assert cluster.discovery == discovery


def test_build_cluster_applies_the_frontends_policy() -> None:
    policy = ClusterPolicy(
        connect_timeout_s=2.5,
        lb_policy="RING_HASH",
        hash_policy=ir.HashPolicy(kind="header", name="x-user"),
        ring_size=1024,
        circuit_breaker=ir.CircuitBreaker(max_connections=10),
        outlier_detection=ir.OutlierDetection(consecutive_5xx=3),
        upstream_tls=ir.UpstreamTls(sni="web"),
        max_requests_per_connection=1,
    )
    cluster = build_cluster(name="c", source=SOURCE, protocol=(P.HTTP2, "r"), endpoints=(), policy=policy)
    assert (
        cluster.connect_timeout_s,
        cluster.lb_policy,
        cluster.hash_policy,
        cluster.ring_size,
        cluster.circuit_breaker,
        cluster.outlier_detection,
        cluster.upstream_tls,
        cluster.max_requests_per_connection,
    ) == (
        policy.connect_timeout_s,
        policy.lb_policy,
        policy.hash_policy,
        policy.ring_size,
        policy.circuit_breaker,
        policy.outlier_detection,
        ir.UpstreamTls(sni="web", alpn=("h2",)),  # ALPN from the upstream protocol
        policy.max_requests_per_connection,
    )


@pytest.mark.parametrize(
    ("protocol", "alpn"),
    [(P.HTTP2, ("h2",)), (P.HTTP1, ("http/1.1",)), (P.TCP, ()), (P.DOWNSTREAM, ())],
)
def test_a_tls_cluster_offers_its_upstream_protocols_alpn(protocol: P, alpn: tuple[str, ...]) -> None:
    policy = ClusterPolicy(upstream_tls=ir.UpstreamTls(sni="web"))
    cluster = build_cluster(name="c", source=SOURCE, protocol=(protocol, "r"), endpoints=(), policy=policy)
    assert cluster.upstream_tls is not None and cluster.upstream_tls.alpn == alpn
    assert alpn_for(protocol) == alpn


def test_a_policys_own_alpn_is_kept() -> None:
    policy = ClusterPolicy(upstream_tls=ir.UpstreamTls(sni="web", alpn=("custom",)))
    cluster = build_cluster(name="c", source=SOURCE, protocol=(P.HTTP2, "r"), endpoints=(), policy=policy)
    assert cluster.upstream_tls is not None and cluster.upstream_tls.alpn == ("custom",)


@pytest.mark.parametrize(
    ("protocol", "pings"),
    [(P.HTTP2, True), (P.DOWNSTREAM, True), (P.HTTP1, False), (P.TCP, False)],
)
def test_the_default_http2_keepalive_is_on_clusters_that_may_speak_http2_only(
    protocol: P, pings: bool
) -> None:
    cluster = build_cluster(name="c", source=SOURCE, protocol=(protocol, "r"), endpoints=())
    expected = (
        ir.UpstreamHttpOptions(h2_keepalive=DEFAULT_H2_KEEPALIVE, idle_timeout_s=DEFAULT_H2_IDLE_TIMEOUT_S)
        if pings
        else None
    )
    assert cluster.http_options == expected


def test_the_default_keepalive_stays_below_what_grpc_servers_police() -> None:
    # grpc-core and grpc-go strike a PING sooner than 5 minutes after the last one; 20 s is gRPC's
    # own keepalive timeout. Envoy needs a timeout of at least 1 ms.
    assert DEFAULT_H2_KEEPALIVE.interval_s is not None and DEFAULT_H2_KEEPALIVE.interval_s >= 300
    assert DEFAULT_H2_KEEPALIVE.timeout_s == 20
    # An idle connection is closed before its third PING (the strike that gets GOAWAY): at most
    # two intervals, even without the jitter Envoy adds.
    assert 2 * DEFAULT_H2_KEEPALIVE.interval_s >= DEFAULT_H2_IDLE_TIMEOUT_S


def test_a_policys_keepalive_replaces_the_default_and_its_other_options_are_kept() -> None:
    own = ir.Http2Keepalive(timeout_s=1.0, interval_s=5.0)
    policy = ClusterPolicy(http_options=ir.UpstreamHttpOptions(idle_timeout_s=9.0, h2_keepalive=own))
    cluster = build_cluster(name="c", source=SOURCE, protocol=(P.HTTP2, "r"), endpoints=(), policy=policy)
    assert cluster.http_options == ir.UpstreamHttpOptions(idle_timeout_s=9.0, h2_keepalive=own)
    # A policy without a keepalive gets the default beside its own options (its idle timeout too).
    policy = ClusterPolicy(http_options=ir.UpstreamHttpOptions(idle_timeout_s=9.0))
    cluster = build_cluster(name="c", source=SOURCE, protocol=(P.HTTP2, "r"), endpoints=(), policy=policy)
    assert cluster.http_options == ir.UpstreamHttpOptions(
        idle_timeout_s=9.0, h2_keepalive=DEFAULT_H2_KEEPALIVE
    )
