"""Nothing ignored silently: every field of every model meshxds reads is decided.

Walking every model class reachable from every kind in ``KINDS``, each field must be one of:

- **unserved**: ``Annotated[X, Unserved("why")]`` on the field itself. An object that sets it is
  warned about (``unserved_fields``); the walk does not go below it (its sub-fields are the same
  one decision).
- **translated**: listed in ``TRANSLATED`` with the modules that read it (paths under
  ``meshxds/``); each claim is checked for real: that module's code reads an attribute of the
  field's Python name (``.load_balancer``), so a claim left behind by a refactor fails.
- **inert**: listed in ``INERT`` with the reason it asks nothing of a proxy (state a controller
  writes, bookkeeping, a copy of a field read elsewhere), so a warning would be noise.
- **structural**: a kind's ``apiVersion``, ``kind``, ``metadata``, ``spec``, ``status`` (the
  containers every object has; what is inside ``spec`` and ``status`` is walked).

A field added to a model without a decision fails ``test_every_field_is_decided``.

"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from meshxds.cli import main
from meshxds.model.base import KubeModel, Resource, Unserved, unserved_fields, unserved_marker
from meshxds.model.manifests import KINDS, SourcedDocument, parse_documents

PACKAGE = Path(__file__).resolve().parents[3] / "meshxds"

STRUCTURAL = frozenset({"api_version", "kind", "metadata", "spec", "status"})
"""Fields of a kind (a ``Resource`` subclass) every object has: checked by the rule, not listed."""

_UPSTREAM = "translators/upstream/endpoints.py"
_PORTS = "translators/upstream/ports.py"
_REGISTRY = "translators/istio/registry.py"
_CERTS = "translators/certificates.py"
_GW_TLS = "translators/gatewayapi/tls.py"
_LISTENERS = "translators/gatewayapi/listeners.py"
_ATTACH = "translators/gatewayapi/attach.py"
_ROUTES = "translators/gatewayapi/routes.py"
_HTTP = "translators/gatewayapi/httproutes.py"
_GRPC = "translators/gatewayapi/grpcroutes.py"
_TCP = "translators/gatewayapi/tcproutes.py"
_BACKENDS = "translators/backends.py"
_BACKEND_TLS = "translators/backendtls.py"
_POLICIES = "translators/kgateway/policies.py"
_BACKEND_CONFIG = "translators/kgateway/backend_config.py"
_TRAFFIC = "translators/kgateway/traffic.py"
_ISTIO_GW = "translators/istio/gateways.py"
_ISTIO_ROUTES = "translators/istio/routes.py"
_ISTIO_SIDECAR = "translators/istio/sidecar.py"
_CLUSTERS = "translators/istio/clusters.py"


def _fields(cls: str, module: str | tuple[str, ...], *names: str) -> dict[str, tuple[str, ...]]:
    modules = (module,) if isinstance(module, str) else module
    return {f"{cls}.{name}": modules for name in names}


TRANSLATED: dict[str, tuple[str, ...]] = {
    # --- core ------------------------------------------------------------------------------------
    **_fields("core.ServicePort", _PORTS, "name", "port", "target_port", "protocol", "app_protocol"),
    **_fields("core.ServiceSpec", _PORTS, "ports"),
    **_fields("core.ServiceSpec", _REGISTRY, "cluster_ip", "cluster_ips"),
    **_fields("core.ObjectReference", _UPSTREAM, "kind", "name", "namespace"),
    # Endpoint.is_ready (the model's) reads the ready condition; endpoints.py asks it.
    **_fields("core.EndpointConditions", "model/core.py", "ready"),
    **_fields("core.Endpoint", "model/core.py", "conditions"),
    **_fields("core.Endpoint", _UPSTREAM, "addresses", "target_ref"),
    **_fields("core.EndpointPort", _UPSTREAM, "name", "port"),
    **_fields("core.EndpointSlice", _UPSTREAM, "address_type", "endpoints", "ports"),
    **_fields("core.Secret", _CERTS, "data", "string_data"),
    **_fields("core.ConfigMap", _CERTS, "data"),
    # --- Gateway API ------------------------------------------------------------------------------
    **_fields("gatewayapi.GatewayClassSpec", "translators/gatewayapi/gateways.py", "controller_name"),
    **_fields("gatewayapi.RouteGroupKind", _LISTENERS, "group", "kind"),
    **_fields("gatewayapi.LabelSelectorRequirement", _ATTACH, "key", "operator", "values"),
    **_fields("gatewayapi.LabelSelector", _ATTACH, "match_labels", "match_expressions"),
    **_fields("gatewayapi.RouteNamespaces", _ATTACH, "from_", "selector"),
    **_fields("gatewayapi.AllowedRoutes", _ATTACH, "namespaces"),
    **_fields("gatewayapi.AllowedRoutes", _LISTENERS, "kinds"),
    **_fields("gatewayapi.SecretObjectReference", _CERTS, "group", "kind", "name", "namespace"),
    **_fields("gatewayapi.GatewayTLSConfig", _GW_TLS, "mode", "certificate_refs"),
    **_fields("gatewayapi.GatewayListener", _LISTENERS, "name", "hostname", "port", "protocol", "tls"),
    **_fields("gatewayapi.GatewayListener", (_LISTENERS, _ATTACH), "allowed_routes"),
    **_fields("gatewayapi.GatewayAddress", "translators/gatewayapi/addresses.py", "type", "value"),
    **_fields("gatewayapi.FrontendCACertificateRef", _CERTS, "group", "kind", "name", "namespace"),
    **_fields("gatewayapi.FrontendTLSValidation", _GW_TLS, "ca_certificate_refs", "mode"),
    # FrontendTLSConfig.for_port (the model's) picks the port's settings; tls.py asks it.
    **_fields("gatewayapi.FrontendTLSSettings", "model/gatewayapi.py", "validation"),
    **_fields("gatewayapi.FrontendTLSPortConfig", "model/gatewayapi.py", "port", "tls"),
    **_fields("gatewayapi.FrontendTLSConfig", "model/gatewayapi.py", "default", "per_port"),
    **_fields("gatewayapi.GatewaySpecTLS", _GW_TLS, "frontend"),
    **_fields("gatewayapi.GatewaySpec", "translators/gatewayapi/gateways.py", "gateway_class_name"),
    **_fields("gatewayapi.GatewaySpec", _LISTENERS, "listeners"),
    **_fields("gatewayapi.GatewaySpec", _GW_TLS, "tls"),
    **_fields("gatewayapi.GatewaySpec", "translators/gatewayapi/addresses.py", "addresses"),
    **_fields("gatewayapi.ParentReference", _ROUTES, "group", "kind", "namespace", "name"),
    **_fields("gatewayapi.ParentReference", _ATTACH, "section_name", "port"),
    **_fields("gatewayapi.HTTPPathMatch", _HTTP, "type", "value"),
    **_fields("gatewayapi.HTTPHeaderMatch", _HTTP, "type", "name", "value"),
    **_fields("gatewayapi.HTTPQueryParamMatch", _HTTP, "type", "name", "value"),
    **_fields("gatewayapi.HTTPRouteMatch", _HTTP, "path", "headers", "query_params", "method"),
    **_fields("gatewayapi.HTTPHeader", _HTTP, "name", "value"),
    **_fields("gatewayapi.HTTPHeaderFilter", _HTTP, "set", "add", "remove"),
    **_fields("gatewayapi.HTTPPathModifier", _HTTP, "type", "replace_full_path", "replace_prefix_match"),
    **_fields(
        "gatewayapi.HTTPRequestRedirectFilter", _HTTP, "scheme", "hostname", "path", "port", "status_code"
    ),
    **_fields("gatewayapi.HTTPURLRewriteFilter", _HTTP, "hostname", "path"),
    **_fields("gatewayapi.BackendObjectReference", _HTTP, "group", "kind", "name", "namespace", "port"),
    **_fields("gatewayapi.Fraction", _HTTP, "numerator", "denominator"),
    **_fields("gatewayapi.HTTPRequestMirrorFilter", _HTTP, "backend_ref", "percent", "fraction"),
    **_fields(
        "gatewayapi.HTTPCORSFilter",
        "translators/cors.py",
        "allow_origins",
        "allow_credentials",
        "allow_methods",
        "allow_headers",
        "expose_headers",
        "max_age",
    ),
    **_fields(
        "gatewayapi.HTTPRouteFilter",
        _HTTP,
        "type",
        "request_header_modifier",
        "response_header_modifier",
        "request_redirect",
        "url_rewrite",
        "request_mirror",
        "cors",
    ),
    **_fields("gatewayapi.BackendRef", _HTTP, "group", "kind", "name", "namespace", "port", "weight"),
    **_fields("gatewayapi.HTTPBackendRef", _HTTP, "filters"),
    **_fields("gatewayapi.HTTPRouteTimeouts", _HTTP, "request", "backend_request"),
    **_fields("gatewayapi.HTTPRouteRetry", _HTTP, "codes", "attempts", "backoff"),
    **_fields("gatewayapi.HTTPRouteRule", _HTTP, "matches", "filters", "backend_refs", "timeouts", "retry"),
    **_fields("gatewayapi.HTTPRouteSpec", _ROUTES, "parent_refs"),
    **_fields("gatewayapi.HTTPRouteSpec", _ATTACH, "hostnames"),
    **_fields("gatewayapi.HTTPRouteSpec", _HTTP, "rules"),
    **_fields("gatewayapi.GRPCMethodMatch", _GRPC, "type", "service", "method"),
    **_fields("gatewayapi.GRPCRouteMatch", _GRPC, "method", "headers"),
    **_fields("gatewayapi.GRPCRouteRule", _GRPC, "matches", "filters", "backend_refs"),
    **_fields("gatewayapi.GRPCRouteSpec", _ROUTES, "parent_refs"),
    **_fields("gatewayapi.GRPCRouteSpec", _ATTACH, "hostnames"),
    **_fields("gatewayapi.GRPCRouteSpec", _GRPC, "rules"),
    **_fields("gatewayapi.TCPRouteRule", _TCP, "backend_refs"),
    **_fields("gatewayapi.TLSRouteSpec", _ROUTES, "parent_refs"),
    **_fields("gatewayapi.TLSRouteSpec", _ATTACH, "hostnames"),
    **_fields("gatewayapi.TLSRouteSpec", _TCP, "rules"),
    **_fields("gatewayapi.TCPRouteSpec", _ROUTES, "parent_refs"),
    **_fields("gatewayapi.TCPRouteSpec", _TCP, "rules"),
    **_fields("gatewayapi.ReferenceGrantFrom", _BACKENDS, "group", "kind", "namespace"),
    **_fields("gatewayapi.ReferenceGrantTo", _BACKENDS, "group", "kind", "name"),
    **_fields("gatewayapi.ReferenceGrantSpec", _BACKENDS, "from_", "to"),
    **_fields("gatewayapi.LocalPolicyTargetReference", _BACKEND_TLS, "group", "kind", "name", "section_name"),
    **_fields("gatewayapi.LocalObjectReference", _BACKEND_TLS, "group", "kind", "name"),
    **_fields("gatewayapi.SubjectAltName", _BACKEND_TLS, "type", "hostname", "uri"),
    **_fields(
        "gatewayapi.BackendTLSPolicyValidation",
        _BACKEND_TLS,
        "ca_certificate_refs",
        "well_known_ca_certificates",
        "hostname",
        "subject_alt_names",
    ),
    **_fields("gatewayapi.BackendTLSPolicySpec", _BACKEND_TLS, "target_refs", "validation"),
    # --- kgateway ---------------------------------------------------------------------------------
    **_fields("kgateway.StaticHost", _BACKENDS, "host", "port"),
    **_fields("kgateway.StaticBackend", _BACKENDS, "hosts", "app_protocol"),
    **_fields("kgateway.BackendSpec", _BACKENDS, "type", "static"),
    **_fields(
        "kgateway.LocalPolicyTargetReference",
        (_POLICIES, _BACKEND_CONFIG, _TRAFFIC),
        "group",
        "kind",
        "name",
        "section_name",
    ),
    **_fields("kgateway.FileSink", _POLICIES, "path", "string_format", "json_format"),
    **_fields("kgateway.AccessLog", _POLICIES, "file_sink"),
    **_fields("kgateway.HTTPListenerPolicySpec", _POLICIES, "target_refs", "access_log"),
    **_fields("kgateway.HealthCheckHttp", _BACKEND_CONFIG, "host", "path", "method"),
    **_fields("kgateway.HealthCheckGrpc", _BACKEND_CONFIG, "service_name", "authority"),
    **_fields(
        "kgateway.HealthCheck",
        _BACKEND_CONFIG,
        "timeout",
        "interval",
        "unhealthy_threshold",
        "healthy_threshold",
        "http",
        "grpc",
    ),
    **_fields(
        "kgateway.CommonHttpProtocolOptions",
        _BACKEND_CONFIG,
        "idle_timeout",
        "max_headers_count",
        "max_stream_duration",
        "max_requests_per_connection",
    ),
    **_fields(
        "kgateway.Http2ProtocolOptions",
        _BACKEND_CONFIG,
        "initial_stream_window_size",
        "initial_connection_window_size",
        "max_concurrent_streams",
    ),
    **_fields(
        "kgateway.TCPKeepalive",
        _BACKEND_CONFIG,
        "keep_alive_probes",
        "keep_alive_time",
        "keep_alive_interval",
    ),
    **_fields(
        "kgateway.BackendConfigPolicySpec",
        _BACKEND_CONFIG,
        "target_refs",
        "connect_timeout",
        "tcp_keepalive",
        "common_http_protocol_options",
        "http2_protocol_options",
        "health_check",
    ),
    # --- Istio ------------------------------------------------------------------------------------
    **_fields("istio.StringMatch", _ISTIO_ROUTES, "exact", "prefix", "regex"),
    **_fields("istio.PortSelector", (_ISTIO_ROUTES, _CLUSTERS), "number"),
    **_fields("istio.Destination", _ISTIO_ROUTES, "host", "subset", "port"),
    **_fields("istio.Percent", _ISTIO_ROUTES, "value"),
    **_fields("istio.Port", _ISTIO_GW, "number", "protocol"),
    **_fields("istio.TLSCertificate", _ISTIO_GW, "server_certificate", "private_key"),
    **_fields(
        "istio.ServerTLSSettings",
        _ISTIO_GW,
        "https_redirect",
        "mode",
        "server_certificate",
        "private_key",
        "ca_certificates",
        "credential_name",
        "credential_names",
        "tls_certificates",
        "subject_alt_names",
        "verify_certificate_spki",
        "verify_certificate_hash",
        "min_protocol_version",
        "max_protocol_version",
        "cipher_suites",
    ),
    **_fields("istio.Server", _ISTIO_GW, "port", "bind", "hosts", "tls", "name"),
    **_fields("istio.GatewaySpec", _ISTIO_GW, "selector", "servers"),
    **_fields("istio.HeaderOperations", _ISTIO_ROUTES, "set", "add", "remove"),
    **_fields("istio.Headers", _ISTIO_ROUTES, "request", "response"),
    **_fields(
        "istio.HTTPMatchRequest",
        _ISTIO_ROUTES,
        "uri",
        "scheme",
        "method",
        "authority",
        "headers",
        "port",
        "source_labels",
        "gateways",
        "query_params",
        "ignore_uri_case",
        "without_headers",
        "source_namespace",
    ),
    **_fields("istio.HTTPRouteDestination", _ISTIO_ROUTES, "destination", "weight", "headers"),
    **_fields("istio.RouteDestination", _ISTIO_ROUTES, "destination", "weight"),
    **_fields(
        "istio.HTTPRedirect",
        _ISTIO_ROUTES,
        "uri",
        "authority",
        "port",
        "derive_port",
        "scheme",
        "redirect_code",
    ),
    **_fields("istio.HTTPBody", _ISTIO_ROUTES, "string", "bytes_"),
    **_fields("istio.HTTPDirectResponse", _ISTIO_ROUTES, "status", "body"),
    **_fields("istio.Delegate", _ISTIO_ROUTES, "name", "namespace"),
    **_fields("istio.RegexRewrite", _ISTIO_ROUTES, "match", "rewrite"),
    **_fields("istio.HTTPRewrite", _ISTIO_ROUTES, "uri", "authority", "uri_regex_rewrite"),
    **_fields("istio.HTTPRetry", _ISTIO_ROUTES, "attempts", "per_try_timeout", "retry_on", "backoff"),
    **_fields("istio.Delay", _ISTIO_ROUTES, "fixed_delay", "percentage", "percent"),
    **_fields("istio.Abort", _ISTIO_ROUTES, "http_status", "grpc_status", "percentage"),
    **_fields("istio.HTTPFaultInjection", _ISTIO_ROUTES, "delay", "abort"),
    **_fields("istio.HTTPMirrorPolicy", _ISTIO_ROUTES, "destination", "percentage"),
    **_fields(
        "istio.CorsPolicy",
        _ISTIO_ROUTES,
        "allow_origins",
        "allow_origin",
        "allow_methods",
        "allow_headers",
        "expose_headers",
        "max_age",
        "allow_credentials",
    ),
    **_fields(
        "istio.HTTPRoute",
        _ISTIO_ROUTES,
        "name",
        "match",
        "route",
        "redirect",
        "direct_response",
        "delegate",
        "rewrite",
        "timeout",
        "retries",
        "fault",
        "mirror",
        "mirror_percent",
        "mirror_percentage",
        "mirrors",
        "cors_policy",
        "headers",
    ),
    **_fields(
        "istio.L4MatchAttributes", _ISTIO_ROUTES, "port", "source_labels", "gateways", "source_namespace"
    ),
    **_fields(
        "istio.TLSMatchAttributes",
        _ISTIO_ROUTES,
        "sni_hosts",
        "port",
        "source_labels",
        "gateways",
        "source_namespace",
    ),
    **_fields("istio.TCPRoute", _ISTIO_ROUTES, "match", "route"),
    **_fields("istio.TLSRoute", _ISTIO_ROUTES, "match", "route"),
    **_fields("istio.VirtualServiceSpec", (_ISTIO_GW, _ISTIO_SIDECAR), "hosts", "export_to"),
    **_fields("istio.VirtualServiceSpec", _ISTIO_ROUTES, "gateways", "http", "tls", "tcp"),
    **_fields("istio.HTTPCookie", _CLUSTERS, "name", "path", "ttl"),
    **_fields("istio.RingHash", _CLUSTERS, "minimum_ring_size"),
    **_fields("istio.MagLev", _CLUSTERS, "table_size"),
    **_fields(
        "istio.ConsistentHashLB",
        _CLUSTERS,
        "http_header_name",
        "http_cookie",
        "use_source_ip",
        "http_query_parameter_name",
        "ring_hash",
        "maglev",
        "minimum_ring_size",
    ),
    **_fields("istio.LoadBalancerSettings", _CLUSTERS, "simple", "consistent_hash"),
    **_fields("istio.TCPSettings", _CLUSTERS, "max_connections", "connect_timeout"),
    **_fields(
        "istio.HTTPSettings",
        _CLUSTERS,
        "http1_max_pending_requests",
        "http2_max_requests",
        "max_requests_per_connection",
        "max_retries",
        "h2_upgrade_policy",
        "use_client_protocol",
    ),
    **_fields("istio.ConnectionPoolSettings", _CLUSTERS, "tcp", "http"),
    **_fields(
        "istio.OutlierDetection",
        _CLUSTERS,
        "consecutive_gateway_errors",
        "consecutive_5xx_errors",
        "interval",
        "base_ejection_time",
        "max_ejection_percent",
        "min_health_percent",
        "consecutive_errors",
    ),
    **_fields(
        "istio.ClientTLSSettings",
        _CLUSTERS,
        "mode",
        "client_certificate",
        "private_key",
        "ca_certificates",
        "credential_name",
        "subject_alt_names",
        "sni",
        "insecure_skip_verify",
    ),
    **_fields(
        "istio.PortTrafficPolicy",
        _CLUSTERS,
        "port",
        "load_balancer",
        "connection_pool",
        "outlier_detection",
        "tls",
    ),
    **_fields(
        "istio.TrafficPolicy",
        _CLUSTERS,
        "load_balancer",
        "connection_pool",
        "outlier_detection",
        "tls",
        "port_level_settings",
    ),
    **_fields("istio.Subset", _CLUSTERS, "name", "labels", "traffic_policy"),
    **_fields("istio.DestinationRuleSpec", _CLUSTERS, "host", "traffic_policy", "subsets", "export_to"),
    **_fields("istio.WorkloadEntrySpec", _UPSTREAM, "address", "ports", "labels"),
    **_fields("istio.ServicePort", _REGISTRY, "number", "protocol", "name", "target_port"),
    **_fields("istio.ServiceEntryWorkloadSelector", _UPSTREAM, "labels"),
    **_fields("istio.ServiceEntrySpec", _REGISTRY, "hosts", "ports", "location", "resolution", "export_to"),
    **_fields("istio.ServiceEntrySpec", _UPSTREAM, "endpoints", "workload_selector"),
}
"""``module.Class.field`` → the modules (under ``meshxds/``) that read it to build config."""

EVIDENCE: dict[str, str] = {
    # Source-IP hashing is the fallback of _hash_policy once no header, cookie or query key is
    # given, which is what useSourceIp asks for; the code names the result, not the field.
    "istio.ConsistentHashLB.use_source_ip": 'kind="source_ip"',
}
"""Claims whose module shows them by this text instead of an attribute of the field's name."""

INERT: dict[str, str] = {
    "core.ServicePort.node_port": "kube-proxy's port on every node; proxies reach endpoints",
    "core.ServiceSpec.selector": "the EndpointSlice controller applies it; meshxds reads the slices",
    "core.ServiceSpec.type": "ClusterIP, NodePort and LoadBalancer reach the mesh alike (ExternalName warns)",
    "core.ServiceSpec.ip_families": "how the cluster IPs were allocated; the IPs are read",
    "core.ServiceSpec.ip_family_policy": "how the cluster IPs were allocated; the IPs are read",
    "core.ServiceSpec.publish_not_ready_addresses": "the EndpointSlice controller marks those ready",
    "core.ServiceSpec.external_traffic_policy": "kube-proxy's handling of traffic from outside",
    "core.ObjectReference.uid": "bookkeeping",
    "core.ObjectReference.api_version": "bookkeeping",
    "core.ObjectReference.resource_version": "bookkeeping",
    "core.EndpointConditions.serving": "controller state; ready decides, as for kube-proxy",
    "core.EndpointConditions.terminating": "controller state; ready decides, as for kube-proxy",
    "core.Endpoint.hostname": "the Pod's DNS name, for DNS",
    "core.Endpoint.node_name": "controller state (where the Pod runs)",
    "core.Endpoint.zone": "controller state; locality is not served (DestinationRule warns)",
    "core.Endpoint.hints": "controller state from the Service's topology request (warned there)",
    "core.Endpoint.deprecated_topology": "controller state",
    "core.EndpointPort.protocol": "a copy of the Service port's, which is read",
    "core.EndpointPort.app_protocol": "a copy of the Service port's, which is read",
    "core.Secret.type": "any type holding tls.crt and tls.key (or ca.crt) is read, as Istio does",
    "core.Secret.immutable": "API server bookkeeping",
    "core.ConfigMap.binary_data": "CA bundles are text under data['ca.crt'] (a missing one is reported)",
    "core.ConfigMap.immutable": "API server bookkeeping",
    "core.PodSpec.node_name": "controller state; a Pod is read for its labels",
    "core.PodStatus.pod_ip": "controller state; endpoints come from EndpointSlices",
    "gatewayapi.GatewayClassSpec.description": "documentation",
    "gatewayapi.HTTPRouteRule.name": "a name for policies and status to refer to",
    "gatewayapi.GRPCRouteRule.name": "a name for policies and status to refer to",
    "gatewayapi.TCPRouteRule.name": "a name for policies and status to refer to",
    "istio.Port.name": "a label of the server's port",
    "istio.Port.target_port": "Istio reads it for ServiceEntry ports only, not gateway servers",
    "istio.HTTPMatchRequest.name": "a label in Istio's route names; meshxds names routes by rule and index",
}
"""``module.Class.field`` → why the field asks nothing of a proxy."""

TRANSLATED.update(
    {
        # Istio connectionPool, kgateway HTTP/2 keepalive
        **_fields("istio.TCPSettings", _CLUSTERS, "tcp_keepalive", "max_connection_duration", "idle_timeout"),
        **_fields("istio.TCPKeepalive", _CLUSTERS, "probes", "time", "interval"),
        **_fields(
            "istio.HTTPSettings", _CLUSTERS, "idle_timeout", "max_concurrent_streams", "http2_keep_alive"
        ),
        **_fields("istio.HTTP2KeepAlive", _CLUSTERS, "interval", "timeout"),
        **_fields(
            "kgateway.Http2ProtocolOptions",
            _BACKEND_CONFIG,
            "connection_keepalive",
            "override_stream_error_on_invalid_http_message",
        ),
        **_fields(
            "kgateway.ConnectionKeepalive", _BACKEND_CONFIG, "timeout", "interval", "connection_idle_interval"
        ),
        # kgateway TrafficPolicy: retry and timeouts
        **_fields("kgateway.TrafficPolicySpec", _TRAFFIC, "target_refs", "retry", "timeouts"),
        **_fields(
            "kgateway.Retry",
            _TRAFFIC,
            "retry_on",
            "attempts",
            "per_try_timeout",
            "status_codes",
            "backoff_base_interval",
        ),
        **_fields("kgateway.Timeouts", _TRAFFIC, "request", "stream_idle"),
        # kgateway listener policies
        **_fields("kgateway.HTTPListenerPolicySpec", _POLICIES, "stream_idle_timeout", "idle_timeout"),
        **_fields("kgateway.ListenerPolicySpec", _POLICIES, "target_refs", "default", "per_port"),
        **_fields("kgateway.ListenerPortConfig", _POLICIES, "port", "listener"),
        **_fields(
            "kgateway.ListenerConfig",
            _POLICIES,
            "tcp_keepalive",
            "per_connection_buffer_limit_bytes",
            "http_settings",
        ),
        **_fields(
            "kgateway.HTTPSettings",
            _POLICIES,
            "stream_idle_timeout",
            "idle_timeout",
            "max_requests_per_connection",
            "max_headers_count",
            "http2_protocol_options",
        ),
        **_fields(
            "kgateway.ListenerHTTP2ProtocolOptions",
            _POLICIES,
            "initial_stream_window_size",
            "initial_connection_window_size",
            "max_concurrent_streams",
            "allow_connect",
        ),
    }
)


# --- the walk ---------------------------------------------------------------------------------------


def _key(cls: type[BaseModel], name: str) -> str:
    """``module.Class.field`` of the class that declares the field (subclasses share its decision)."""
    owner = next(c for c in cls.__mro__ if name in inspect.get_annotations(c))
    return f"{owner.__module__.rsplit('.', 1)[-1]}.{owner.__qualname__}.{name}"


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


@functools.cache
def model_fields() -> dict[str, tuple[type[BaseModel], str]]:
    """Every field reachable from every kind, below no unserved field: key → (class, name)."""
    found: dict[str, tuple[type[BaseModel], str]] = {}
    seen: set[type[BaseModel]] = set()
    stack: list[type[BaseModel]] = list(KINDS.values())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for name, field in cls.model_fields.items():
            if name == "metadata" and issubclass(cls, Resource):
                continue  # Kubernetes' object metadata: names and labels, never warned about
            found.setdefault(_key(cls, name), (cls, name))
            if unserved_marker(field) is None:
                stack.extend(_models_in(field.annotation))
    return found


def _structural(cls: type[BaseModel], name: str) -> bool:
    return issubclass(cls, Resource) and name in STRUCTURAL


@functools.cache
def attributes_read(module: str) -> frozenset[str]:
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    return frozenset(node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute))


def _reads(module: str, key: str) -> bool:
    if key in EVIDENCE:
        return EVIDENCE[key] in (PACKAGE / module).read_text(encoding="utf-8")
    return key.rsplit(".", 1)[1] in attributes_read(module)


# --- every field decided, every claim true ----------------------------------------------------------


def test_every_field_is_decided() -> None:
    undecided = []
    for key, (cls, name) in sorted(model_fields().items()):
        marked = unserved_marker(cls.model_fields[name]) is not None
        listed = [table for table in ("TRANSLATED", "INERT") if key in globals()[table]]
        if _structural(cls, name):
            assert not marked and not listed, f"{key} is structural: it needs no mark and no entry"
            continue
        assert len(listed) + marked <= 1, (
            f"{key} is decided twice: {listed}{' and Unserved' if marked else ''}"
        )
        if not marked and not listed:
            undecided.append(key)
    assert not undecided, (
        "fields neither translated (TRANSLATED, with the module that reads them), inert (INERT, with "
        "why) nor marked Unserved in the model: " + ", ".join(undecided)
    )


def test_every_entry_names_a_field() -> None:
    known = model_fields()
    stale = [key for key in (*TRANSLATED, *INERT) if key not in known]
    assert not stale, f"entries naming no field (renamed, removed, or below an Unserved one): {stale}"
    assert set(EVIDENCE) <= set(TRANSLATED)


@pytest.mark.parametrize("key", sorted(TRANSLATED))
def test_translated_claims_are_read_by_their_modules(key: str) -> None:
    for module in TRANSLATED[key]:
        assert _reads(module, key), f"{key}: meshxds/{module} does not read .{key.rsplit('.', 1)[1]}"


def test_the_tables_are_kept_short_of_exceptions() -> None:
    # INERT is for state and bookkeeping; a field a user sets to ask for behaviour is Unserved.
    assert len(INERT) <= 40
    assert len(EVIDENCE) <= 3


def _count(module: str) -> tuple[int, int, int]:
    """Translated, unserved, inert: the decisions of a model module's fields."""
    fields = [(c, n, k) for k, (c, n) in model_fields().items() if k.startswith(f"{module}.")]
    return (
        sum(k in TRANSLATED for _, _, k in fields),
        sum(unserved_marker(c.model_fields[n]) is not None for c, n, _ in fields),
        sum(k in INERT for _, _, k in fields),
    )


def test_counts_per_model_module(capsys: pytest.CaptureFixture[str]) -> None:
    """Printed with ``-s``: the decisions per model module."""
    with capsys.disabled():
        for module in ("core", "gatewayapi", "kgateway", "istio"):
            translated, unserved, inert = _count(module)
            print(f"\n{module}: {translated} translated, {unserved} unserved, {inert} inert", end="")
    assert all(sum(_count(m)) for m in ("core", "gatewayapi", "kgateway", "istio"))


# --- the walk over objects --------------------------------------------------------------------------


class _Inner(KubeModel):
    kept: str = ""
    odd: typing.Annotated[str, Unserved("odd things", unless=("fine",))] = ""


class _Outer(KubeModel):
    items: list[_Inner] = []
    by_name: dict[str, _Inner] = {}
    gone: typing.Annotated[_Inner | None, Unserved("gone things", effect="the rule is not applied")] = None


def test_unserved_fields_lists_set_fields_with_their_camel_case_paths() -> None:
    obj = _Outer.model_validate(
        {
            "items": [{"odd": "x"}, {"odd": "fine"}, {"kept": "y"}, {"odd": ""}],
            "byName": {"a": {"odd": "z"}},
            "gone": {},
        }
    )
    found = [(path, marker.why) for path, marker in unserved_fields(obj)]
    assert found == [("items[0].odd", "odd things"), ("byName.a.odd", "odd things"), ("gone", "gone things")]
    assert unserved_fields(_Outer()) == []
    assert unserved_fields(obj)[-1][1].describe("spec.gone") == (
        "field spec.gone is not served by meshxds (gone things); the rule is not applied"
    )


# --- one unserved field of every kind that has one: warned, and in status ---------------------------

_GW = {"gatewayClassName": "meshxds", "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]}
_PARENT = [{"name": "gw", "namespace": "apps"}]
_EXTENSION = {"type": "ExtensionRef", "extensionRef": {"group": "example.com", "kind": "Filter", "name": "f"}}
_ISTIO = "networking.istio.io/v1"

SAMPLES: dict[str, tuple[str, dict[str, Any], str]] = {
    "Service": (
        "v1",
        {"ports": [{"name": "http", "port": 80}], "sessionAffinity": "ClientIP"},
        "spec.sessionAffinity",
    ),
    "GatewayClass": (
        "gateway.networking.k8s.io/v1",
        {
            "controllerName": "meshxds.io/gateway-controller",
            "parametersRef": {"group": "example.com", "kind": "Config", "name": "c"},
        },
        "spec.parametersRef",
    ),
    "Gateway": (
        "gateway.networking.k8s.io/v1",
        {**_GW, "infrastructure": {"labels": {"a": "b"}}},
        "spec.infrastructure",
    ),
    "HTTPRoute": (
        "gateway.networking.k8s.io/v1",
        {
            "parentRefs": _PARENT,
            "rules": [{"filters": [_EXTENSION], "backendRefs": [{"name": "web", "port": 80}]}],
        },
        "spec.rules[0].filters[0].extensionRef",
    ),
    "GRPCRoute": (
        "gateway.networking.k8s.io/v1",
        {
            "parentRefs": _PARENT,
            "rules": [{"filters": [_EXTENSION], "backendRefs": [{"name": "web", "port": 80}]}],
        },
        "spec.rules[0].filters[0].extensionRef",
    ),
    "BackendTLSPolicy": (
        "gateway.networking.k8s.io/v1",
        {
            "targetRefs": [{"group": "", "kind": "Service", "name": "web"}],
            "validation": {"hostname": "web.example.com", "wellKnownCACertificates": "System"},
            "options": {"example.com/curves": "X25519"},
        },
        "spec.options",
    ),
    "HTTPListenerPolicy": (
        "gateway.kgateway.dev/v1alpha1",
        {
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
            "accessLog": [{"fileSink": {"path": "/dev/stdout"}, "filter": {"responseFlagFilter": {}}}],
        },
        "spec.accessLog[0].filter",
    ),
    "Gateway.networking.istio.io": (
        _ISTIO,
        {
            "selector": {"istio": "edge"},
            "servers": [
                {
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["*"],
                    "tls": {
                        "mode": "SIMPLE",
                        "serverCertificate": "/c.pem",
                        "privateKey": "/k.pem",
                        "caCrl": "/crl",
                    },
                }
            ],
        },
        "spec.servers[0].tls.caCrl",
    ),
    "VirtualService": (
        _ISTIO,
        {
            "hosts": ["web"],
            "http": [
                {"route": [{"destination": {"host": "web"}}], "retries": {"retryRemoteLocalities": True}}
            ],
        },
        "spec.http[0].retries.retryRemoteLocalities",
    ),
    "DestinationRule": (
        _ISTIO,
        {"host": "web", "workloadSelector": {"matchLabels": {"app": "a"}}},
        "spec.workloadSelector",
    ),
    "ServiceEntry": (
        _ISTIO,
        {
            "hosts": ["ext.example.com"],
            "addresses": ["240.0.0.1"],
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
            "resolution": "DNS",
        },
        "spec.addresses",
    ),
    "WorkloadEntry": (_ISTIO, {"address": "10.0.0.2", "locality": "region/zone"}, "spec.locality"),
}
"""Kind (Istio's Gateway by its ref's prefix) → (apiVersion, spec, the unserved field it sets)."""

STATUS_LISTS = {"HTTPRoute": "parents", "GRPCRoute": "parents", "BackendTLSPolicy": "ancestors"}


def _manifest(kind: str) -> dict[str, Any]:
    api_version, spec, _ = SAMPLES[kind]
    metadata: dict[str, Any] = {
        "name": "gw" if kind == "Gateway" else "meshxds" if kind == "GatewayClass" else "web"
    }
    if kind != "GatewayClass":
        metadata["namespace"] = "apps"
    return {"apiVersion": api_version, "kind": kind.split(".")[0], "metadata": metadata, "spec": spec}


def _ref(kind: str) -> str:
    return {"GatewayClass": "GatewayClass/meshxds", "Gateway": "Gateway/apps/gw"}.get(
        kind, f"{kind}/apps/web"
    )


def test_the_samples_cover_every_kind_with_an_unserved_field() -> None:
    with_unserved = {
        model.KIND
        if model.API_GROUP != "networking.istio.io" or model.KIND != "Gateway"
        else "Gateway.networking.istio.io"
        for model in KINDS.values()
        if any(unserved_marker(c.model_fields[n]) for c, n in model_fields().values() if _reaches(model, c))
    }
    assert set(SAMPLES) == with_unserved


def _reaches(model: type[BaseModel], target: type[BaseModel]) -> bool:
    seen: set[type[BaseModel]] = set()
    stack = [model]
    while stack:
        cls = stack.pop()
        if cls is target:
            return True
        if cls in seen:
            continue
        seen.add(cls)
        for name, field in cls.model_fields.items():
            if unserved_marker(field) is None and not (name == "metadata" and issubclass(cls, Resource)):
                stack.extend(_models_in(field.annotation))
    return False


def test_each_sample_is_warned_about_naming_object_and_field() -> None:
    for kind, (_, _, path) in SAMPLES.items():
        resources = parse_documents([SourcedDocument(path="x.yaml", index=0, body=_manifest(kind))])
        (obj,) = list(resources)
        expected = f"x.yaml: {obj.ref}: field {path} is not served by meshxds ("
        assert [w for w in resources.warnings if w.startswith(expected)], (kind, resources.warnings)


def test_validate_reports_every_sample_and_gateway_api_status_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for index, kind in enumerate(SAMPLES):
        (tmp_path / f"{index:02d}.yaml").write_text(json.dumps(_manifest(kind)))
    assert main(["validate", "--config-dir", str(tmp_path), "--output", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    messages = [w["message"] for w in report["warnings"]]
    for kind, (_, _, path) in SAMPLES.items():
        ref = "Gateway.networking.istio.io/apps/web" if kind.endswith("istio.io") else _ref(kind)
        assert any(
            re.search(rf"{re.escape(ref)}: field {re.escape(path)} is not served by meshxds", m)
            for m in messages
        ), (
            kind,
            messages,
        )
    assert any(
        "field spec.workloadSelector" in m and m.endswith("; the rule is not applied") for m in messages
    )
    statuses = {(s["kind"], s["name"]): s["status"] for s in report["status"]}
    for kind in ("GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "BackendTLSPolicy"):
        status = statuses[
            (kind, "meshxds" if kind == "GatewayClass" else "gw" if kind == "Gateway" else "web")
        ]
        entries = status[STATUS_LISTS[kind]] if kind in STATUS_LISTS else [status]
        assert entries, (kind, status)
        for entry in entries:
            (found,) = [c for c in entry["conditions"] if c["type"] == "meshxds.io/UnservedFields"]
            assert (found["status"], found["reason"]) == ("True", "NotServed")
            assert f"{SAMPLES[kind][2]} is not served by meshxds" in found["message"]
