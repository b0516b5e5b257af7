"""DestinationRule ``connectionPool`` on Istio clusters (Istio's ``applyConnectionPool`` and
``applyTCPKeepalive``): TCP keepalive, connection lifetime and idle timeout, HTTP/2 streams and
PINGs; the default HTTP/2 keepalive where no rule sets one; and the TCP proxy limits of a tcp route.
Each configuration is also loaded by the real Envoy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from meshxds import ir
from meshxds.identity import ProxyIdentity
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.testing.envoy_validate import envoy_validate
from meshxds.translators.istio import IstioConfig, IstioTranslator
from meshxds.translators.upstream import DEFAULT_H2_IDLE_TIMEOUT_S, DEFAULT_H2_KEEPALIVE
from meshxds.xds.resources import HTTP_PROTOCOL_OPTIONS_KEY, build_cluster

SELECTOR = {"istio": "ingressgateway"}
GRPC = "outbound|9000||api.default.svc.cluster.local"
HTTP = "outbound|8000||api.default.svc.cluster.local"
DB = "outbound|5432||db.default.svc.cluster.local"


def _service(name: str, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": ports},
    }


def _rule(host: str, traffic_policy: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": host, "namespace": "default"},
        "spec": {"host": host, "trafficPolicy": traffic_policy},
    }


def _config(*rules: dict[str, Any], tcp_route: list[dict[str, Any]] | None = None) -> IstioConfig:
    """A gateway with an HTTP server routing to api's gRPC and HTTP ports, and a TCP server
    routing to ``tcp_route`` (default: db)."""
    docs: list[dict[str, Any]] = [
        _service("api", [{"name": "grpc", "port": 9000}, {"name": "http", "port": 8000}]),
        _service("db", [{"name": "tcp-pg", "port": 5432}]),
        _service("bare", [{"name": "tcp", "port": 5432}]),
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
            "spec": {
                "selector": SELECTOR,
                "servers": [
                    {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]},
                    {"port": {"number": 5432, "name": "tcp", "protocol": "TCP"}, "hosts": ["*"]},
                ],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "all", "namespace": "default"},
            "spec": {
                "hosts": ["*"],
                "gateways": ["gw"],
                "http": [
                    {
                        "match": [{"uri": {"prefix": "/grpc"}}],
                        "route": [{"destination": {"host": "api", "port": {"number": 9000}}}],
                    },
                    {"route": [{"destination": {"host": "api", "port": {"number": 8000}}}]},
                ],
                "tcp": [{"route": tcp_route or [{"destination": {"host": "db", "port": {"number": 5432}}}]}],
            },
        },
        *rules,
    ]
    resources = parse_documents(SourcedDocument(path="m.yaml", index=i, body=d) for i, d in enumerate(docs))
    return IstioTranslator(resources).config_for(
        ProxyIdentity.of(namespace="default", labels=SELECTOR), sidecar=False
    )


def _clusters(config: IstioConfig) -> dict[str, ir.Cluster]:
    return {c.name: c for c in config.config.clusters}


def _protocol_options(cluster: ir.Cluster) -> http_protocol_options_pb2.HttpProtocolOptions:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    build_cluster(cluster).typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    return options


def _tcp_chain(config: IstioConfig) -> ir.FilterChain:
    (listener,) = [lis for lis in config.config.listeners if lis.port == 5432]
    (chain,) = listener.chains
    return chain


POOL: dict[str, Any] = {
    "connectionPool": {
        "tcp": {
            "tcpKeepalive": {"probes": 3, "time": "1.5s", "interval": "75s"},
            "maxConnectionDuration": "1h",
            "idleTimeout": "10m",
        },
        "http": {
            "idleTimeout": "90s",
            "maxConcurrentStreams": 100,
            "http2KeepAlive": {"interval": "30s", "timeout": "5s"},
        },
    }
}


def test_every_connection_pool_field_reaches_the_grpc_cluster_and_envoy_accepts_it(tmp_path: Path) -> None:
    config = _config(_rule("api", POOL))
    assert not config.errors and not config.warnings
    grpc = _clusters(config)[GRPC]
    # Whole seconds, truncated as Istio does (1.5s → 1).
    assert grpc.tcp_keepalive == ir.TcpKeepalive(probes=3, time_s=1, interval_s=75)
    assert grpc.http_options == ir.UpstreamHttpOptions(
        idle_timeout_s=90.0,
        max_connection_duration_s=3600.0,
        h2_max_concurrent_streams=100,
        h2_keepalive=ir.Http2Keepalive(interval_s=30.0, timeout_s=5.0),
    )
    out = build_cluster(grpc)
    assert isinstance(out, cluster_pb2.Cluster)
    keepalive = out.upstream_connection_options.tcp_keepalive
    assert (keepalive.keepalive_probes.value, keepalive.keepalive_time.value) == (3, 1)
    assert keepalive.keepalive_interval.value == 75
    options = _protocol_options(grpc)
    common = options.common_http_protocol_options
    assert (common.idle_timeout.seconds, common.max_connection_duration.seconds) == (90, 3600)
    h2 = options.explicit_http_config.http2_protocol_options
    assert h2.max_concurrent_streams.value == 100
    assert (h2.connection_keepalive.interval.seconds, h2.connection_keepalive.timeout.seconds) == (30, 5)
    result = envoy_validate(config.config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_http2_settings_stay_off_an_http1_cluster_which_keeps_the_common_ones() -> None:
    options = _protocol_options(_clusters(_config(_rule("api", POOL)))[HTTP])
    assert options.explicit_http_config.HasField("http_protocol_options")
    assert not options.explicit_http_config.HasField("http2_protocol_options")
    assert options.common_http_protocol_options.idle_timeout.seconds == 90
    assert options.common_http_protocol_options.max_connection_duration.seconds == 3600


def test_tcp_idle_timeout_is_the_connections_when_http_sets_none() -> None:
    rule = _rule("api", {"connectionPool": {"tcp": {"idleTimeout": "10m"}, "http": {"maxRetries": 1}}})
    grpc = _clusters(_config(rule))[GRPC]
    assert grpc.http_options is not None and grpc.http_options.idle_timeout_s == 600.0
    # Only the idle timeout came from the rule; the keepalive is still the default.
    assert grpc.http_options.h2_keepalive == DEFAULT_H2_KEEPALIVE


def test_a_zero_max_concurrent_streams_is_unset_as_in_istio() -> None:
    rule = _rule("api", {"connectionPool": {"http": {"maxConcurrentStreams": 0}}})
    grpc = _clusters(_config(rule))[GRPC]
    assert grpc.http_options == ir.UpstreamHttpOptions(
        h2_keepalive=DEFAULT_H2_KEEPALIVE, idle_timeout_s=DEFAULT_H2_IDLE_TIMEOUT_S
    )


def test_the_default_keepalive_is_on_http2_clusters_only() -> None:
    found = _clusters(_config())
    assert found[GRPC].http_options == ir.UpstreamHttpOptions(
        h2_keepalive=DEFAULT_H2_KEEPALIVE, idle_timeout_s=DEFAULT_H2_IDLE_TIMEOUT_S
    )
    pings = _protocol_options(found[GRPC]).explicit_http_config.http2_protocol_options.connection_keepalive
    assert (pings.interval.seconds, pings.timeout.seconds) == (300, 20)
    assert found[HTTP].http_options is None and found[DB].http_options is None
    for name in (HTTP, DB):
        assert HTTP_PROTOCOL_OPTIONS_KEY not in build_cluster(found[name]).typed_extension_protocol_options


def test_a_port_level_keepalive_replaces_the_top_level_one_on_its_port_only() -> None:
    port_level = {
        "port": {"number": 9000},
        "connectionPool": {"http": {"http2KeepAlive": {"interval": "2s", "timeout": "1s"}}},
    }
    rule = _rule(
        "api",
        {"connectionPool": {"http": {"idleTimeout": "90s"}}, "portLevelSettings": [port_level]},
    )
    found = _clusters(_config(rule))
    # Istio replaces whole sections: the port's connectionPool has no idleTimeout.
    assert found[GRPC].http_options == ir.UpstreamHttpOptions(
        h2_keepalive=ir.Http2Keepalive(interval_s=2.0, timeout_s=1.0)
    )
    assert found[HTTP].http_options == ir.UpstreamHttpOptions(idle_timeout_s=90.0)


def test_a_sub_second_tcp_keepalive_time_is_left_out_with_a_warning() -> None:
    rule = _rule("db", {"connectionPool": {"tcp": {"tcpKeepalive": {"time": "500ms", "interval": "2s"}}}})
    config = _config(rule)
    assert _clusters(config)[DB].tcp_keepalive == ir.TcpKeepalive(interval_s=2)
    (warning,) = [str(w) for w in config.warnings]
    assert "DestinationRule/default/db" in warning and "connectionPool.tcp.tcpKeepalive.time" in warning
    assert "500ms" in warning


def test_tcp_idle_timeout_and_max_connection_duration_bound_the_tcp_proxy(tmp_path: Path) -> None:
    rule = _rule("db", {"connectionPool": {"tcp": {"idleTimeout": "30m", "maxConnectionDuration": "8h"}}})
    config = _config(rule)
    assert _tcp_chain(config).tcp_options == ir.TcpProxyOptions(
        idle_timeout_s=1800.0, max_connection_duration_s=28800.0
    )
    result = envoy_validate(config.config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        pytest.param("db", ir.TcpProxyOptions(idle_timeout_s=0.0), id="the first destination's rule"),
        pytest.param("bare", None, id="the first destination has no rule"),
    ],
)
def test_a_weighted_tcp_route_takes_the_first_destinations_limits(
    first: str, expected: ir.TcpProxyOptions | None
) -> None:
    second = "bare" if first == "db" else "db"
    route = [
        {"destination": {"host": first, "port": {"number": 5432}}, "weight": 60},
        {"destination": {"host": second, "port": {"number": 5432}}, "weight": 40},
    ]
    rule = _rule("db", {"connectionPool": {"tcp": {"idleTimeout": "0s"}}})
    chain = _tcp_chain(_config(rule, tcp_route=route))
    assert [b.cluster for b in chain.tcp_backends] == [
        f"outbound|5432||{first}.default.svc.cluster.local",
        f"outbound|5432||{second}.default.svc.cluster.local",
    ]
    assert chain.tcp_options == expected


def test_without_a_rule_the_tcp_proxy_keeps_envoys_defaults() -> None:
    assert _tcp_chain(_config()).tcp_options is None
