"""kgateway HTTPListenerPolicy timeouts and ListenerPolicy onto a Gateway's listeners: which port
gets what (sectionName, perPort over default, HTTP settings on HTTP listeners only), which
policy wins a conflict and what is reported, and the Envoy listener it becomes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshxds import ir
from meshxds.model.manifests import ResourceSet
from meshxds.pipeline import translate
from meshxds.sources.files import read_directory
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs, to_yaml
from meshxds.xds.resources import build_listener

NS = "gateway-system"


def gateway_ref(section: str | None = None, *, kind: str = "Gateway", name: str = "http") -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "gateway.networking.k8s.io", "kind": kind, "name": name}
    if section is not None:
        ref["sectionName"] = section
    return ref


def policy(kind: str, name: str, spec: dict[str, Any], created: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "gateway.kgateway.dev/v1alpha1", "kind": kind, "metadata": meta, "spec": spec}


def tcp_route(port: int) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"ports": [{"name": "tcp", "port": 5432}]},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "TCPRoute",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {
                "parentRefs": [{"name": "http", "namespace": NS, "sectionName": "tcp"}],
                "rules": [{"backendRefs": [{"name": "db", "port": 5432}]}],
            },
        },
    ]


def read(tmp_path: Path, *docs: dict[str, Any]) -> ResourceSet:
    base = gateway_api_docs(
        [
            gateway_listener(8000, name="a"),
            gateway_listener(8001, name="b"),
            gateway_listener(8001, name="b2", hostname="b2.example"),
            gateway_listener(9000, name="tcp", protocol="TCP"),
        ]
    )
    base += routed_service_docs("echo", upstream_port=9999, hostnames=["echo.example"])
    base += tcp_route(9000)
    (tmp_path / "all.yaml").write_text(to_yaml([*base, *docs]))
    return read_directory(tmp_path)


def listeners(tmp_path: Path, *docs: dict[str, Any]) -> tuple[dict[int, ir.Listener], tuple[str, ...]]:
    result = translate(read(tmp_path, *docs)).gateway_api
    ((_, config),) = result.gateways.items()
    assert config.validate() == []
    return {lis.port: lis for lis in config.listeners}, result.warnings


def test_http_listener_policy_timeouts_reach_every_http_listener(tmp_path: Path) -> None:
    found, warnings = listeners(
        tmp_path,
        policy(
            "HTTPListenerPolicy",
            "t",
            {"targetRefs": [gateway_ref()], "streamIdleTimeout": "1s", "idleTimeout": "2m"},
        ),
    )
    assert warnings == ()
    expected = ir.DownstreamHttpOptions(stream_idle_timeout_s=1.0, idle_timeout_s=120.0)
    assert found[8000].http_options == expected
    assert found[8001].http_options == expected
    assert found[9000].http_options is None  # a TCP proxy has no HTTP connection manager


def test_section_name_picks_the_port_of_that_listener(tmp_path: Path) -> None:
    found, warnings = listeners(
        tmp_path,
        policy("HTTPListenerPolicy", "t", {"targetRefs": [gateway_ref("b2")], "streamIdleTimeout": "3s"}),
    )
    assert warnings == ()
    assert found[8000].http_options is None
    # b and b2 share port 8001, so one Envoy listener, one connection manager.
    assert found[8001].http_options == ir.DownstreamHttpOptions(stream_idle_timeout_s=3.0)


def test_listener_policy_default_and_per_port_replacing_it(tmp_path: Path) -> None:
    spec = {
        "targetRefs": [gateway_ref()],
        "default": {
            "perConnectionBufferLimitBytes": 32768,
            "tcpKeepalive": {"keepAliveTime": "7s", "keepAliveInterval": "2s", "keepAliveProbes": 3},
            "httpSettings": {
                "streamIdleTimeout": "10s",
                "idleTimeout": "1h",
                "maxRequestsPerConnection": 100,
                "maxHeadersCount": 30,
                "http2ProtocolOptions": {
                    "maxConcurrentStreams": 77,
                    "initialStreamWindowSize": "64Ki",
                    "initialConnectionWindowSize": "1Mi",
                },
            },
        },
        "perPort": [
            {
                "port": 8001,
                "listener": {
                    "perConnectionBufferLimitBytes": 65536,
                    "httpSettings": {
                        "maxRequestsPerConnection": 0,
                        "http2ProtocolOptions": {"maxConcurrentStreams": 33, "allowConnect": False},
                    },
                },
            }
        ],
    }
    found, warnings = listeners(tmp_path, policy("ListenerPolicy", "lp", spec))
    assert warnings == ()
    keepalive = ir.TcpKeepalive(probes=3, time_s=7, interval_s=2)
    assert found[8000].http_options == ir.DownstreamHttpOptions(
        stream_idle_timeout_s=10.0,
        idle_timeout_s=3600.0,
        max_requests_per_connection=100,
        max_headers_count=30,
        h2_max_concurrent_streams=77,
        h2_initial_stream_window_size=65536,
        h2_initial_connection_window_size=1048576,
    )
    assert (found[8000].per_connection_buffer_limit_bytes, found[8000].tcp_keepalive) == (32768, keepalive)
    # perPort replaces default entirely: nothing of it is inherited (maxRequestsPerConnection 0
    # is kgateway's "unlimited", Envoy's unset).
    assert found[8001].http_options == ir.DownstreamHttpOptions(
        h2_max_concurrent_streams=33, h2_allow_connect=False
    )
    assert (found[8001].per_connection_buffer_limit_bytes, found[8001].tcp_keepalive) == (65536, None)
    # The TCP listener gets the listener-level settings, not the HTTP ones.
    assert found[9000].http_options is None
    assert (found[9000].per_connection_buffer_limit_bytes, found[9000].tcp_keepalive) == (32768, keepalive)


def test_a_listener_specific_policy_beats_a_gateway_wide_one_then_the_oldest_wins(tmp_path: Path) -> None:
    wide = policy(
        "ListenerPolicy",
        "wide",
        {
            "targetRefs": [gateway_ref()],
            "default": {"httpSettings": {"streamIdleTimeout": "5s", "idleTimeout": "9s"}},
        },
        "2020-01-01T00:00:00Z",
    )
    specific = policy(
        "HTTPListenerPolicy",
        "specific",
        {"targetRefs": [gateway_ref("a")], "streamIdleTimeout": "1s"},
        "2025-01-01T00:00:00Z",
    )
    older = policy(
        "ListenerPolicy",
        "older",
        {"targetRefs": [gateway_ref()], "default": {"perConnectionBufferLimitBytes": 1024}},
        "2019-01-01T00:00:00Z",
    )
    newer = policy(
        "ListenerPolicy",
        "newer",
        {
            "targetRefs": [gateway_ref()],
            "default": {"perConnectionBufferLimitBytes": 2048, "httpSettings": {"idleTimeout": "9s"}},
        },
        "2024-01-01T00:00:00Z",
    )
    found, warnings = listeners(tmp_path, newer, specific, wide, older)
    # Field by field: the specific policy's streamIdleTimeout, the wide one's idleTimeout, the
    # older buffer limit; newer's idleTimeout equals what applies, so no conflict there.
    assert found[8000].http_options == ir.DownstreamHttpOptions(stream_idle_timeout_s=1.0, idle_timeout_s=9.0)
    assert found[8001].http_options == ir.DownstreamHttpOptions(stream_idle_timeout_s=5.0, idle_timeout_s=9.0)
    assert {lis.per_connection_buffer_limit_bytes for lis in found.values()} == {1024}
    assert len(warnings) == 4, warnings  # wide's timeout on 8000; newer's limit on 8000, 8001, 9000
    assert any(
        w.startswith(
            "ListenerPolicy/gateway-system/wide: spec.default.httpSettings.streamIdleTimeout: "
            "not applied on port 8000"
        )
        and "HTTPListenerPolicy/gateway-system/specific, which names listener a" in w
        for w in warnings
    ), warnings
    assert any(
        w.startswith(
            "ListenerPolicy/gateway-system/newer: spec.default.perConnectionBufferLimitBytes: "
            "not applied on port 9000"
        )
        and "the older ListenerPolicy/gateway-system/older" in w
        for w in warnings
    ), warnings


def test_a_per_port_entry_of_one_policy_replaces_the_default_of_another(tmp_path: Path) -> None:
    with_default = policy(
        "ListenerPolicy",
        "d",
        {"targetRefs": [gateway_ref()], "default": {"perConnectionBufferLimitBytes": 1024}},
        "2019-01-01T00:00:00Z",
    )
    with_port = policy(
        "ListenerPolicy",
        "p",
        {
            "targetRefs": [gateway_ref()],
            "perPort": [{"port": 8000, "listener": {"httpSettings": {"idleTimeout": "4s"}}}],
        },
        "2024-01-01T00:00:00Z",
    )
    found, warnings = listeners(tmp_path, with_default, with_port)
    assert found[8000].per_connection_buffer_limit_bytes is None
    assert found[8000].http_options == ir.DownstreamHttpOptions(idle_timeout_s=4.0)
    assert found[8001].per_connection_buffer_limit_bytes == 1024
    assert warnings == (
        "ListenerPolicy/gateway-system/d: spec.default: not applied on port 8000 (listener a): a "
        "ListenerPolicy's perPort entry for the port replaces every default there",
    )


def test_policies_of_the_same_age_are_ranked_by_kind_then_name(tmp_path: Path) -> None:
    first = policy(
        "ListenerPolicy",
        "a",
        {"targetRefs": [gateway_ref()], "default": {"perConnectionBufferLimitBytes": 1}},
    )
    second = policy(
        "ListenerPolicy",
        "b",
        {"targetRefs": [gateway_ref()], "default": {"perConnectionBufferLimitBytes": 2}},
    )
    found, warnings = listeners(tmp_path, second, first)
    assert {lis.per_connection_buffer_limit_bytes for lis in found.values()} == {1}
    assert len(warnings) == 3, warnings  # b loses on each of the three ports
    assert all(
        w.startswith(
            "ListenerPolicy/gateway-system/b: spec.default.perConnectionBufferLimitBytes: not applied"
        )
        and w.endswith(
            "ListenerPolicy/gateway-system/a sets it and comes first (as old; by kind, then name) "
            "(spec.default.perConnectionBufferLimitBytes)"
        )
        for w in warnings
    ), warnings


def test_what_cannot_apply_is_reported(tmp_path: Path) -> None:
    lp = policy(
        "ListenerPolicy",
        "lp",
        {
            "targetRefs": [
                gateway_ref(),
                gateway_ref("nope"),
                gateway_ref("tcp"),
                gateway_ref(kind="HTTPRoute", name="echo"),
                gateway_ref(name="missing"),
            ],
            "perPort": [
                {"port": 7777, "listener": {}},
                {"port": 9000, "listener": {"httpSettings": {"idleTimeout": "1s"}}},
                {"port": 9000, "listener": {}},
            ],
        },
    )
    found, warnings = listeners(tmp_path, lp)
    assert found[9000].http_options is None
    prefix = "ListenerPolicy/gateway-system/lp: "
    assert sorted(warnings) == sorted(
        [
            f"{prefix}spec.targetRefs[1].sectionName: Gateway gateway-system/http has no listener 'nope'; "
            "not applied",
            f"{prefix}spec.perPort[0].port: Gateway gateway-system/http has no listener on port 7777; "
            "not applied there",
            f"{prefix}spec.perPort[2].port: port 9000 is given twice; the first entry applies",
            f"{prefix}spec.perPort[1].listener.httpSettings.idleTimeout: port 9000 (listener tcp) is not "
            "an HTTP(S) listener; ignored there",
            f"{prefix}spec.targetRefs[3]: kind gateway.networking.k8s.io/HTTPRoute is not supported (give a "
            "gateway.networking.k8s.io Gateway); ignored",
            f"{prefix}spec.targetRefs[4]: Gateway gateway-system/missing not found",
        ]
    )


def test_envoy_listener_carries_the_settings() -> None:
    table = ir.RouteTable(name="http.8000", virtual_hosts=())
    listener = ir.Listener(
        name="l",
        address="127.0.0.1",
        port=8000,
        chains=(ir.FilterChain(name="l", route_table=table),),
        stat_prefix="l",
        http_options=ir.DownstreamHttpOptions(
            stream_idle_timeout_s=1.0,
            idle_timeout_s=2.0,
            max_requests_per_connection=10,
            max_headers_count=20,
            h2_max_concurrent_streams=77,
            h2_initial_stream_window_size=65536,
            h2_initial_connection_window_size=1048576,
            h2_allow_connect=False,
        ),
        per_connection_buffer_limit_bytes=32768,
        tcp_keepalive=ir.TcpKeepalive(time_s=7),
    )
    out = build_listener(listener)
    assert out.per_connection_buffer_limit_bytes.value == 32768
    assert [(o.description, o.level, o.name, o.int_value) for o in out.socket_options] == [
        ("SO_KEEPALIVE", 1, 9, 1),
        ("TCP_KEEPIDLE", 6, 4, 7),
    ]
    hcm = hcm_pb2.HttpConnectionManager()
    out.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    assert hcm.stream_idle_timeout.seconds == 1
    common = hcm.common_http_protocol_options
    assert (common.idle_timeout.seconds, common.max_requests_per_connection.value) == (2, 10)
    assert common.max_headers_count.value == 20
    h2 = hcm.http2_protocol_options
    assert (h2.max_concurrent_streams.value, h2.initial_stream_window_size.value) == (77, 65536)
    assert (h2.initial_connection_window_size.value, h2.allow_connect) == (1048576, False)
    # Without options, the connection manager is as before: WebSocket over HTTP/2 on.
    plain_listener = build_listener(replace(listener, http_options=None, tcp_keepalive=None))
    assert not plain_listener.socket_options
    plain = hcm_pb2.HttpConnectionManager()
    plain_listener.filter_chains[0].filters[0].typed_config.Unpack(plain)
    assert plain.http2_protocol_options.allow_connect is True
    assert not plain.HasField("common_http_protocol_options") and not plain.HasField("stream_idle_timeout")
