"""The Gateway API conformance features meshxds supports: a GatewayClass's ``status.supportedFeatures``.

Conservative on purpose: a feature is listed only when a test of ours drives it end to end (real
Envoy, a real client, a real upstream), and each entry names that test. Names are the strings of
``pkg/features`` in kubernetes-sigs/gateway-api. A unit test checks every named test exists, so
deleting or renaming one fails until this list follows; the README's table repeats it.

Not listed, although partly implemented: HTTPRouteRequestMirror (golden tests only),
GRPCRouteRequestHeaderModifier, TLSRouteModeTerminate, GatewayHTTPListenerIsolation,
HTTPRouteParentRefPort (no end-to-end test yet), GatewayStaticAddresses (meshxds allocates no
address; see addresses.py), HTTPRoute303RedirectStatusCode (untested).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SUPPORTED_FEATURES", "Feature", "supported_features"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Feature:
    name: str
    """As in gateway-api ``pkg/features`` (e.g. ``HTTPRouteQueryParamMatching``)."""
    test: str
    """``tests/<path>.py::<test function>`` that proves it end to end."""


def _f(name: str, test: str) -> Feature:
    return Feature(name=name, test=test)


_MATCHING = "tests/integration/test_httproute_matching.py"
_FILTERS = "tests/integration/test_httproute_filters.py"
_BACKENDS = "tests/integration/test_httproute_backends.py"
_TLS_TCP = "tests/integration/test_tls_tcp_routes.py"
_FRONTEND = "tests/integration/test_gateway_frontend_validation.py"

SUPPORTED_FEATURES: tuple[Feature, ...] = (
    _f(
        "BackendTLSPolicy",
        "tests/integration/test_backendtlspolicy.py::test_the_backends_ca_verifies_it_over_tls_with_alpn_h2",
    ),
    _f(
        "BackendTLSPolicySANValidation",
        "tests/integration/test_backendtlspolicy_san.py::"
        "test_the_certificate_must_carry_one_of_the_policys_subject_alt_names",
    ),
    _f("GRPCRoute", "tests/integration/test_grpcroute.py::test_grpc_call_routed_by_method_and_header"),
    _f("Gateway", f"{_MATCHING}::test_path_matching"),
    _f(
        "GatewayFrontendClientCertificateValidation",
        f"{_FRONTEND}::test_no_certificate_or_one_of_another_ca_is_refused",
    ),
    _f(
        "GatewayFrontendClientCertificateValidationInsecureFallback",
        f"{_FRONTEND}::test_insecure_fallback_lets_every_client_through",
    ),
    _f("HTTPRoute", f"{_MATCHING}::test_httproute_matching"),
    _f("HTTPRoute307RedirectStatusCode", f"{_FILTERS}::test_request_redirect"),
    _f("HTTPRoute308RedirectStatusCode", f"{_FILTERS}::test_request_redirect"),
    _f(
        "HTTPRouteBackendProtocolH2C",
        "tests/integration/test_gateway_http2_scenario.py::test_http2_service_reaches_http2_only_upstream",
    ),
    _f(
        "HTTPRouteBackendProtocolWebSocket",
        "tests/integration/test_websocket.py::test_an_http1_upgrade_reaches_the_websocket_server",
    ),
    _f(
        "HTTPRouteBackendTimeout",
        "tests/integration/test_grpc_timeouts.py::test_backend_request_timeout_is_the_per_try_timeout",
    ),
    _f(
        "HTTPRouteCORS",
        "tests/integration/test_grpc_web_and_cors.py::test_cors_preflight_from_an_allowed_origin_gets_the_configured_answer",
    ),
    _f("HTTPRouteHostRewrite", f"{_FILTERS}::test_httproute_rewrite_host"),
    _f("HTTPRouteMethodMatching", f"{_MATCHING}::test_method_matching"),
    _f("HTTPRoutePathRedirect", f"{_FILTERS}::test_request_redirect"),
    _f("HTTPRoutePathRewrite", f"{_FILTERS}::test_httproute_rewrite_path"),
    _f("HTTPRoutePortRedirect", f"{_FILTERS}::test_redirect_location_port_follows_the_spec"),
    _f("HTTPRouteQueryParamMatching", f"{_MATCHING}::test_query_param_matching"),
    _f("HTTPRouteRequestTimeout", f"{_BACKENDS}::test_request_timeout_gives_504_in_time"),
    _f("HTTPRouteResponseHeaderModification", f"{_FILTERS}::test_response_header_modifier"),
    _f(
        "HTTPRouteRetry",
        "tests/integration/test_httproute_retries.py::test_a_failing_first_attempt_is_retried_as_the_stanza_says",
    ),
    _f(
        "HTTPRouteRetryBackendTimeout",
        "tests/integration/test_httproute_retries.py::test_a_try_that_outlives_backend_request_is_retried",
    ),
    _f(
        "HTTPRouteRetryConnectionError",
        "tests/integration/test_httproute_retries.py::test_a_connection_closed_without_an_answer_is_retried",
    ),
    _f("HTTPRouteSchemeRedirect", f"{_FILTERS}::test_request_redirect"),
    _f("ReferenceGrant", f"{_BACKENDS}::test_reference_grant_written_then_deleted"),
    _f("TCPRoute", f"{_TLS_TCP}::test_tcp_route_proxies_bytes"),
    _f("TLSRoute", f"{_TLS_TCP}::test_tls_passthrough_by_sni"),
)


def supported_features() -> list[dict[str, str]]:
    """``status.supportedFeatures`` as the v1 CRD has it (v1.2+): ``{name}`` objects, a list-map
    keyed by name that MUST be sorted ascending by name."""
    return [{"name": name} for name in sorted({f.name for f in SUPPORTED_FEATURES})]
