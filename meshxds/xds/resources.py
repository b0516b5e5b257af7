"""IR → Envoy v3 protobuf (upb, from ``xds-protos``).

One ``build_<envoy type>`` per resource type and small ``_apply_*`` helpers per feature. Pure
and deterministic: the same IR gives byte-identical protos, so versions (hashes of the bytes)
only change when the config does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import (
    address_pb2,
    base_pb2,
    config_source_pb2,
    health_check_pb2,
    protocol_pb2,
    socket_option_pb2,
)
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.access_loggers.file.v3 import file_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.matcher.v3 import regex_pb2
from envoy.type.v3 import http_pb2, percent_pb2
from google.protobuf import struct_pb2, wrappers_pb2
from google.protobuf.message import Message

from meshxds import ir
from meshxds.xds import filters
from meshxds.xds.cache import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, TYPE_SECRET
from meshxds.xds.values import duration, pack, string_matcher

__all__ = [
    "HTTP_PROTOCOL_OPTIONS_KEY",
    "INVALID_BACKEND_CLUSTER",
    "build_cluster",
    "build_cluster_load_assignment",
    "build_listener",
    "build_resources",
    "build_route_configuration",
    "build_secret",
    "resource_parts",
]

HTTP_PROTOCOL_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
INVALID_BACKEND_CLUSTER = "meshxds|invalid-backend"
"""Never defined: weight sent here gets ``cluster_not_found_response_code`` (500), which is how
the Gateway API wants the share of traffic for an unresolvable backendRef answered."""

_REDIRECT_CODES = {
    301: route_components_pb2.RedirectAction.MOVED_PERMANENTLY,
    302: route_components_pb2.RedirectAction.FOUND,
    303: route_components_pb2.RedirectAction.SEE_OTHER,
    307: route_components_pb2.RedirectAction.TEMPORARY_REDIRECT,
    308: route_components_pb2.RedirectAction.PERMANENT_REDIRECT,
}


def _ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _socket(address: str, port: int) -> address_pb2.Address:
    if address.startswith("unix://"):
        # Istio's bind for gateway-internal servers: a Unix socket path (``@name`` is abstract).
        return address_pb2.Address(pipe=address_pb2.Pipe(path=address.removeprefix("unix://")))
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=address, port_value=port))


# --- clusters ---------------------------------------------------------------------------------


def _apply_upstream_protocol(
    cluster: cluster_pb2.Cluster,
    protocol: ir.UpstreamProtocol,
    max_requests_per_connection: int | None = None,
) -> None:
    options = http_protocol_options_pb2.HttpProtocolOptions()
    if max_requests_per_connection is not None:
        options.common_http_protocol_options.max_requests_per_connection.value = max_requests_per_connection
    if protocol is ir.UpstreamProtocol.HTTP2:
        options.explicit_http_config.http2_protocol_options.SetInParent()
    elif protocol is ir.UpstreamProtocol.DOWNSTREAM:
        options.use_downstream_protocol_config.http_protocol_options.SetInParent()
        options.use_downstream_protocol_config.http2_protocol_options.SetInParent()
    elif max_requests_per_connection is None:
        return  # HTTP/1.1 and TCP: Envoy's default needs no options
    else:
        options.explicit_http_config.http_protocol_options.SetInParent()
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(pack(options))


def build_cluster(cluster: ir.Cluster) -> cluster_pb2.Cluster:
    out = cluster_pb2.Cluster(
        name=cluster.name,
        connect_timeout=duration(cluster.connect_timeout_s),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    if cluster.discovery == "EDS":
        out.type = cluster_pb2.Cluster.EDS
        out.eds_cluster_config.eds_config.CopyFrom(_ads_source())
        out.eds_cluster_config.service_name = cluster.name
    else:
        out.type = (
            cluster_pb2.Cluster.STATIC if cluster.discovery == "STATIC" else cluster_pb2.Cluster.STRICT_DNS
        )
        if cluster.discovery == "STRICT_DNS":
            # Most services listen on IPv4; Envoy's AUTO prefers IPv6 and fails where only v4 listens.
            out.dns_lookup_family = cluster_pb2.Cluster.V4_PREFERRED
        out.load_assignment.CopyFrom(build_cluster_load_assignment(cluster))
    _apply_upstream_protocol(out, cluster.upstream_protocol, cluster.max_requests_per_connection)
    out.lb_policy = _LB_POLICIES[cluster.lb_policy]
    if cluster.ring_size:
        if cluster.lb_policy == "MAGLEV":
            out.maglev_lb_config.table_size.value = cluster.ring_size
        elif cluster.lb_policy == "RING_HASH":
            out.ring_hash_lb_config.minimum_ring_size.value = cluster.ring_size
    if cluster.circuit_breaker is not None:
        _apply_circuit_breaker(out, cluster.circuit_breaker)
    if cluster.outlier_detection is not None:
        _apply_outlier_detection(out, cluster.outlier_detection)
    if cluster.http_options is not None:
        _apply_http_options(out, cluster.upstream_protocol, cluster.http_options)
    if cluster.tcp_keepalive is not None:
        _apply_tcp_keepalive(out, cluster.tcp_keepalive)
    for check in cluster.health_checks:
        out.health_checks.append(_health_check(check, cluster.upstream_protocol))
    if cluster.upstream_tls is not None:
        out.transport_socket.name = "envoy.transport_sockets.tls"
        out.transport_socket.typed_config.CopyFrom(pack(_upstream_tls(cluster.upstream_tls)))
    return out


_LB_POLICIES = {
    "ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
    "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
    "RANDOM": cluster_pb2.Cluster.RANDOM,
    "RING_HASH": cluster_pb2.Cluster.RING_HASH,
    "MAGLEV": cluster_pb2.Cluster.MAGLEV,
    "CLUSTER_PROVIDED": cluster_pb2.Cluster.CLUSTER_PROVIDED,
}


_HTTP2_CODEC = http_pb2.HTTP2


def _apply_http_options(
    out: cluster_pb2.Cluster, protocol: ir.UpstreamProtocol, http: ir.UpstreamHttpOptions
) -> None:
    """Over what ``_apply_upstream_protocol`` wrote: common options on any HTTP cluster, the
    HTTP/2 ones where Envoy may speak HTTP/2. A TCP cluster has no HTTP to tune."""
    if protocol is ir.UpstreamProtocol.TCP:
        return
    options = http_protocol_options_pb2.HttpProtocolOptions()
    packed = out.typed_extension_protocol_options.get(HTTP_PROTOCOL_OPTIONS_KEY)
    if packed is not None:
        packed.Unpack(options)
    else:  # HTTP/1.1 without options so far
        options.explicit_http_config.http_protocol_options.SetInParent()
    common = options.common_http_protocol_options
    if http.idle_timeout_s is not None:
        common.idle_timeout.CopyFrom(duration(http.idle_timeout_s))
    if http.max_connection_duration_s is not None:
        common.max_connection_duration.CopyFrom(duration(http.max_connection_duration_s))
    if http.max_stream_duration_s is not None:
        common.max_stream_duration.CopyFrom(duration(http.max_stream_duration_s))
    if http.max_headers_count is not None:
        common.max_headers_count.value = http.max_headers_count
    h2_options = []
    if options.explicit_http_config.HasField("http2_protocol_options"):
        h2_options.append(options.explicit_http_config.http2_protocol_options)
    if options.use_downstream_protocol_config.HasField("http2_protocol_options"):
        h2_options.append(options.use_downstream_protocol_config.http2_protocol_options)
    for h2 in h2_options:
        _apply_h2_limits(h2, http)
        if http.h2_stream_error_on_invalid_http_message is not None:
            h2.override_stream_error_on_invalid_http_message.value = (
                http.h2_stream_error_on_invalid_http_message
            )
        if http.h2_keepalive is not None:
            _apply_h2_keepalive(h2.connection_keepalive, http.h2_keepalive)
    out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].CopyFrom(pack(options))


class _H2Limits(Protocol):
    """What upstream and downstream HTTP options share for an HTTP/2 connection."""

    @property
    def h2_max_concurrent_streams(self) -> int | None: ...
    @property
    def h2_initial_stream_window_size(self) -> int | None: ...
    @property
    def h2_initial_connection_window_size(self) -> int | None: ...


def _apply_h2_limits(h2: protocol_pb2.Http2ProtocolOptions, limits: _H2Limits) -> None:
    """The stream limit and flow-control windows, the same fields toward clients and backends."""
    if limits.h2_max_concurrent_streams is not None:
        h2.max_concurrent_streams.value = limits.h2_max_concurrent_streams
    if limits.h2_initial_stream_window_size is not None:
        h2.initial_stream_window_size.value = limits.h2_initial_stream_window_size
    if limits.h2_initial_connection_window_size is not None:
        h2.initial_connection_window_size.value = limits.h2_initial_connection_window_size


def _apply_h2_keepalive(out: protocol_pb2.KeepaliveSettings, keepalive: ir.Http2Keepalive) -> None:
    out.timeout.CopyFrom(duration(keepalive.timeout_s))
    if keepalive.interval_s is not None:
        out.interval.CopyFrom(duration(keepalive.interval_s))
    if keepalive.connection_idle_interval_s is not None:
        out.connection_idle_interval.CopyFrom(duration(keepalive.connection_idle_interval_s))


def _apply_tcp_keepalive(out: cluster_pb2.Cluster, keepalive: ir.TcpKeepalive) -> None:
    tcp = out.upstream_connection_options.tcp_keepalive
    tcp.SetInParent()
    if keepalive.probes is not None:
        tcp.keepalive_probes.value = keepalive.probes
    if keepalive.time_s is not None:
        tcp.keepalive_time.value = keepalive.time_s
    if keepalive.interval_s is not None:
        tcp.keepalive_interval.value = keepalive.interval_s


def _health_check(check: ir.HealthCheck, protocol: ir.UpstreamProtocol) -> health_check_pb2.HealthCheck:
    out = health_check_pb2.HealthCheck(
        interval=duration(check.interval_s),
        # Envoy's default for a cluster that has had no traffic yet is 60 s, and it keeps that
        # pace until the next check: an endpoint that fails just after start would keep traffic
        # for up to a minute. The interval the policy gives is the interval.
        no_traffic_interval=duration(check.interval_s),
        timeout=duration(check.timeout_s),
        unhealthy_threshold=wrappers_pb2.UInt32Value(value=check.unhealthy_threshold),
        healthy_threshold=wrappers_pb2.UInt32Value(value=check.healthy_threshold),
    )
    if check.kind == "grpc":
        out.grpc_health_check.service_name = check.service_name
        out.grpc_health_check.authority = check.host
        return out
    http = out.http_health_check
    http.path = check.path
    http.host = check.host
    if check.method:
        http.method = base_pb2.RequestMethod.Value(check.method)
    if protocol == ir.UpstreamProtocol.HTTP2:
        # The checks speak what the cluster speaks: an h2c-only endpoint refuses HTTP/1.1.
        http.codec_client_type = _HTTP2_CODEC
    return out


def _apply_circuit_breaker(out: cluster_pb2.Cluster, cb: ir.CircuitBreaker) -> None:
    thresholds = out.circuit_breakers.thresholds.add()
    for field_name, value in (
        ("max_connections", cb.max_connections),
        ("max_pending_requests", cb.max_pending_requests),
        ("max_requests", cb.max_requests),
        ("max_retries", cb.max_retries),
    ):
        if value is not None:
            getattr(thresholds, field_name).value = value


def _apply_outlier_detection(out: cluster_pb2.Cluster, od: ir.OutlierDetection) -> None:
    detection = out.outlier_detection
    detection.SetInParent()
    if od.consecutive_5xx is not None:
        detection.consecutive_5xx.value = od.consecutive_5xx
    if od.consecutive_gateway_errors is not None:
        detection.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        detection.enforcing_consecutive_gateway_failure.value = 100
    if od.interval_s is not None:
        detection.interval.CopyFrom(duration(od.interval_s))
    if od.base_ejection_time_s is not None:
        detection.base_ejection_time.CopyFrom(duration(od.base_ejection_time_s))
    if od.max_ejection_percent is not None:
        detection.max_ejection_percent.value = od.max_ejection_percent
    if od.min_health_percent is not None:
        out.common_lb_config.healthy_panic_threshold.value = float(od.min_health_percent)


_NO_CERTIFICATE_HASH = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
"""SHA-256 of the empty string: no DER certificate hashes to it."""


def _upstream_tls(tls: ir.UpstreamTls) -> tls_pb2.UpstreamTlsContext:
    context = tls_pb2.UpstreamTlsContext(sni=tls.sni)
    common = context.common_tls_context
    common.alpn_protocols.extend(tls.alpn)
    if tls.client_secret:
        common.tls_certificate_sds_secret_configs.add(name=tls.client_secret, sds_config=_ads_source())
    elif tls.client_cert_file and tls.client_key_file:
        cert = common.tls_certificates.add()
        cert.certificate_chain.filename = tls.client_cert_file
        cert.private_key.filename = tls.client_key_file
    if tls.insecure_skip_verify:
        return context
    validation = _validation(
        ca_file=tls.ca_file,
        subject_alt_names=tls.subject_alt_names,
        uri_subject_alt_names=tls.uri_subject_alt_names,
    )
    if tls.reject_all:
        # No usable CA: a certificate hash no certificate has (SHA-256 of nothing is never a DER
        # certificate's) on top of the trust anchor, so every handshake fails: Envoy answers 503.
        if not tls.ca_file:
            validation.system_root_certs.SetInParent()
        validation.verify_certificate_hash.append(_NO_CERTIFICATE_HASH)
        common.validation_context.CopyFrom(validation)
        return context
    if not tls.ca_secret and not tls.ca_file:
        # Istio's default for SIMPLE without a CA: the proxy's system roots.
        validation.system_root_certs.SetInParent()
    _apply_validation(common, validation, ca_secret=tls.ca_secret)
    return context


def _validation(
    *,
    ca_file: str | None,
    subject_alt_names: tuple[str, ...] = (),
    uri_subject_alt_names: tuple[str, ...] = (),
    spki_hashes: tuple[str, ...] = (),
    cert_hashes: tuple[str, ...] = (),
) -> common_pb2.CertificateValidationContext:
    validation = common_pb2.CertificateValidationContext()
    if ca_file:
        validation.trusted_ca.filename = ca_file
    validation.verify_certificate_spki.extend(spki_hashes)
    validation.verify_certificate_hash.extend(cert_hashes)
    for san in subject_alt_names:
        matcher = validation.match_typed_subject_alt_names.add()
        matcher.san_type = common_pb2.SubjectAltNameMatcher.DNS
        matcher.matcher.exact = san
    for uri in uri_subject_alt_names:
        matcher = validation.match_typed_subject_alt_names.add()
        matcher.san_type = common_pb2.SubjectAltNameMatcher.URI
        matcher.matcher.exact = uri
    return validation


def _apply_validation(
    common: common_pb2.CommonTlsContext,
    validation: common_pb2.CertificateValidationContext,
    *,
    ca_secret: str | None,
) -> None:
    if ca_secret:
        # The CA over SDS plus inline matchers: Envoy merges them as a combined validation context.
        combined = common.combined_validation_context
        combined.default_validation_context.CopyFrom(validation)
        combined.validation_context_sds_secret_config.name = ca_secret
        combined.validation_context_sds_secret_config.sds_config.CopyFrom(_ads_source())
    elif validation.ByteSize():
        common.validation_context.CopyFrom(validation)


def build_cluster_load_assignment(cluster: ir.Cluster) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=cluster.name)
    if cluster.endpoints:
        locality = cla.endpoints.add()
        for ep in cluster.endpoints:
            locality.lb_endpoints.append(
                endpoint_components_pb2.LbEndpoint(
                    endpoint=endpoint_components_pb2.Endpoint(address=_socket(ep.address, ep.port))
                )
            )
    return cla


# --- routes -----------------------------------------------------------------------------------


def _route_match(match: ir.RouteMatch) -> route_components_pb2.RouteMatch:
    out = route_components_pb2.RouteMatch()
    path = match.path
    if path.kind == "exact":
        out.path = path.value
    elif path.kind == "regex":
        out.safe_regex.regex = path.value
    elif path.kind == "path_separated_prefix":
        out.path_separated_prefix = path.value
    else:
        out.prefix = path.value
    if path.ignore_case:
        out.case_sensitive.value = False
    for header in match.headers:
        matcher = out.headers.add(
            name=header.name,
            invert_match=header.invert,
            treat_missing_header_as_empty=header.treat_missing_as_empty,
        )
        if header.match.kind == "present":
            matcher.present_match = True
        else:
            matcher.string_match.CopyFrom(string_matcher(header.match))
    for param in match.query_params:
        out.query_parameters.add(name=param.name).string_match.CopyFrom(string_matcher(param.match))
    return out


def _prefix_rewrite(matched: ir.PathMatch, replacement: str) -> regex_pb2.RegexMatchAndSubstitute:
    """Replace the matched prefix, leaving exactly one ``/`` at the seam.

    ``/strip-prefix/three`` with prefix ``/strip-prefix`` replaced by ``/`` must become
    ``/three``, not ``//three``; a plain Envoy ``prefix_rewrite`` cannot do that.
    """
    prefix = matched.value if matched.kind in ("prefix", "path_separated_prefix") else "/"
    if prefix == "/":
        pattern, substitution = "^/", replacement if replacement.endswith("/") else replacement + "/"
    elif replacement.endswith("/"):
        pattern, substitution = f"^{re.escape(prefix)}/*", replacement
    else:
        pattern, substitution = f"^{re.escape(prefix)}", replacement
    return regex_pb2.RegexMatchAndSubstitute(
        pattern=regex_pb2.RegexMatcher(regex=pattern), substitution=substitution
    )


def _full_path_rewrite(path: str) -> regex_pb2.RegexMatchAndSubstitute:
    return regex_pb2.RegexMatchAndSubstitute(pattern=regex_pb2.RegexMatcher(regex="^/.*$"), substitution=path)


def _apply_forward(out: route_components_pb2.Route, route: ir.Route, action: ir.ForwardAction) -> None:
    ra = out.route
    per_backend_headers = any(b.request_headers or b.response_headers for b in action.backends)
    if len(action.backends) == 1 and not action.invalid_weight and not per_backend_headers:
        ra.cluster = action.backends[0].cluster
    else:
        for backend in action.backends:
            weight = ra.weighted_clusters.clusters.add(name=backend.cluster, weight=_uint32(backend.weight))
            _apply_headers(backend.request_headers, weight.request_headers_to_add)
            weight.request_headers_to_remove.extend(backend.request_headers.remove)
            _apply_headers(backend.response_headers, weight.response_headers_to_add)
            weight.response_headers_to_remove.extend(backend.response_headers.remove)
        if action.invalid_weight:
            ra.weighted_clusters.clusters.add(
                name=INVALID_BACKEND_CLUSTER, weight=_uint32(action.invalid_weight)
            )
            ra.cluster_not_found_response_code = route_components_pb2.RouteAction.INTERNAL_SERVER_ERROR
    for policy in action.hash_policies:
        _apply_hash_policy(ra.hash_policy.add(), policy)
    for mirror in action.mirrors:
        policy = ra.request_mirror_policies.add(cluster=mirror.cluster)
        if mirror.percent < 100:
            policy.runtime_fraction.default_value.numerator = round(mirror.percent * 10_000)
            policy.runtime_fraction.default_value.denominator = percent_pb2.FractionalPercent.MILLION
    if action.timeout_s is not None:
        ra.timeout.CopyFrom(duration(action.timeout_s))
    if action.grpc_timeout_header_max_s is not None:
        _apply_grpc_timeout(ra, action)
    if action.idle_timeout_s is not None:
        ra.idle_timeout.CopyFrom(duration(action.idle_timeout_s))
    if action.rewrite is not None:
        if action.rewrite.host:
            ra.host_rewrite_literal = action.rewrite.host
        if action.rewrite.regex is not None:
            pattern, substitution = action.rewrite.regex
            ra.regex_rewrite.pattern.regex = pattern
            ra.regex_rewrite.substitution = substitution
        elif action.rewrite.full_path is not None:
            ra.regex_rewrite.CopyFrom(_full_path_rewrite(action.rewrite.full_path))
        elif action.rewrite.prefix is not None:
            ra.regex_rewrite.CopyFrom(_prefix_rewrite(route.match.path, action.rewrite.prefix))


def _apply_grpc_timeout(ra: route_components_pb2.RouteAction, action: ir.ForwardAction) -> None:
    """Let a gRPC client's ``grpc-timeout`` end the call at the proxy.

    A route with ``max_stream_duration`` set is in Envoy's "new timeouts" mode, where the route
    ``timeout`` is ignored. So only a route without a timeout gets it: Envoy then ends the stream
    at the client's deadline with DEADLINE_EXCEEDED. A route with a timeout keeps it and gets
    ``max_grpc_timeout`` (deprecated, and what Istio sends on every route): for gRPC requests the
    router's timeout becomes the header's value capped by it, answered as Envoy's 504
    (UNAVAILABLE to a gRPC client); other requests keep the route timeout."""
    cap = duration(action.grpc_timeout_header_max_s or 0.0)
    if action.timeout_s == 0:
        ra.max_stream_duration.grpc_timeout_header_max.CopyFrom(cap)
    else:
        ra.max_grpc_timeout.CopyFrom(cap)


def _apply_hash_policy(out: route_components_pb2.RouteAction.HashPolicy, policy: ir.HashPolicy) -> None:
    if policy.kind == "header":
        out.header.header_name = policy.name
    elif policy.kind == "cookie":
        out.cookie.name = policy.name
        if policy.cookie_ttl_s is not None:
            out.cookie.ttl.CopyFrom(duration(policy.cookie_ttl_s))
        if policy.cookie_path:
            out.cookie.path = policy.cookie_path
    elif policy.kind == "query_parameter":
        out.query_parameter.name = policy.name
    else:
        out.connection_properties.source_ip = True


def _uint32(value: int) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=value)


def _apply_redirect(out: route_components_pb2.Route, route: ir.Route, action: ir.Redirect) -> None:
    rd = out.redirect
    if action.scheme:
        rd.scheme_redirect = action.scheme
    if action.host:
        rd.host_redirect = action.host
    if action.port:
        rd.port_redirect = action.port
    if action.full_path is not None:
        rd.path_redirect = action.full_path
    elif action.prefix is not None:
        rd.regex_rewrite.CopyFrom(_prefix_rewrite(route.match.path, action.prefix))
    rd.response_code = _REDIRECT_CODES.get(action.status_code, route_components_pb2.RedirectAction.FOUND)


def _apply_headers(mutation: ir.HeaderMutation, options: Any) -> None:
    """Fill a repeated ``HeaderValueOption`` field: ``set`` overwrites, ``add`` appends."""
    for pairs, append_action in (
        (mutation.set, base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD),
        (mutation.add, base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD),
    ):
        for key, value in pairs:
            options.add(header=base_pb2.HeaderValue(key=key, value=value), append_action=append_action)


def _apply_retries(action: route_components_pb2.RouteAction, retries: ir.RetryPolicy) -> None:
    policy = action.retry_policy
    policy.retry_on = retries.retry_on
    # Always written, 0 included: an unset num_retries means 1 to Envoy.
    policy.num_retries.value = retries.attempts
    if retries.per_try_timeout_s is not None:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout_s))
    policy.retriable_status_codes.extend(retries.retriable_status_codes)
    if retries.backoff_base_s is not None:
        # Envoy's jittered exponential backoff; the cap is its own default, ten times the base.
        policy.retry_back_off.base_interval.CopyFrom(duration(retries.backoff_base_s))
        policy.retry_back_off.max_interval.CopyFrom(duration(retries.backoff_base_s * 10))


def build_route(route: ir.Route) -> route_components_pb2.Route:
    out = route_components_pb2.Route(name=route.name, match=_route_match(route.match))
    action = route.action
    if isinstance(action, ir.ForwardAction):
        _apply_forward(out, route, action)
    elif isinstance(action, ir.Redirect):
        _apply_redirect(out, route, action)
    else:
        out.direct_response.status = action.status
        if action.body_bytes:
            out.direct_response.body.inline_bytes = action.body_bytes
        elif action.body:
            out.direct_response.body.inline_string = action.body
    if route.retries is not None and isinstance(action, ir.ForwardAction):
        _apply_retries(out.route, route.retries)
    filters.patch_route(route, out)
    _apply_headers(route.request_headers, out.request_headers_to_add)
    out.request_headers_to_remove.extend(route.request_headers.remove)
    _apply_headers(route.response_headers, out.response_headers_to_add)
    out.response_headers_to_remove.extend(route.response_headers.remove)
    return out


def build_route_configuration(table: ir.RouteTable) -> route_pb2.RouteConfiguration:
    # Hosts are matched without their port: "http2.example.com:8080" must find "http2.example.com".
    out = route_pb2.RouteConfiguration(name=table.name, ignore_port_in_host_matching=True)
    for vhost in table.virtual_hosts:
        out.virtual_hosts.append(
            route_components_pb2.VirtualHost(
                name=vhost.name,
                domains=list(vhost.domains),
                routes=[build_route(r) for r in vhost.routes],
                require_tls=route_components_pb2.VirtualHost.ALL
                if vhost.require_tls
                else route_components_pb2.VirtualHost.NONE,
            )
        )
    return out


# --- listeners --------------------------------------------------------------------------------


def build_access_log(log: ir.AccessLog) -> accesslog_pb2.AccessLog:
    file_log = file_pb2.FileAccessLog(path=log.path)
    if log.json_format is not None:
        fmt = struct_pb2.Struct()
        fmt.update(dict(log.json_format))
        file_log.log_format.json_format.CopyFrom(fmt)
    elif log.text_format is not None:
        text = log.text_format if log.text_format.endswith("\n") else log.text_format + "\n"
        file_log.log_format.text_format_source.inline_string = text
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.file", typed_config=pack(file_log))


def _http_connection_manager(listener: ir.Listener, table: ir.RouteTable) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager(
        access_log=[build_access_log(a) for a in listener.access_logs],
        stat_prefix=listener.stat_prefix,
        # AUTO accepts HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port; over TLS the
        # codec follows ALPN.
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(config_source=_ads_source(), route_config_name=table.name),
        http_filters=filters.http_filters(table),
        # WebSocket on every route, as Istio, Envoy Gateway and kgateway do: HTTP/1.1 Upgrade,
        # and over HTTP/2 the extended CONNECT of RFC 8441 (Envoy turns it into an HTTP/1.1
        # Upgrade for an HTTP/1.1 upstream). A request that asks for no upgrade is unaffected.
        upgrade_configs=[hcm_pb2.HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(allow_connect=True),
    )
    if listener.http_options is not None:
        _apply_downstream_http_options(hcm, listener.http_options)
    return hcm


def _apply_downstream_http_options(
    hcm: hcm_pb2.HttpConnectionManager, http: ir.DownstreamHttpOptions
) -> None:
    if http.stream_idle_timeout_s is not None:
        hcm.stream_idle_timeout.CopyFrom(duration(http.stream_idle_timeout_s))
    common = hcm.common_http_protocol_options
    if http.idle_timeout_s is not None:
        common.idle_timeout.CopyFrom(duration(http.idle_timeout_s))
    if http.max_requests_per_connection is not None:
        common.max_requests_per_connection.value = http.max_requests_per_connection
    if http.max_headers_count is not None:
        common.max_headers_count.value = http.max_headers_count
    h2 = hcm.http2_protocol_options
    _apply_h2_limits(h2, http)
    if http.h2_allow_connect is not None:
        h2.allow_connect = http.h2_allow_connect


def _tcp_proxy(listener: ir.Listener, chain: ir.FilterChain) -> tcp_proxy_pb2.TcpProxy:
    proxy = tcp_proxy_pb2.TcpProxy(
        stat_prefix=listener.stat_prefix,
        access_log=[build_access_log(a) for a in listener.access_logs],
    )
    options = chain.tcp_options
    if options is not None and options.idle_timeout_s is not None:
        proxy.idle_timeout.CopyFrom(duration(options.idle_timeout_s))
    if options is not None and options.max_connection_duration_s is not None:
        proxy.max_downstream_connection_duration.CopyFrom(duration(options.max_connection_duration_s))
    if len(chain.tcp_backends) == 1:
        proxy.cluster = chain.tcp_backends[0].cluster
    else:
        for backend in chain.tcp_backends:
            proxy.weighted_clusters.clusters.add(name=backend.cluster, weight=backend.weight)
    return proxy


def _downstream_tls(tls: ir.DownstreamTls) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext()
    common = context.common_tls_context
    common.alpn_protocols.extend(tls.alpn)
    for name in tls.certificates:
        common.tls_certificate_sds_secret_configs.add(name=name, sds_config=_ads_source())
    for chain_path, key_path in tls.certificate_files:
        cert = common.tls_certificates.add()
        cert.certificate_chain.filename = chain_path
        cert.private_key.filename = key_path
    if tls.min_version:
        common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TlsProtocol.Value(
            tls.min_version
        )
    if tls.max_version:
        common.tls_params.tls_maximum_protocol_version = common_pb2.TlsParameters.TlsProtocol.Value(
            tls.max_version
        )
    common.tls_params.cipher_suites.extend(tls.cipher_suites)
    if tls.require_client_certificate:
        context.require_client_certificate.value = True
    validation = _validation(
        ca_file=tls.ca_file,
        subject_alt_names=tls.subject_alt_names,
        spki_hashes=tls.spki_hashes,
        cert_hashes=tls.cert_hashes,
    )
    if tls.accept_untrusted:
        validation.trust_chain_verification = common_pb2.CertificateValidationContext.ACCEPT_UNTRUSTED
    _apply_validation(common, validation, ca_secret=tls.ca_secret)
    return context


def _filter_chain(listener: ir.Listener, chain: ir.FilterChain) -> listener_components_pb2.FilterChain:
    out = listener_components_pb2.FilterChain(name=chain.name)
    if chain.server_names:
        out.filter_chain_match.server_names.extend(chain.server_names)
    for cidr in chain.destination_ranges:
        address, _, length = cidr.partition("/")
        out.filter_chain_match.prefix_ranges.add(
            address_prefix=address, prefix_len=_uint32(int(length or (128 if ":" in address else 32)))
        )
    if chain.tls is not None:
        out.transport_socket.name = "envoy.transport_sockets.tls"
        out.transport_socket.typed_config.CopyFrom(pack(_downstream_tls(chain.tls)))
    if chain.route_table is not None:
        out.filters.add(
            name="envoy.filters.network.http_connection_manager",
            typed_config=pack(_http_connection_manager(listener, chain.route_table)),
        )
    else:
        out.filters.add(
            name="envoy.filters.network.tcp_proxy", typed_config=pack(_tcp_proxy(listener, chain))
        )
    return out


# Linux socket option numbers (Envoy passes them to setsockopt as they are).
_SOL_SOCKET, _SO_KEEPALIVE = 1, 9
_IPPROTO_TCP, _TCP_KEEPIDLE, _TCP_KEEPINTVL, _TCP_KEEPCNT = 6, 4, 5, 6


def _keepalive_socket_options(keepalive: ir.TcpKeepalive) -> list[socket_option_pb2.SocketOption]:
    """A listener has no ``tcp_keepalive`` field (a cluster's upstream_connection_options does):
    keepalive goes on the listening socket, whose accepted connections inherit it (Linux)."""
    prebind = socket_option_pb2.SocketOption.STATE_PREBIND
    options = [
        socket_option_pb2.SocketOption(
            description="SO_KEEPALIVE", level=_SOL_SOCKET, name=_SO_KEEPALIVE, int_value=1, state=prebind
        )
    ]
    for description, name, value in (
        ("TCP_KEEPIDLE", _TCP_KEEPIDLE, keepalive.time_s),
        ("TCP_KEEPINTVL", _TCP_KEEPINTVL, keepalive.interval_s),
        ("TCP_KEEPCNT", _TCP_KEEPCNT, keepalive.probes),
    ):
        if value is not None:
            options.append(
                socket_option_pb2.SocketOption(
                    description=description, level=_IPPROTO_TCP, name=name, int_value=value, state=prebind
                )
            )
    return options


def build_listener(listener: ir.Listener) -> listener_pb2.Listener:
    out = listener_pb2.Listener(name=listener.name, address=_socket(listener.address, listener.port))
    if listener.per_connection_buffer_limit_bytes is not None:
        out.per_connection_buffer_limit_bytes.value = listener.per_connection_buffer_limit_bytes
    if listener.tcp_keepalive is not None:
        out.socket_options.extend(_keepalive_socket_options(listener.tcp_keepalive))
    if listener.inspects_tls:
        out.listener_filters.add(
            name="envoy.filters.listener.tls_inspector", typed_config=pack(tls_inspector_pb2.TlsInspector())
        )
    for chain in listener.chains:
        built = _filter_chain(listener, chain)
        if chain.server_names or chain.destination_ranges or not listener.has_matched_chains:
            out.filter_chains.append(built)
        else:
            # Beside SNI chains, the catch-all goes in default_filter_chain: clients without SNI
            # (or with an unknown one) still land somewhere.
            out.default_filter_chain.CopyFrom(built)
    return out


def build_ca_secret(secret: ir.CaSecret) -> secret_pb2.Secret:
    out = secret_pb2.Secret(name=secret.name)
    out.validation_context.trusted_ca.inline_bytes = secret.ca_certificates
    return out


def build_secret(secret: ir.TlsSecret) -> secret_pb2.Secret:
    out = secret_pb2.Secret(name=secret.name)
    out.tls_certificate.certificate_chain.inline_bytes = secret.certificate_chain
    out.tls_certificate.private_key.inline_bytes = bytes(secret.private_key)
    return out


ResourcePart = tuple[str, str, Any, Callable[[Any], Message]]
"""``(type_url, name, IR node, build)``: one Envoy resource of a proxy group, not built yet."""


def resource_parts(config: ir.ProxyConfig) -> Iterator[ResourcePart]:
    """Every Envoy resource of one proxy group, by type in ``PUSH_ORDER``'s grouping, each as
    the IR node it is built from and its builder: what both ``build_resources`` and the
    snapshot builder's memo go through, so they can never disagree on what a proxy gets."""
    for cluster in config.clusters:
        yield TYPE_CLUSTER, cluster.name, cluster, build_cluster
    for cluster in config.clusters:
        if cluster.discovery == "EDS":
            yield TYPE_ENDPOINT, cluster.name, cluster, build_cluster_load_assignment
    for listener in config.listeners:
        yield TYPE_LISTENER, listener.name, listener, build_listener
    for listener in config.listeners:
        for table in listener.route_tables:
            yield TYPE_ROUTE, table.name, table, build_route_configuration
    for secret in config.secrets:
        yield TYPE_SECRET, secret.name, secret, build_secret
    for ca in config.ca_secrets:
        yield TYPE_SECRET, ca.name, ca, build_ca_secret


def build_resources(config: ir.ProxyConfig) -> dict[str, list[tuple[str, Message]]]:
    """Every Envoy resource of one proxy group, by type URL, as ``(name, message)`` pairs."""
    out: dict[str, list[tuple[str, Message]]] = {
        t: [] for t in (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, TYPE_SECRET)
    }
    for type_url, name, node, build in resource_parts(config):
        out[type_url].append((name, build(node)))
    return out
