"""kgateway BackendConfigPolicy: the model, its translation onto the targeted clusters, and the
Envoy health checks it becomes (accepted by real Envoy)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import http_pb2

from meshxds import ir
from meshxds.errors import ManifestErrors
from meshxds.model.manifests import ResourceSet
from meshxds.pipeline import translate
from meshxds.sources.files import read_directory
from meshxds.testing.envoy_validate import envoy_validate
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs, to_yaml
from meshxds.translators.upstream import DEFAULT_H2_IDLE_TIMEOUT_S, DEFAULT_H2_KEEPALIVE
from meshxds.xds.resources import HTTP_PROTOCOL_OPTIONS_KEY, build_cluster

CLUSTER = "outbound|8080||echo.default.svc.cluster.local"
GRPC_CHECK = {"timeout": "1s", "interval": "500ms", "unhealthyThreshold": 2, "grpc": {"serviceName": "x"}}


def policy(spec: dict[str, Any], name: str = "p", created: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if created:
        meta["creationTimestamp"] = created
    return {
        "apiVersion": "gateway.kgateway.dev/v1alpha1",
        "kind": "BackendConfigPolicy",
        "metadata": meta,
        "spec": spec,
    }


def target(name: str = "echo", section: str | None = None, kind: str = "Service") -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "" if kind == "Service" else "gateway.kgateway.dev", "kind": kind}
    ref["name"] = name
    if section is not None:
        ref["sectionName"] = section
    return ref


def read(
    tmp_path: Path, *docs: dict[str, Any], app_protocol: str | None = "grpc", port_name: str = "grpc"
) -> ResourceSet:
    base = gateway_api_docs([gateway_listener(8000)]) + routed_service_docs(
        "echo", upstream_port=9000, hostnames=["echo.example"], port_name=port_name, app_protocol=app_protocol
    )
    (tmp_path / "all.yaml").write_text(to_yaml([*base, *docs]))
    return read_directory(tmp_path)


def clusters(resources: ResourceSet) -> tuple[dict[str, ir.Cluster], tuple[str, ...], ir.ProxyConfig]:
    result = translate(resources).gateway_api
    ((_, config),) = result.gateways.items()
    return {c.name: c for c in config.clusters}, result.warnings, config


def test_grpc_health_check_reaches_the_service_cluster(tmp_path: Path) -> None:
    found, warnings, _ = clusters(
        read(tmp_path, policy({"targetRefs": [target()], "connectTimeout": "2s", "healthCheck": GRPC_CHECK}))
    )
    assert warnings == ()
    cluster = found[CLUSTER]
    assert cluster.connect_timeout_s == 2.0
    assert cluster.health_checks == (
        ir.HealthCheck(
            kind="grpc",
            interval_s=0.5,
            timeout_s=1.0,
            unhealthy_threshold=2,
            healthy_threshold=1,
            service_name="x",
        ),
    )


@pytest.mark.parametrize(("section", "applies"), [("grpc", True), ("8080", True), ("other", False)])
def test_section_name_picks_a_port_by_name_or_number(tmp_path: Path, section: str, applies: bool) -> None:
    found, warnings, _ = clusters(
        read(tmp_path, policy({"targetRefs": [target(section=section)], "healthCheck": GRPC_CHECK}))
    )
    assert bool(found[CLUSTER].health_checks) is applies
    if not applies:
        assert any("spec.targetRefs[0].sectionName" in w and "no port 'other'" in w for w in warnings), (
            warnings
        )


def test_a_port_specific_policy_beats_a_whole_service_one_and_the_oldest_wins(tmp_path: Path) -> None:
    whole = policy({"targetRefs": [target()], "connectTimeout": "3s"}, name="whole")
    older = policy(
        {"targetRefs": [target(section="grpc")], "connectTimeout": "4s"}, "a-old", "2024-01-01T00:00:00Z"
    )
    newer = policy(
        {"targetRefs": [target(section="grpc")], "connectTimeout": "5s"}, "b-new", "2025-01-01T00:00:00Z"
    )
    found, warnings, _ = clusters(read(tmp_path, newer, whole, older))
    assert found[CLUSTER].connect_timeout_s == 4.0
    assert any("BackendConfigPolicy/default/b-new" in w and "a-old" in w for w in warnings), warnings


def test_unsupported_target_kind_and_missing_service_are_warnings(tmp_path: Path) -> None:
    gateway_ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "http"}
    found, warnings, _ = clusters(
        read(tmp_path, policy({"targetRefs": [gateway_ref, target("nope")], "healthCheck": GRPC_CHECK}))
    )
    assert found[CLUSTER].health_checks == ()
    assert any("targetRefs[0]" in w and "Gateway is not supported" in w for w in warnings), warnings
    assert any("targetRefs[1]" in w and "Service default/nope not found" in w for w in warnings), warnings


def test_unmodelled_fields_are_warned_not_dropped(tmp_path: Path) -> None:
    resources = read(tmp_path, policy({"targetRefs": [target()], "outlierDetection": {"interval": "1s"}}))
    assert any("spec.outlierDetection" in w and "not supported" in w for w in resources.warnings), (
        resources.warnings
    )


@pytest.mark.parametrize(
    ("check", "field", "message"),
    [
        (
            {"timeout": "1s", "interval": "0s", "grpc": {}},
            "spec.healthCheck",
            "interval must be greater than 0",
        ),
        ({"timeout": "1s", "interval": "1s"}, "spec.healthCheck", "exactly one of http and grpc"),
        (
            {"timeout": "1s", "interval": "1s", "grpc": {}, "http": {"path": "/"}},
            "spec.healthCheck",
            "exactly one",
        ),
        (
            {"timeout": "soon", "interval": "1s", "grpc": {}},
            "spec.healthCheck.timeout",
            "not a valid duration",
        ),
        (
            {"timeout": "1s", "interval": "1s", "healthyThreshold": 0, "grpc": {}},
            "healthyThreshold",
            "greater",
        ),
        (
            {"timeout": "1s", "interval": "1s", "http": {"path": "health"}},
            "spec.healthCheck.http.path",
            "match",
        ),
    ],
)
def test_invalid_health_checks_name_the_object_and_field(
    tmp_path: Path, check: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ManifestErrors) as caught:
        read(tmp_path, policy({"targetRefs": [target()], "healthCheck": check}))
    (error,) = caught.value.errors
    assert error.ref == "BackendConfigPolicy/default/p"
    assert field in error.field_path and message in error.message, (error.field_path, error.message)


def test_http_check_on_a_backend_and_on_an_http2_cluster(tmp_path: Path) -> None:
    backend = {
        "apiVersion": "gateway.kgateway.dev/v1alpha1",
        "kind": "Backend",
        "metadata": {"name": "static", "namespace": "default"},
        "spec": {"type": "Static", "static": {"hosts": [{"host": "127.0.0.1", "port": 9001}]}},
    }
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "static", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "http", "namespace": "gateway-system"}],
            "hostnames": ["static.example"],
            "rules": [
                {"backendRefs": [{"group": "gateway.kgateway.dev", "kind": "Backend", "name": "static"}]}
            ],
        },
    }
    http_check = {
        "timeout": "1s",
        "interval": "2s",
        "healthyThreshold": 2,
        "http": {"path": "/healthz", "host": "health.local", "method": "HEAD"},
    }
    found, warnings, config = clusters(
        read(
            tmp_path,
            backend,
            route,
            policy({"targetRefs": [target("static", kind="Backend"), target()], "healthCheck": http_check}),
            app_protocol="kubernetes.io/h2c",
            port_name="web",
        )
    )
    assert warnings == ()
    static = found["outbound|9001||static.default.backend.kgateway"]
    (check,) = static.health_checks
    assert (check.kind, check.path, check.host, check.method, check.healthy_threshold) == (
        "http",
        "/healthz",
        "health.local",
        "HEAD",
        2,
    )
    plain = build_cluster(static).health_checks[0]
    assert plain.http_health_check.codec_client_type == http_pb2.HTTP1
    h2 = build_cluster(found[CLUSTER]).health_checks[0]
    assert h2.http_health_check.codec_client_type == http_pb2.HTTP2
    assert (h2.interval.seconds, h2.timeout.seconds, h2.healthy_threshold.value) == (2, 1, 2)
    result = envoy_validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grpc_check_in_xds_is_accepted_by_envoy(tmp_path: Path) -> None:
    found, _, config = clusters(read(tmp_path, policy({"targetRefs": [target()], "healthCheck": GRPC_CHECK})))
    out = build_cluster(found[CLUSTER])
    assert isinstance(out, cluster_pb2.Cluster)
    (check,) = out.health_checks
    assert check.grpc_health_check.service_name == "x"
    # Envoy's 60 s pace for a cluster without traffic yet would hide a failure that long.
    assert check.no_traffic_interval == check.interval
    assert (check.interval.nanos, check.unhealthy_threshold.value, check.healthy_threshold.value) == (
        500_000_000,
        2,
        1,
    )
    result = envoy_validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_validation_can_fail_on_a_health_check(tmp_path: Path) -> None:
    """The validation above can fail: a zero interval (which the model refuses) is rejected."""
    _, _, config = clusters(read(tmp_path, policy({"targetRefs": [target()], "healthCheck": GRPC_CHECK})))
    bad = ir.HealthCheck(kind="grpc", interval_s=0.0, timeout_s=1.0)
    broken = [replace(c, health_checks=(bad,)) if c.name == CLUSTER else c for c in config.clusters]
    result = envoy_validate(replace(config, clusters=tuple(broken)), tmp_path)
    assert result.returncode != 0
    assert "interval" in result.stdout + result.stderr


def test_grpc_check_on_an_http1_port_is_left_out_and_reported(tmp_path: Path) -> None:
    """Envoy refuses a gRPC health check on a cluster without HTTP/2 (the whole cluster)."""
    found, warnings, config = clusters(
        read(
            tmp_path,
            policy({"targetRefs": [target()], "healthCheck": GRPC_CHECK}),
            app_protocol=None,
            port_name="web",
        )
    )
    assert found[CLUSTER].upstream_protocol is ir.UpstreamProtocol.HTTP1
    assert found[CLUSTER].health_checks == ()
    assert any("spec.healthCheck.grpc" in w and "port web" in w for w in warnings), warnings
    result = envoy_validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


CONNECTION_SPEC: dict[str, Any] = {
    "tcpKeepalive": {"keepAliveProbes": 3, "keepAliveTime": "30s", "keepAliveInterval": "1m"},
    "commonHttpProtocolOptions": {
        "idleTimeout": "90s",
        "maxStreamDuration": "500ms",
        "maxHeadersCount": 50,
        "maxRequestsPerConnection": 7,
    },
    "http2ProtocolOptions": {
        "maxConcurrentStreams": 100,
        "initialStreamWindowSize": "64Ki",
        "initialConnectionWindowSize": 1048576,
        "overrideStreamErrorOnInvalidHttpMessage": True,
        "connectionKeepalive": {"timeout": "5s", "interval": "30s", "connectionIdleInterval": "1m"},
    },
}


def test_connection_options_reach_xds_and_envoy_accepts_them(tmp_path: Path) -> None:
    found, warnings, config = clusters(read(tmp_path, policy({"targetRefs": [target()], **CONNECTION_SPEC})))
    assert warnings == ()
    cluster = found[CLUSTER]
    assert cluster.tcp_keepalive == ir.TcpKeepalive(probes=3, time_s=30, interval_s=60)
    assert cluster.http_options == ir.UpstreamHttpOptions(
        idle_timeout_s=90.0,
        max_stream_duration_s=0.5,
        max_headers_count=50,
        h2_max_concurrent_streams=100,
        h2_initial_stream_window_size=65536,
        h2_initial_connection_window_size=1048576,
        h2_keepalive=ir.Http2Keepalive(timeout_s=5.0, interval_s=30.0, connection_idle_interval_s=60.0),
        h2_stream_error_on_invalid_http_message=True,
    )
    out = build_cluster(cluster)
    keepalive = out.upstream_connection_options.tcp_keepalive
    assert (
        keepalive.keepalive_probes.value,
        keepalive.keepalive_time.value,
        keepalive.keepalive_interval.value,
    ) == (
        3,
        30,
        60,
    )
    options = http_protocol_options_pb2.HttpProtocolOptions()
    out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    common = options.common_http_protocol_options
    assert (
        common.idle_timeout.seconds,
        common.max_stream_duration.nanos,
        common.max_headers_count.value,
    ) == (
        90,
        500_000_000,
        50,
    )
    assert common.max_requests_per_connection.value == 7
    h2 = options.explicit_http_config.http2_protocol_options
    assert (h2.max_concurrent_streams.value, h2.initial_stream_window_size.value) == (100, 65536)
    assert h2.initial_connection_window_size.value == 1048576
    assert h2.override_stream_error_on_invalid_http_message.value is True
    pings = h2.connection_keepalive
    assert (pings.timeout.seconds, pings.interval.seconds, pings.connection_idle_interval.seconds) == (
        5,
        30,
        60,
    )
    result = envoy_validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_keepalive_with_only_a_timeout_replaces_the_default_and_sends_no_periodic_pings(
    tmp_path: Path,
) -> None:
    spec = {
        "http2ProtocolOptions": {"connectionKeepalive": {"timeout": "2s", "connectionIdleInterval": "10s"}}
    }
    found, warnings, config = clusters(read(tmp_path, policy({"targetRefs": [target()], **spec})))
    assert warnings == ()
    http = found[CLUSTER].http_options
    assert http is not None
    assert http.h2_keepalive == ir.Http2Keepalive(timeout_s=2.0, connection_idle_interval_s=10.0)
    options = http_protocol_options_pb2.HttpProtocolOptions()
    build_cluster(found[CLUSTER]).typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    pings = options.explicit_http_config.http2_protocol_options.connection_keepalive
    assert not pings.HasField("interval")
    assert (pings.timeout.seconds, pings.connection_idle_interval.seconds) == (2, 10)
    result = envoy_validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_without_a_policy_the_http2_cluster_has_the_default_keepalive_and_http1_none(tmp_path: Path) -> None:
    h2, _, _ = clusters(read(tmp_path))
    assert h2[CLUSTER].http_options == ir.UpstreamHttpOptions(
        h2_keepalive=DEFAULT_H2_KEEPALIVE, idle_timeout_s=DEFAULT_H2_IDLE_TIMEOUT_S
    )
    options = http_protocol_options_pb2.HttpProtocolOptions()
    build_cluster(h2[CLUSTER]).typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    pings = options.explicit_http_config.http2_protocol_options.connection_keepalive
    assert (pings.interval.seconds, pings.timeout.seconds) == (300, 20)
    (tmp_path / "h1").mkdir()
    h1, _, _ = clusters(read(tmp_path / "h1", app_protocol=None, port_name="web"))
    assert h1[CLUSTER].upstream_protocol is ir.UpstreamProtocol.HTTP1
    assert h1[CLUSTER].http_options is None
    assert HTTP_PROTOCOL_OPTIONS_KEY not in build_cluster(h1[CLUSTER]).typed_extension_protocol_options


def test_common_options_on_an_http1_cluster_and_h2_options_reported(tmp_path: Path) -> None:
    found, warnings, config = clusters(
        read(
            tmp_path,
            policy({"targetRefs": [target()], **CONNECTION_SPEC}),
            app_protocol=None,
            port_name="web",
        )
    )
    options = http_protocol_options_pb2.HttpProtocolOptions()
    build_cluster(found[CLUSTER]).typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    assert options.explicit_http_config.HasField("http_protocol_options")
    assert options.common_http_protocol_options.idle_timeout.seconds == 90
    assert any("spec.http2ProtocolOptions" in w and "port web" in w for w in warnings), warnings
    result = envoy_validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"http2ProtocolOptions": {"initialStreamWindowSize": "1Ki"}}, "initialStreamWindowSize", "greater"),
        (
            {"http2ProtocolOptions": {"initialStreamWindowSize": "lots"}},
            "initialStreamWindowSize",
            "quantity",
        ),
        ({"tcpKeepalive": {"keepAliveTime": "100ms"}}, "spec.tcpKeepalive", "at least 1s"),
        (
            {"http2ProtocolOptions": {"connectionKeepalive": {"interval": "1s"}}},
            "spec.http2ProtocolOptions.connectionKeepalive.timeout",
            "required",
        ),
        (
            {"http2ProtocolOptions": {"connectionKeepalive": {"timeout": "1s", "interval": "0s"}}},
            "spec.http2ProtocolOptions.connectionKeepalive",
            "interval must be at least 1ms",
        ),
        (
            {"http2ProtocolOptions": {"connectionKeepalive": {"timeout": "soon"}}},
            "spec.http2ProtocolOptions.connectionKeepalive.timeout",
            "not a valid duration",
        ),
        ({"connectTimeout": "0s"}, "spec", "connectTimeout must be greater than 0"),
    ],
)
def test_invalid_connection_options_name_the_field(
    tmp_path: Path, spec: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ManifestErrors) as caught:
        read(tmp_path, policy({"targetRefs": [target()], **spec}))
    (error,) = caught.value.errors
    assert field in error.field_path + error.message and message in error.message, (
        error.field_path,
        error.message,
    )
