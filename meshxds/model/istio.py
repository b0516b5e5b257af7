"""Istio traffic objects (``networking.istio.io`` ``v1``, ``v1beta1``, ``v1alpha3``).

Gateway, VirtualService, DestinationRule, ServiceEntry and WorkloadEntry, field for field as
Istio's CRDs define them. Message classes keep Istio's protobuf names (``HTTPRoute`` here is
Istio's VirtualService rule, not the Gateway API kind of :mod:`meshxds.model.gatewayapi`).

- Wire names are camelCase; the snake_case names of Istio's protobuf-JSON are accepted too.
- Enums are ``Literal`` types: a misspelt value is an error naming its field.
- A protobuf ``oneof`` (``exact``/``prefix``/``regex``, ``simple``/``consistentHash``, …) is
  checked: setting two members of one group is an error.
- Durations stay the manifest's strings (``"1s"``, ``"0.5s"``, ``"100ms"``, ``"1m30s"``),
  checked at parse time; :func:`parse_istio_duration` turns one into seconds.
- Scalars Istio leaves unset are ``None`` so that translators can apply Istio's defaults.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, Field, model_validator

from meshxds.model.base import KubeModel, Resource, Unserved

__all__ = [
    "GROUP",
    "Abort",
    "ClientTLSSettings",
    "ConnectionPoolSettings",
    "ConsistentHashLB",
    "CookieAttribute",
    "CorsPolicy",
    "Delay",
    "Delegate",
    "Destination",
    "DestinationRule",
    "DestinationRuleSpec",
    "Duration",
    "Gateway",
    "GatewaySpec",
    "HTTP2KeepAlive",
    "HTTPBody",
    "HTTPCookie",
    "HTTPDirectResponse",
    "HTTPFaultInjection",
    "HTTPMatchRequest",
    "HTTPMirrorPolicy",
    "HTTPRedirect",
    "HTTPRetry",
    "HTTPRewrite",
    "HTTPRoute",
    "HTTPRouteDestination",
    "HTTPSettings",
    "HeaderOperations",
    "Headers",
    "L4MatchAttributes",
    "LoadBalancerSettings",
    "LocalityDistribute",
    "LocalityFailover",
    "LocalityLoadBalancerSetting",
    "MagLev",
    "OutlierDetection",
    "Percent",
    "Port",
    "PortSelector",
    "PortTrafficPolicy",
    "PositiveDuration",
    "ProxyProtocol",
    "RegexRewrite",
    "RetryBudget",
    "RingHash",
    "RouteDestination",
    "Server",
    "ServerTLSSettings",
    "ServiceEntry",
    "ServiceEntrySpec",
    "ServiceEntryWorkloadSelector",
    "ServicePort",
    "StringMatch",
    "Subset",
    "TCPKeepalive",
    "TCPRoute",
    "TCPSettings",
    "TLSCertificate",
    "TLSMatchAttributes",
    "TLSRoute",
    "TrafficPolicy",
    "TunnelSettings",
    "VirtualService",
    "VirtualServiceSpec",
    "WarmupConfiguration",
    "WorkloadEntry",
    "WorkloadEntrySpec",
    "WorkloadSelector",
    "parse_istio_duration",
]

GROUP = "networking.istio.io"
_VERSIONS = ("v1", "v1beta1", "v1alpha3")

# --- durations ------------------------------------------------------------------------------------

_UNIT_SECONDS = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # Go accepts the micro sign and the Greek mu as well as "us"
    "\u03bcs": 1e-6,
    "ns": 1e-9,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")


def parse_istio_duration(value: str) -> float:
    """Seconds in an Istio duration; raises ``ValueError`` naming the bad value.

    Accepts protobuf-JSON durations (``"1s"``, ``"0.5s"``, ``"1.000000001s"``) and the Go forms
    Istio's CRD validation accepts (``"100ms"``, ``"1m30s"``, ``"1.5h"``, ``"250us"``, ``"0"``).
    """
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration: give a string such as '1s' or '100ms'")
    if value == "0":
        return 0.0
    if value.startswith("-"):
        raise ValueError(f"{value!r} is not a valid duration: it must not be negative")
    if not _DURATION.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid duration: use a number and a unit (h, m, s, ms, us, ns), "
            "such as '1s', '0.5s', '100ms' or '1m30s'"
        )
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(value))


def _checked_duration(value: str) -> str:
    parse_istio_duration(value)
    return value


Duration = Annotated[str, AfterValidator(_checked_duration)]
"""An Istio duration, kept as written; read it with :func:`parse_istio_duration`."""


def _at_least_1ms(value: str) -> str:
    if parse_istio_duration(value) < 1e-3:
        raise ValueError(f"{value!r} is too short: it must be at least 1ms")
    return value


PositiveDuration = Annotated[str, AfterValidator(_checked_duration), AfterValidator(_at_least_1ms)]
"""A duration Istio's CRD requires to be at least 1ms (``duration(self) >= duration('1ms')``)."""


def _checked_base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not valid base64: {exc}") from exc
    return value


Base64 = Annotated[str, AfterValidator(_checked_base64)]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
Percentage = Annotated[float, Field(ge=0, le=100)]
Count = Annotated[int, Field(ge=0)]


# --- shared messages ------------------------------------------------------------------------------


class _OneOf(KubeModel):
    """A message with protobuf ``oneof`` groups: at most one member of each group may be set."""

    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @model_validator(mode="after")
    def _at_most_one_per_group(self) -> Self:
        fields = type(self).model_fields
        for group in self.ONE_OF:
            given = [n for n in group if getattr(self, n) not in (None, [], {})]
            if len(given) > 1:
                wire = [fields[n].alias or n for n in group]
                raise ValueError(
                    f"only one of {', '.join(wire)} may be set, got "
                    + " and ".join(fields[n].alias or n for n in given)
                )
        return self


class StringMatch(_OneOf):
    """``exact``, ``prefix`` or ``regex`` (RE2); empty matches presence (in a headers map)."""

    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (("exact", "prefix", "regex"),)
    exact: str | None = None
    prefix: str | None = None
    regex: str | None = None


class PortSelector(KubeModel):
    number: PortNumber | None = None


class Destination(KubeModel):
    host: str = Field(min_length=1)
    subset: str | None = None
    port: PortSelector | None = None


class Percent(KubeModel):
    value: Percentage = 0.0


# --- Gateway --------------------------------------------------------------------------------------


class Port(KubeModel):
    # 0 is allowed with a Unix domain socket ``bind``.
    number: int = Field(ge=0, le=65535)
    protocol: str = Field(min_length=1)
    name: str
    target_port: PortNumber | None = None


TLSProtocolVersion = Literal["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"]


class TLSCertificate(KubeModel):
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: Annotated[str | None, Unserved("a CA per certificate; use tls.caCertificates")] = None


class ServerTLSSettings(_OneOf):
    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("credential_name", "credential_names", "tls_certificates"),
    )
    https_redirect: bool | None = None
    mode: (
        Literal["PASSTHROUGH", "SIMPLE", "MUTUAL", "AUTO_PASSTHROUGH", "ISTIO_MUTUAL", "OPTIONAL_MUTUAL"]
        | None
    ) = None
    server_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    ca_cert_credential_name: Annotated[
        str | None, Unserved("a separate CA Secret; put ca.crt in credentialName's")
    ] = None
    ca_crl: Annotated[str | None, Unserved("certificate revocation lists")] = None
    credential_name: str | None = None
    credential_names: list[str] = Field(default_factory=list, max_length=2)
    tls_certificates: list[TLSCertificate] = Field(default_factory=list, max_length=2)
    subject_alt_names: list[str] = Field(default_factory=list)
    verify_certificate_spki: list[str] = Field(default_factory=list)
    verify_certificate_hash: list[str] = Field(default_factory=list)
    min_protocol_version: TLSProtocolVersion | None = None
    max_protocol_version: TLSProtocolVersion | None = None
    cipher_suites: list[str] = Field(default_factory=list)


class Server(KubeModel):
    port: Port
    bind: str | None = None
    hosts: list[str] = Field(min_length=1)
    tls: ServerTLSSettings | None = None
    default_endpoint: Annotated[str | None, Unserved("forwarding to a default endpoint")] = None
    name: str | None = None


class GatewaySpec(KubeModel):
    selector: dict[str, str] = Field(default_factory=dict)
    servers: list[Server] = Field(default_factory=list)


class Gateway(Resource):
    """Istio's Gateway (not the Gateway API kind of the same name)."""

    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = _VERSIONS
    KIND: ClassVar[str] = "Gateway"
    spec: GatewaySpec

    @property
    def ref(self) -> str:
        """``Gateway.networking.istio.io/namespace/name``, distinct from a Gateway API Gateway's ref."""
        return f"{self.KIND}.{GROUP}/{self.metadata.namespace}/{self.metadata.name}"


# --- VirtualService -------------------------------------------------------------------------------


class HeaderOperations(KubeModel):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)


class Headers(KubeModel):
    request: HeaderOperations | None = None
    response: HeaderOperations | None = None


class HTTPMatchRequest(KubeModel):
    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] = Field(default_factory=dict)
    port: PortNumber | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    query_params: dict[str, StringMatch] = Field(default_factory=dict)
    ignore_uri_case: bool | None = None
    without_headers: dict[str, StringMatch] = Field(default_factory=dict)
    source_namespace: str | None = None
    stat_prefix: Annotated[str | None, Unserved("per-route statistics")] = None


class HTTPRouteDestination(KubeModel):
    destination: Destination
    weight: Count | None = None
    headers: Headers | None = None


class RouteDestination(KubeModel):
    destination: Destination
    weight: Count | None = None


class HTTPRedirect(_OneOf):
    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (("port", "derive_port"),)
    uri: str | None = None
    authority: str | None = None
    port: PortNumber | None = None
    derive_port: Literal["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"] | None = None
    scheme: str | None = None
    redirect_code: int | None = Field(default=None, ge=300, le=399)


class HTTPBody(_OneOf):
    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (("string", "bytes_"),)
    string: str | None = None
    bytes_: Base64 | None = Field(default=None, alias="bytes")


class HTTPDirectResponse(KubeModel):
    status: int = Field(ge=200, le=599)
    body: HTTPBody | None = None


class Delegate(KubeModel):
    name: str | None = None
    namespace: str | None = None


class RegexRewrite(KubeModel):
    match: str = Field(min_length=1)
    rewrite: str


class HTTPRewrite(_OneOf):
    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (("uri", "uri_regex_rewrite"),)
    uri: str | None = None
    authority: str | None = None
    uri_regex_rewrite: RegexRewrite | None = None


class HTTPRetry(KubeModel):
    attempts: Count | None = None
    per_try_timeout: Duration | None = None
    retry_on: str | None = None
    retry_remote_localities: Annotated[bool | None, Unserved("locality retries", unless=(False,))] = None
    retry_ignore_previous_hosts: Annotated[
        bool | None, Unserved("retrying on hosts not tried before", unless=(False,))
    ] = None
    backoff: Duration | None = None


class Delay(_OneOf):
    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (("fixed_delay", "exponential_delay"),)
    fixed_delay: Duration | None = None
    exponential_delay: Annotated[
        Duration | None, Unserved("exponential delays", effect="no delay is injected")
    ] = None
    percentage: Percent | None = None
    percent: int | None = Field(default=None, ge=0, le=100)
    """Deprecated by Istio: use ``percentage``."""


class Abort(_OneOf):
    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (("http_status", "grpc_status", "http2_error"),)
    http_status: int | None = Field(default=None, ge=200, le=599)
    grpc_status: str | None = None
    http2_error: Annotated[str | None, Unserved("HTTP/2 error aborts", effect="no abort is injected")] = None
    percentage: Percent | None = None


class HTTPFaultInjection(KubeModel):
    delay: Delay | None = None
    abort: Abort | None = None


class HTTPMirrorPolicy(KubeModel):
    destination: Destination
    percentage: Percent | None = None


class CorsPolicy(KubeModel):
    allow_origins: list[StringMatch] = Field(default_factory=list)
    allow_origin: list[str] = Field(default_factory=list)
    """Deprecated by Istio: use ``allowOrigins``."""
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Annotated[
        Literal["UNSPECIFIED", "FORWARD", "IGNORE"] | None,
        Unserved(
            "ignoring unmatched preflights", unless=("UNSPECIFIED", "FORWARD"), effect="they are forwarded"
        ),
    ] = None


class HTTPRoute(_OneOf):
    """One rule of a VirtualService's ``http`` list: route, redirect, direct response or delegate."""

    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("route", "redirect", "direct_response", "delegate"),
        ("mirror", "mirrors"),
    )
    name: str | None = None
    match: list[HTTPMatchRequest] = Field(default_factory=list)
    route: list[HTTPRouteDestination] = Field(default_factory=list)
    redirect: HTTPRedirect | None = None
    direct_response: HTTPDirectResponse | None = None
    delegate: Delegate | None = None
    rewrite: HTTPRewrite | None = None
    timeout: Duration | None = None
    retries: HTTPRetry | None = None
    fault: HTTPFaultInjection | None = None
    mirror: Destination | None = None
    mirror_percent: int | None = Field(default=None, ge=0, le=100)
    """Deprecated by Istio (``mirrorPercent``/``mirror_percent``): use ``mirrorPercentage``."""
    mirror_percentage: Percent | None = None
    mirrors: list[HTTPMirrorPolicy] = Field(default_factory=list)
    cors_policy: CorsPolicy | None = None
    headers: Headers | None = None


class L4MatchAttributes(KubeModel):
    destination_subnets: Annotated[
        list[str], Unserved("matching by destination subnet", effect="the rest of the match applies")
    ] = Field(default_factory=list)
    port: PortNumber | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None
    source_subnet: Annotated[
        str | None, Unserved("matching by source subnet", effect="the rest of the match applies")
    ] = None


class TLSMatchAttributes(KubeModel):
    sni_hosts: list[str] = Field(min_length=1)
    destination_subnets: Annotated[
        list[str], Unserved("matching by destination subnet", effect="the rest of the match applies")
    ] = Field(default_factory=list)
    port: PortNumber | None = None
    source_labels: dict[str, str] = Field(default_factory=dict)
    gateways: list[str] = Field(default_factory=list)
    source_namespace: str | None = None


class TCPRoute(KubeModel):
    match: list[L4MatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class TLSRoute(KubeModel):
    match: list[TLSMatchAttributes] = Field(default_factory=list)
    route: list[RouteDestination] = Field(default_factory=list)


class VirtualServiceSpec(KubeModel):
    hosts: list[str] = Field(default_factory=list)
    gateways: list[str] = Field(default_factory=list)
    http: list[HTTPRoute] = Field(default_factory=list)
    tls: list[TLSRoute] = Field(default_factory=list)
    tcp: list[TCPRoute] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)


class VirtualService(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = _VERSIONS
    KIND: ClassVar[str] = "VirtualService"
    spec: VirtualServiceSpec


# --- DestinationRule ------------------------------------------------------------------------------


class CookieAttribute(KubeModel):
    name: str = Field(min_length=1)
    value: str | None = None


class HTTPCookie(KubeModel):
    name: str = Field(min_length=1)
    path: str | None = None
    ttl: Duration | None = None
    attributes: Annotated[list[CookieAttribute], Unserved("cookie attributes")] = Field(default_factory=list)


class RingHash(KubeModel):
    minimum_ring_size: Count | None = None


class MagLev(KubeModel):
    table_size: Count | None = None


class ConsistentHashLB(_OneOf):
    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("http_header_name", "http_cookie", "use_source_ip", "http_query_parameter_name"),
        ("ring_hash", "maglev"),
    )
    http_header_name: str | None = None
    http_cookie: HTTPCookie | None = None
    use_source_ip: bool | None = None
    http_query_parameter_name: str | None = None
    ring_hash: RingHash | None = None
    maglev: MagLev | None = None
    minimum_ring_size: Count | None = None
    """Deprecated by Istio: use ``ringHash.minimumRingSize``."""


class LocalityDistribute(KubeModel):
    from_: str = Field(default="", alias="from")
    to: dict[str, Count] = Field(default_factory=dict)


class LocalityFailover(KubeModel):
    from_: str = Field(default="", alias="from")
    to: str = ""


class LocalityLoadBalancerSetting(KubeModel):
    distribute: list[LocalityDistribute] = Field(default_factory=list)
    failover: list[LocalityFailover] = Field(default_factory=list)
    failover_priority: list[str] = Field(default_factory=list)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _distribute_or_failover(self) -> Self:
        if self.distribute and (self.failover or self.failover_priority):
            raise ValueError("distribute cannot be set together with failover or failoverPriority")
        return self


class WarmupConfiguration(KubeModel):
    duration: Duration
    minimum_percent: Percentage | None = None
    aggression: float | None = Field(default=None, ge=0)


class LoadBalancerSettings(_OneOf):
    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (("simple", "consistent_hash"),)
    simple: (
        Literal["UNSPECIFIED", "LEAST_CONN", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST"] | None
    ) = None
    consistent_hash: ConsistentHashLB | None = None
    locality_lb_setting: Annotated[
        LocalityLoadBalancerSetting | None, Unserved("locality load balancing")
    ] = None
    warmup_duration_secs: Annotated[Duration | None, Unserved("slow start")] = None
    """Deprecated by Istio: use ``warmup``."""
    warmup: Annotated[WarmupConfiguration | None, Unserved("slow start")] = None


class TCPKeepalive(KubeModel):
    """SO_KEEPALIVE; Envoy counts ``time`` and ``interval`` in whole seconds (Istio truncates)."""

    probes: Count | None = None
    time: PositiveDuration | None = None
    interval: PositiveDuration | None = None


class TCPSettings(KubeModel):
    max_connections: Count | None = None
    connect_timeout: PositiveDuration | None = None
    tcp_keepalive: TCPKeepalive | None = None
    max_connection_duration: PositiveDuration | None = None
    idle_timeout: Duration | None = None
    """``0s`` disables it."""


class HTTP2KeepAlive(KubeModel):
    """HTTP/2 PINGs to the upstream (Istio's ``ConnectionPoolSettings.HTTPSettings.http2_keep_alive``);
    Istio's validation requires both."""

    interval: PositiveDuration
    timeout: PositiveDuration


class HTTPSettings(KubeModel):
    http1_max_pending_requests: Count | None = None
    http2_max_requests: Count | None = None
    max_requests_per_connection: Count | None = None
    max_retries: Count | None = None
    idle_timeout: PositiveDuration | None = None
    h2_upgrade_policy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    use_client_protocol: bool | None = None
    max_concurrent_streams: Count | None = None
    http2_keep_alive: HTTP2KeepAlive | None = None


class ConnectionPoolSettings(KubeModel):
    tcp: TCPSettings | None = None
    http: HTTPSettings | None = None


class OutlierDetection(KubeModel):
    split_external_local_origin_errors: Annotated[
        bool | None, Unserved("telling local-origin errors apart")
    ] = None
    consecutive_local_origin_failures: Annotated[
        Count | None, Unserved("ejection on local-origin failures")
    ] = None
    consecutive_gateway_errors: Count | None = None
    consecutive_5xx_errors: Count | None = Field(default=None, alias="consecutive5xxErrors")
    interval: Duration | None = None
    base_ejection_time: Duration | None = None
    max_ejection_percent: int | None = Field(default=None, ge=0, le=100)
    min_health_percent: int | None = Field(default=None, ge=0, le=100)
    consecutive_errors: int | None = None
    """Deprecated by Istio: use ``consecutive5xxErrors``."""


class ClientTLSSettings(KubeModel):
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] | None = None
    client_certificate: str | None = None
    private_key: str | None = None
    ca_certificates: str | None = None
    credential_name: str | None = None
    subject_alt_names: list[str] = Field(default_factory=list)
    sni: str | None = None
    insecure_skip_verify: bool | None = None
    ca_crl: Annotated[str | None, Unserved("certificate revocation lists")] = None


class PortTrafficPolicy(KubeModel):
    port: PortSelector | None = None
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None


class TunnelSettings(KubeModel):
    protocol: str | None = None
    target_host: str = Field(min_length=1)
    target_port: PortNumber


class ProxyProtocol(KubeModel):
    version: Literal["V1", "V2"] | None = None


class RetryBudget(KubeModel):
    percent: Percentage | None = None
    min_retry_concurrency: Count | None = None


class TrafficPolicy(KubeModel):
    load_balancer: LoadBalancerSettings | None = None
    connection_pool: ConnectionPoolSettings | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTLSSettings | None = None
    port_level_settings: list[PortTrafficPolicy] = Field(default_factory=list, max_length=4096)
    tunnel: Annotated[TunnelSettings | None, Unserved("tunnelling through a proxy")] = None
    proxy_protocol: Annotated[ProxyProtocol | None, Unserved("the PROXY protocol to upstreams")] = None
    retry_budget: Annotated[RetryBudget | None, Unserved("retry budgets")] = None


class Subset(KubeModel):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    traffic_policy: TrafficPolicy | None = None


class WorkloadSelector(KubeModel):
    match_labels: dict[str, str] = Field(default_factory=dict)


class DestinationRuleSpec(KubeModel):
    host: str = Field(min_length=1)
    traffic_policy: TrafficPolicy | None = None
    subsets: list[Subset] = Field(default_factory=list)
    export_to: list[str] = Field(default_factory=list)
    workload_selector: Annotated[
        WorkloadSelector | None,
        Unserved("rules for selected workloads only", effect="the rule is not applied"),
    ] = None


class DestinationRule(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = _VERSIONS
    KIND: ClassVar[str] = "DestinationRule"
    spec: DestinationRuleSpec


# --- ServiceEntry and WorkloadEntry ---------------------------------------------------------------


class WorkloadEntrySpec(KubeModel):
    """A workload outside Kubernetes; also one endpoint of a ServiceEntry."""

    address: str | None = None
    ports: dict[str, PortNumber] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    network: Annotated[
        str | None, Unserved("multi-network routing", effect="an endpoint without an address is left out")
    ] = None
    locality: Annotated[str | None, Unserved("locality-aware routing")] = None
    weight: Annotated[Count | None, Unserved("endpoint weights", effect="endpoints weigh the same")] = None
    service_account: Annotated[str | None, Unserved("workload identity for Istio mutual TLS")] = None

    @model_validator(mode="after")
    def _address_or_network(self) -> Self:
        if not self.address and not self.network:
            raise ValueError("address is required (or network, for an endpoint on another network)")
        return self


class ServicePort(KubeModel):
    number: PortNumber
    protocol: str | None = None
    name: str
    target_port: PortNumber | None = None


class ServiceEntryWorkloadSelector(KubeModel):
    labels: dict[str, str] = Field(default_factory=dict)


class ServiceEntrySpec(_OneOf):
    ONE_OF: ClassVar[tuple[tuple[str, ...], ...]] = (("workload_selector", "endpoints"),)
    hosts: list[str] = Field(min_length=1)
    addresses: Annotated[list[str], Unserved("virtual IPs of the entry")] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] | None = None
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"] | None = None
    endpoints: list[WorkloadEntrySpec] = Field(default_factory=list)
    workload_selector: ServiceEntryWorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: Annotated[list[str], Unserved("verifying the endpoints' identities")] = Field(
        default_factory=list
    )

    @model_validator(mode="after")
    def _endpoints_fit_resolution(self) -> Self:
        resolution = self.resolution or "NONE"
        if resolution == "NONE" and self.endpoints:
            raise ValueError("resolution NONE (the default) cannot have endpoints")
        if resolution == "DNS_ROUND_ROBIN" and len(self.endpoints) > 1:
            raise ValueError("resolution DNS_ROUND_ROBIN allows at most one endpoint")
        return self


class ServiceEntry(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = _VERSIONS
    KIND: ClassVar[str] = "ServiceEntry"
    spec: ServiceEntrySpec


class WorkloadEntry(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = _VERSIONS
    KIND: ClassVar[str] = "WorkloadEntry"
    spec: WorkloadEntrySpec
