"""kgateway listener policy models: ListenerPolicy (quantities, durations, ranges) and the
HTTPListenerPolicy timeouts; a bad value is an error naming the object and the field, a field
meshxds does not model is a warning naming both."""

from __future__ import annotations

from typing import Any

import pytest

from meshxds.errors import ManifestErrors
from meshxds.model import kgateway
from meshxds.model.manifests import SourcedDocument, parse_document, parse_documents

GATEWAY_REF = {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "http"}


def listener_policy(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.kgateway.dev/v1alpha1",
        "kind": "ListenerPolicy",
        "metadata": {"name": "lp", "namespace": "gateway-system"},
        "spec": {"targetRefs": [GATEWAY_REF], **spec},
    }


def parse(body: dict[str, Any]) -> tuple[Any, list[str]]:
    return parse_document(SourcedDocument(path="p.yaml", index=0, body=body))


def error_of(body: dict[str, Any]) -> tuple[str, str, str]:
    with pytest.raises(ManifestErrors) as caught:
        parse_documents([SourcedDocument(path="p.yaml", index=0, body=body)])
    (error,) = caught.value.errors
    return error.ref or "", error.field_path or "", error.message


def test_listener_policy_reads_quantities_and_durations() -> None:
    settings = {
        "streamIdleTimeout": "1m30s",
        "idleTimeout": "500ms",
        "maxRequestsPerConnection": 100,
        "maxHeadersCount": 50,
        "http2ProtocolOptions": {
            "initialStreamWindowSize": "64Ki",
            "initialConnectionWindowSize": "1Mi",
            "maxConcurrentStreams": 77,
            "allowConnect": False,
        },
    }
    policy, warnings = parse(
        listener_policy(
            {
                "default": {
                    "httpSettings": settings,
                    "perConnectionBufferLimitBytes": 32768,
                    "tcpKeepalive": {"keepAliveTime": "7s", "keepAliveInterval": "2s", "keepAliveProbes": 3},
                },
                "perPort": [{"port": 8443, "listener": {"httpSettings": {"http2ProtocolOptions": {}}}}],
            }
        )
    )
    assert warnings == []
    assert isinstance(policy, kgateway.ListenerPolicy)
    default = policy.spec.default
    assert default is not None and default.http_settings is not None
    h2 = default.http_settings.http2_protocol_options
    assert h2 is not None
    assert (h2.initial_stream_window_size, h2.initial_connection_window_size) == (65536, 1048576)
    assert (h2.max_concurrent_streams, h2.allow_connect) == (77, False)
    assert default.http_settings.stream_idle_timeout == "1m30s"
    assert default.tcp_keepalive is not None and default.tcp_keepalive.keep_alive_time == "7s"
    assert policy.spec.per_port[0].port == 8443


H2 = "spec.default.httpSettings.http2ProtocolOptions"


@pytest.mark.parametrize(
    ("default", "field", "message"),
    [
        pytest.param(
            {"httpSettings": {"http2ProtocolOptions": {"initialStreamWindowSize": "32Ki"}}},
            f"{H2}.initialStreamWindowSize",
            "greater than or equal to 65535",
            id="window below the HTTP/2 minimum",
        ),
        pytest.param(
            {"httpSettings": {"http2ProtocolOptions": {"initialConnectionWindowSize": "2Gi"}}},
            f"{H2}.initialConnectionWindowSize",
            "less than or equal to 2147483647",
            id="window above 2^31-1",
        ),
        pytest.param(
            {"httpSettings": {"http2ProtocolOptions": {"initialStreamWindowSize": "lots"}}},
            f"{H2}.initialStreamWindowSize",
            "not a quantity",
            id="window not a quantity",
        ),
        pytest.param(
            {"httpSettings": {"http2ProtocolOptions": {"maxConcurrentStreams": 0}}},
            f"{H2}.maxConcurrentStreams",
            "greater than or equal to 1",
            id="no concurrent streams",
        ),
        pytest.param(
            {"httpSettings": {"streamIdleTimeout": "soon"}},
            "spec.default.httpSettings.streamIdleTimeout",
            "not a valid duration",
            id="bad duration",
        ),
        pytest.param(
            {"httpSettings": {"maxHeadersCount": 0}},
            "spec.default.httpSettings.maxHeadersCount",
            "greater than or equal to 1",
            id="no headers allowed",
        ),
        pytest.param(
            {"perConnectionBufferLimitBytes": -1},
            "spec.default.perConnectionBufferLimitBytes",
            "greater than or equal to 0",
            id="negative buffer limit",
        ),
        pytest.param(
            {"tcpKeepalive": {"keepAliveTime": "500ms"}},
            "spec.default.tcpKeepalive",
            "keepAliveTime must be at least 1s",
            id="keepalive below a second",
        ),
    ],
)
def test_bad_values_name_the_object_and_field(default: dict[str, Any], field: str, message: str) -> None:
    ref, field_path, text = error_of(listener_policy({"default": default}))
    assert ref == "ListenerPolicy/gateway-system/lp"
    assert field_path == field and message in text, (field_path, text)


def test_per_port_needs_a_valid_port() -> None:
    ref, field_path, text = error_of(listener_policy({"perPort": [{"port": 0, "listener": {}}]}))
    assert (ref, field_path) == ("ListenerPolicy/gateway-system/lp", "spec.perPort[0].port")
    assert "greater than or equal to 1" in text


def test_fields_meshxds_does_not_serve_are_warned_with_object_and_path() -> None:
    _, warnings = parse(
        listener_policy(
            {
                "targetSelectors": [{"group": "gateway.networking.k8s.io", "kind": "Gateway"}],
                "default": {
                    "proxyProtocol": {},
                    "httpSettings": {"serverName": "meshxds", "http2ProtocolOptions": {"hpack": 1}},
                },
                "perPort": [{"port": 80, "listener": {"transportSocketConnectTimeout": "5s"}}],
            }
        )
    )
    paths = sorted(w.split("field ", 1)[1].split(" ", 1)[0] for w in warnings)
    assert paths == [
        "spec.default.httpSettings.http2ProtocolOptions.hpack",
        "spec.default.httpSettings.serverName",
        "spec.default.proxyProtocol",
        "spec.perPort[0].listener.transportSocketConnectTimeout",
        "spec.targetSelectors",
    ]
    assert all("ListenerPolicy/gateway-system/lp" in w and "not supported" in w for w in warnings)


def test_http_listener_policy_timeouts() -> None:
    body = {
        "apiVersion": "gateway.kgateway.dev/v1alpha1",
        "kind": "HTTPListenerPolicy",
        "metadata": {"name": "h", "namespace": "gateway-system"},
        "spec": {"targetRefs": [GATEWAY_REF], "streamIdleTimeout": "1s", "idleTimeout": "0s"},
    }
    policy, warnings = parse(body)
    assert warnings == []
    assert isinstance(policy, kgateway.HTTPListenerPolicy)
    assert (policy.spec.stream_idle_timeout, policy.spec.idle_timeout) == ("1s", "0s")
    body["spec"]["idleTimeout"] = "-1s"
    ref, field_path, text = error_of(body)
    assert (ref, field_path) == ("HTTPListenerPolicy/gateway-system/h", "spec.idleTimeout")
    assert "negative" in text


# --- TrafficPolicy --------------------------------------------------------------------------------

HTTPROUTE_REF = {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "web"}


def traffic_policy(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.kgateway.dev/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "tp", "namespace": "default"},
        "spec": spec,
    }


def test_traffic_policy_reads_retry_and_timeouts_and_warns_about_the_rest() -> None:
    policy, warnings = parse(
        traffic_policy(
            {
                "targetRefs": [HTTPROUTE_REF, {**GATEWAY_REF, "sectionName": "http"}],
                "retry": {
                    "retryOn": ["5xx", "reset"],
                    "statusCodes": [503],
                    "perTryTimeout": "1s",
                    "backoffBaseInterval": "50ms",
                },
                "timeouts": {"request": "1m30s", "streamIdle": "0s"},
                "cors": {"allowOrigins": ["*"]},
                "rateLimit": {"local": {}},
                "targetSelectors": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
            }
        )
    )
    assert isinstance(policy, kgateway.TrafficPolicy)
    retry = policy.spec.retry
    assert retry is not None and retry.attempts == 1  # the CRD's default
    assert (retry.retry_on, retry.status_codes, retry.per_try_timeout) == (["5xx", "reset"], [503], "1s")
    assert policy.spec.timeouts == kgateway.Timeouts(request="1m30s", stream_idle="0s")
    paths = sorted(w.split("field ", 1)[1].split(" ", 1)[0] for w in warnings)
    assert paths == ["spec.cors", "spec.rateLimit", "spec.targetSelectors"]
    assert all("TrafficPolicy/default/tp" in w and "not supported" in w for w in warnings)


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        pytest.param(
            {"retry": {"retryOn": ["5xx", "sometimes"]}},
            "spec.retry.retryOn[1]",
            "'gateway-error'",
            id="bad retryOn",
        ),
        pytest.param({"retry": {"retryOn": []}}, "spec.retry.retryOn", "at least 1 item", id="empty retryOn"),
        pytest.param(
            {"retry": {"statusCodes": [302]}},
            "spec.retry.statusCodes[0]",
            "greater than or equal to 400",
            id="code below 400",
        ),
        pytest.param(
            {"retry": {"statusCodes": [600]}},
            "spec.retry.statusCodes[0]",
            "less than or equal to 599",
            id="code above 599",
        ),
        pytest.param(
            {"retry": {"attempts": 2}},
            "spec.retry",
            "retryOn or statusCodes must be set",
            id="nothing to retry on",
        ),
        pytest.param(
            {"retry": {"retryOn": ["reset"], "attempts": -1}},
            "spec.retry.attempts",
            "greater than or equal to 0",
            id="negative attempts",
        ),
        pytest.param(
            {"retry": {"retryOn": ["reset"], "perTryTimeout": "1.5s"}},
            "spec.retry.perTryTimeout",
            "is not a duration",
            id="fractional duration",
        ),
        pytest.param(
            {"retry": {"retryOn": ["reset"], "backoffBaseInterval": "0ms"}},
            "spec.retry",
            "backoffBaseInterval must be at least 1ms",
            id="zero backoff",
        ),
        pytest.param(
            {"timeouts": {"request": "soon"}},
            "spec.timeouts.request",
            "is not a duration",
            id="bad request timeout",
        ),
        pytest.param(
            {"timeouts": {"streamIdle": 5}},
            "spec.timeouts.streamIdle",
            "valid string",
            id="number for a duration",
        ),
        pytest.param(
            {"retry": {"retryOn": ["reset"], "perTryTimeout": "5s"}, "timeouts": {"request": "5s"}},
            "spec",
            "retry.perTryTimeout must be less than timeouts.request",
            id="per-try not below request",
        ),
        pytest.param(
            {"targetRefs": [GATEWAY_REF], "retry": {"retryOn": ["reset"]}},
            "spec",
            "targetRefs[0].sectionName must be set",
            id="retry on a whole Gateway",
        ),
    ],
)
def test_traffic_policy_bad_values_name_the_object_and_field(
    spec: dict[str, Any], field: str, message: str
) -> None:
    ref, field_path, text = error_of(traffic_policy({"targetRefs": [HTTPROUTE_REF], **spec}))
    assert ref == "TrafficPolicy/default/tp"
    assert field_path == field and message in text, (field_path, text)


def test_a_whole_gateway_takes_timeouts_without_a_section_name() -> None:
    policy, warnings = parse(traffic_policy({"targetRefs": [GATEWAY_REF], "timeouts": {"request": "5s"}}))
    assert isinstance(policy, kgateway.TrafficPolicy) and warnings == []


def _route_with_filters(
    rule_filters: list[dict[str, Any]], backend_filters: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "rules": [
                {
                    "filters": rule_filters,
                    "backendRefs": [{"name": "web", "port": 80, "filters": backend_filters}],
                }
            ]
        },
    }


def test_an_extension_ref_to_a_traffic_policy_is_served_on_a_rule_only() -> None:
    to_policy = {
        "type": "ExtensionRef",
        "extensionRef": {"group": "gateway.kgateway.dev", "kind": "TrafficPolicy", "name": "tp"},
    }
    other = {"type": "ExtensionRef", "extensionRef": {"group": "example.com", "kind": "Filter", "name": "f"}}
    _, warnings = parse(_route_with_filters([to_policy, other], [to_policy]))
    assert [w.split("field ", 1)[1].split(" is ", 1)[0] for w in warnings] == [
        "spec.rules[0].filters[1].extensionRef",
        "spec.rules[0].backendRefs[0].filters[0].extensionRef",  # a TrafficPolicy attaches to rules
    ]
    assert "(extension filters other than kgateway TrafficPolicy)" in warnings[0]
