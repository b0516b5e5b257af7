"""kgateway extensions (``gateway.kgateway.dev/v1alpha1``): Backend and HTTPListenerPolicy,
as kgateway's HTTP/2 guide uses them, BackendConfigPolicy (active health checks,
connectTimeout, tcpKeepalive, HTTP and HTTP/2 connection options, HTTP/2 keepalive) attached to
Services and Backends, ListenerPolicy (downstream connection settings of a Gateway's listeners)
and TrafficPolicy (its ``retry`` and ``timeouts``, for HTTPRoutes and Gateways)."""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from meshxds.model.base import KubeModel, Resource, Unserved
from meshxds.model.gatewayapi import parse_duration
from meshxds.model.istio import Duration, parse_istio_duration

__all__ = [
    "GROUP",
    "Backend",
    "BackendConfigPolicy",
    "ConnectionKeepalive",
    "HTTPListenerPolicy",
    "HealthCheck",
    "ListenerPolicy",
    "Retry",
    "StaticHost",
    "Timeouts",
    "TrafficPolicy",
]

GROUP = "gateway.kgateway.dev"


class StaticHost(KubeModel):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class StaticBackend(KubeModel):
    hosts: list[StaticHost] = Field(min_length=1)
    app_protocol: str | None = None


class BackendSpec(KubeModel):
    type: Literal["Static", "AWS", "GCP", "DynamicForwardProxy"] = "Static"
    static: StaticBackend | None = None

    @model_validator(mode="after")
    def _static_needs_hosts(self) -> BackendSpec:
        if self.type == "Static" and self.static is None:
            raise ValueError("a Static Backend needs spec.static.hosts")
        return self


class Backend(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha1",)
    KIND: ClassVar[str] = "Backend"
    spec: BackendSpec


class LocalPolicyTargetReference(KubeModel):
    group: str
    kind: str
    name: str = Field(min_length=1)
    section_name: str | None = None


class FileSink(KubeModel):
    path: str = Field(min_length=1)
    string_format: str | None = None
    json_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_format(self) -> FileSink:
        if self.string_format is not None and self.json_format is not None:
            raise ValueError("give stringFormat or jsonFormat, not both")
        return self


class AccessLog(KubeModel):
    file_sink: FileSink | None = None
    grpc_service: Annotated[dict[str, Any] | None, Unserved("gRPC access log sinks")] = None
    filter: Annotated[
        dict[str, Any] | None, Unserved("access log filters", effect="every request is logged")
    ] = None


class HTTPListenerPolicySpec(KubeModel):
    target_refs: list[LocalPolicyTargetReference] = Field(min_length=1)
    access_log: list[AccessLog] = Field(default_factory=list)
    stream_idle_timeout: Duration | None = None
    """The HTTP connection manager's ``stream_idle_timeout``; ``0s`` never."""
    idle_timeout: Duration | None = None
    """Close a client connection without streams for this long; ``0s`` never."""


class HTTPListenerPolicy(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha1",)
    KIND: ClassVar[str] = "HTTPListenerPolicy"
    spec: HTTPListenerPolicySpec


class HealthCheckHttp(KubeModel):
    host: str | None = None
    """The Host header of the checks; unset, the cluster's name (Envoy's default)."""
    path: str = Field(min_length=1, pattern=r"^/")
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"] | None = None


class HealthCheckGrpc(KubeModel):
    service_name: str | None = None
    """The ``grpc.health.v1`` service asked about; unset, the server as a whole (``""``)."""
    authority: str | None = None


class HealthCheck(KubeModel):
    """Active health checking (Envoy's ``HealthCheck``): one of ``http`` and ``grpc``."""

    timeout: Duration
    interval: Duration
    unhealthy_threshold: int | None = Field(default=None, ge=1)
    healthy_threshold: int | None = Field(default=None, ge=1)
    http: HealthCheckHttp | None = None
    grpc: HealthCheckGrpc | None = None

    @model_validator(mode="after")
    def _one_kind_positive_times(self) -> HealthCheck:
        if (self.http is None) == (self.grpc is None):
            raise ValueError("give exactly one of http and grpc")
        for name, value in (("timeout", self.timeout), ("interval", self.interval)):
            if parse_istio_duration(value) <= 0:
                raise ValueError(f"{name} must be greater than 0, not {value!r}")
        return self


class CommonHttpProtocolOptions(KubeModel):
    idle_timeout: Duration | None = None
    """Close an upstream connection without requests for this long; ``0`` never."""
    max_headers_count: int | None = Field(default=None, ge=1)
    max_stream_duration: Duration | None = None
    max_requests_per_connection: int | None = Field(default=None, ge=0)
    """0 or unset: unlimited."""


_QUANTITY = re.compile(r"(\d+)(Ki|Mi|Gi|k|M|G)?")
_QUANTITY_UNITS = {None: 1, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}


def parse_quantity(value: object) -> int:
    """A Kubernetes quantity as HTTP/2 window sizes use it: ``65535``, ``"64Ki"``, ``"1Mi"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int):
        return value
    match = _QUANTITY.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a quantity: give bytes, such as 65535, '64Ki' or '1Mi'")
    return int(match.group(1)) * _QUANTITY_UNITS[match.group(2)]


WindowSize = Annotated[int, BeforeValidator(parse_quantity), Field(ge=65535, le=2147483647)]
"""An HTTP/2 flow-control window: 65535 (the protocol's default) to 2^31 - 1 bytes."""


class ConnectionKeepalive(KubeModel):
    """HTTP/2 PINGs to the upstream (Envoy's ``KeepaliveSettings``): each at least 1ms, as Envoy
    requires; ``timeout`` is required (Envoy needs it)."""

    timeout: Duration
    interval: Duration | None = None
    """Unset: no periodic PINGs, only those ``connectionIdleInterval`` triggers."""
    connection_idle_interval: Duration | None = None

    @model_validator(mode="after")
    def _at_least_1ms(self) -> ConnectionKeepalive:
        for name, value in (
            ("timeout", self.timeout),
            ("interval", self.interval),
            ("connectionIdleInterval", self.connection_idle_interval),
        ):
            if value is not None and parse_istio_duration(value) < 1e-3:
                raise ValueError(f"{name} must be at least 1ms, not {value!r}")
        return self


class Http2ProtocolOptions(KubeModel):
    """Applied to HTTP/2 clusters only (kgateway's rule)."""

    initial_stream_window_size: WindowSize | None = None
    initial_connection_window_size: WindowSize | None = None
    max_concurrent_streams: int | None = Field(default=None, ge=1, le=2147483647)
    override_stream_error_on_invalid_http_message: bool | None = None
    """True: an invalid HTTP/2 message resets only its stream, not the whole connection."""
    connection_keepalive: ConnectionKeepalive | None = None
    """Replaces meshxds's default keepalive on the targeted HTTP/2 clusters."""


class TCPKeepalive(KubeModel):
    keep_alive_probes: int | None = Field(default=None, ge=1)
    keep_alive_time: Duration | None = None
    keep_alive_interval: Duration | None = None

    @model_validator(mode="after")
    def _whole_seconds(self) -> TCPKeepalive:
        # Envoy takes whole seconds, at least one.
        for name, value in (
            ("keepAliveTime", self.keep_alive_time),
            ("keepAliveInterval", self.keep_alive_interval),
        ):
            if value is not None and parse_istio_duration(value) < 1:
                raise ValueError(f"{name} must be at least 1s, not {value!r}")
        return self


class BackendConfigPolicySpec(KubeModel):
    target_refs: list[LocalPolicyTargetReference] = Field(min_length=1, max_length=16)
    connect_timeout: Duration | None = None
    tcp_keepalive: TCPKeepalive | None = None
    common_http_protocol_options: CommonHttpProtocolOptions | None = None
    http2_protocol_options: Http2ProtocolOptions | None = None
    health_check: HealthCheck | None = None

    @model_validator(mode="after")
    def _positive_connect_timeout(self) -> BackendConfigPolicySpec:
        if self.connect_timeout is not None and parse_istio_duration(self.connect_timeout) <= 0:
            raise ValueError(f"connectTimeout must be greater than 0, not {self.connect_timeout!r}")
        return self


class BackendConfigPolicy(Resource):
    """Cluster settings for the Services (all ports, or the one ``sectionName`` names) and
    Backends it targets, in its own namespace."""

    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha1",)
    KIND: ClassVar[str] = "BackendConfigPolicy"
    spec: BackendConfigPolicySpec


class ListenerHTTP2ProtocolOptions(KubeModel):
    """HTTP/2 toward clients: what Envoy announces in its SETTINGS frame."""

    initial_stream_window_size: WindowSize | None = None
    initial_connection_window_size: WindowSize | None = None
    max_concurrent_streams: int | None = Field(default=None, ge=1, le=2147483647)
    allow_connect: bool | None = None
    """Extended CONNECT (RFC 8441, WebSocket over HTTP/2); unset keeps meshxds's default, on."""


class HTTPSettings(KubeModel):
    """The HTTP connection manager of an HTTP(S) listener."""

    stream_idle_timeout: Duration | None = None
    idle_timeout: Duration | None = None
    max_requests_per_connection: int | None = Field(default=None, ge=0, le=4294967295)
    """0 or unset: unlimited."""
    max_headers_count: int | None = Field(default=None, ge=1, le=4294967295)
    http2_protocol_options: ListenerHTTP2ProtocolOptions | None = None


class ListenerConfig(KubeModel):
    """``spec.default`` and ``spec.perPort[].listener``: one shape, so a field meshxds does not
    model (proxyProtocol, clientCertificateValidation, ...) warns from either place."""

    tcp_keepalive: TCPKeepalive | None = None
    per_connection_buffer_limit_bytes: int | None = Field(default=None, ge=0, le=2147483647)
    http_settings: HTTPSettings | None = None


class ListenerPortConfig(KubeModel):
    port: int = Field(ge=1, le=65535)
    listener: ListenerConfig


class ListenerPolicySpec(KubeModel):
    target_refs: list[LocalPolicyTargetReference] = Field(min_length=1, max_length=16)
    default: ListenerConfig | None = None
    per_port: list[ListenerPortConfig] = Field(default_factory=list, max_length=64)


class ListenerPolicy(Resource):
    """Settings of the listeners of the Gateways it targets (all of them, or the one
    ``sectionName`` names), in its own namespace; ``perPort`` replaces ``default`` on a port."""

    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha1",)
    KIND: ClassVar[str] = "ListenerPolicy"
    spec: ListenerPolicySpec


def _checked_go_duration(value: str) -> str:
    parse_duration(value)  # raises ValueError naming the value
    return value


GoDuration = Annotated[str, AfterValidator(_checked_go_duration)]
"""A TrafficPolicy duration, as its CRD's pattern has it (``^([0-9]{1,5}(h|m|s|ms)){1,4}$``, Gateway
API's form): ``500ms``, ``1m30s``; not ``1.5s``. Read it with ``gatewayapi.parse_duration``."""

RetryOnCondition = Literal[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
]
"""Envoy's ``x-envoy-retry-on`` and ``x-envoy-retry-grpc-on`` conditions kgateway's CRD accepts."""


class Retry(KubeModel):
    """Envoy's route retry policy: retry on the ``retryOn`` conditions, and on ``statusCodes``
    (which add ``retriable-status-codes``); one of the two is required."""

    retry_on: list[RetryOnCondition] | None = Field(default=None, min_length=1)
    attempts: int = Field(default=1, ge=0, le=2147483647)
    """Retries after the first try (the CRD's default, 1); 0: none."""
    per_try_timeout: GoDuration | None = None
    """Bounds each try, the first included; a try that outlives it is a ``reset``."""
    status_codes: list[Annotated[int, Field(ge=400, le=599)]] | None = Field(default=None, min_length=1)
    backoff_base_interval: GoDuration | None = None
    """Base of Envoy's jittered exponential backoff, capped at ten times it; unset: 25ms, the
    default of kgateway's CRD and of Envoy."""

    @model_validator(mode="after")
    def _crd_rules(self) -> Retry:
        if not self.retry_on and not self.status_codes:
            raise ValueError("retryOn or statusCodes must be set")
        for name, value in (
            ("perTryTimeout", self.per_try_timeout),
            ("backoffBaseInterval", self.backoff_base_interval),
        ):
            if value is not None and parse_duration(value) < 1e-3:
                raise ValueError(f"{name} must be at least 1ms, not {value!r}")
        return self


class Timeouts(KubeModel):
    request: GoDuration | None = None
    """The whole request, retries included (Envoy's route ``timeout``); ``0s``: no limit."""
    stream_idle: GoDuration | None = None
    """A request whose stream carries nothing for this long ends (the route's ``idle_timeout``,
    408 or 504); ``0s``: never."""


class TrafficPolicySpec(KubeModel):
    target_refs: list[LocalPolicyTargetReference] = Field(default_factory=list, max_length=16)
    """HTTPRoutes (all rules, or the one ``sectionName`` names) and Gateways (all listeners, or
    one); none: the policy applies where an HTTPRoute rule's ExtensionRef filter names it."""
    retry: Retry | None = None
    timeouts: Timeouts | None = None

    @model_validator(mode="after")
    def _crd_rules(self) -> TrafficPolicySpec:
        # kgateway's CRD rules (CEL), so a manifest its API server refuses is refused here too.
        retry, timeouts = self.retry, self.timeouts
        if retry is not None and retry.per_try_timeout is not None:
            request = timeouts.request if timeouts is not None else None
            if request is not None and parse_duration(retry.per_try_timeout) >= parse_duration(request):
                raise ValueError("retry.perTryTimeout must be less than timeouts.request")
        if retry is not None:
            for index, ref in enumerate(self.target_refs):
                if ref.kind == "Gateway" and ref.section_name is None:
                    raise ValueError(
                        f"targetRefs[{index}].sectionName must be set when a policy with retry targets a "
                        "Gateway (retries attach to its listeners)"
                    )
        return self


class TrafficPolicy(Resource):
    """Route settings, ``retry`` and ``timeouts`` (the other fields are not modelled), for the
    HTTPRoutes and Gateways it targets in its own namespace, or the HTTPRoute rules whose
    ExtensionRef filter names it."""

    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha1",)
    KIND: ClassVar[str] = "TrafficPolicy"
    spec: TrafficPolicySpec
