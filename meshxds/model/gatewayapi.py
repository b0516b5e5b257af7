"""Kubernetes Gateway API objects (``gateway.networking.k8s.io``)."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from meshxds.model.base import KubeModel, Resource, Unserved

# The CRDs' HTTPHeaderName / HTTPQueryParamName: an RFC 7230 token, so never ``:authority``-style
# pseudo-headers (which Envoy refuses to match or modify); the API server refuses the rest.
HeaderName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")]

__all__ = [
    "GROUP",
    "AllowedRoutes",
    "BackendRef",
    "BackendTLSPolicy",
    "FilterWithoutExtensions",
    "GRPCMethodMatch",
    "GRPCRoute",
    "GRPCRouteMatch",
    "Gateway",
    "GatewayClass",
    "GatewayListener",
    "HTTPBackendRef",
    "HTTPCORSFilter",
    "HTTPHeaderMatch",
    "HTTPPathMatch",
    "HTTPQueryParamMatch",
    "HTTPRoute",
    "HTTPRouteFilter",
    "HTTPRouteMatch",
    "HTTPRouteRule",
    "ParentReference",
    "ReferenceGrant",
    "SecretObjectReference",
    "TCPRoute",
    "TLSRoute",
    "parse_duration",
]

GROUP = "gateway.networking.k8s.io"
_VERSIONS = ("v1", "v1beta1", "v1alpha2")


class GatewayClassSpec(KubeModel):
    controller_name: str = Field(min_length=1)
    description: str = ""
    parameters_ref: Annotated[dict[str, str] | None, Unserved("no GatewayClass parameters are read")] = None


class GatewayClass(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = _VERSIONS
    KIND: ClassVar[str] = "GatewayClass"
    NAMESPACED: ClassVar[bool] = False
    spec: GatewayClassSpec


class RouteGroupKind(KubeModel):
    group: str = GROUP
    kind: str


class LabelSelectorRequirement(KubeModel):
    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)


class LabelSelector(KubeModel):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class RouteNamespaces(KubeModel):
    from_: Literal["All", "Same", "Selector"] = Field(default="Same", alias="from")
    selector: LabelSelector | None = None


class AllowedRoutes(KubeModel):
    namespaces: RouteNamespaces = Field(default_factory=RouteNamespaces)
    kinds: list[RouteGroupKind] = Field(default_factory=list)


class SecretObjectReference(KubeModel):
    group: str = ""
    kind: str = "Secret"
    name: str
    namespace: str | None = None


class GatewayTLSConfig(KubeModel):
    mode: Literal["Terminate", "Passthrough"] = "Terminate"
    certificate_refs: list[SecretObjectReference] = Field(default_factory=list)
    options: Annotated[dict[str, str], Unserved("implementation-specific TLS options")] = Field(
        default_factory=dict
    )


class GatewayListener(KubeModel):
    name: str = Field(min_length=1)
    hostname: str | None = None
    port: int = Field(ge=1, le=65535)
    protocol: str = Field(min_length=1)
    tls: GatewayTLSConfig | None = None
    allowed_routes: AllowedRoutes = Field(default_factory=AllowedRoutes)


class GatewayAddress(KubeModel):
    type: str = "IPAddress"
    value: str = ""
    """Optional in the CRD: an empty value asks the implementation to assign one."""


class FrontendCACertificateRef(KubeModel):
    """An ``ObjectReference`` to a CA bundle (``ca.crt``): a ConfigMap (Core) or a Secret."""

    group: str = ""
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    namespace: str | None = None


class FrontendTLSValidation(KubeModel):
    """GEP-91: the CAs that client certificates must chain to, and whether one is required."""

    ca_certificate_refs: list[FrontendCACertificateRef] = Field(min_length=1, max_length=16)
    mode: Literal["AllowValidOnly", "AllowInsecureFallback"] = "AllowValidOnly"


class FrontendTLSSettings(KubeModel):
    validation: FrontendTLSValidation | None = None


class FrontendTLSPortConfig(KubeModel):
    port: int = Field(ge=1, le=65535)
    tls: FrontendTLSSettings


class FrontendTLSConfig(KubeModel):
    """``spec.tls.frontend``: client-certificate validation for HTTPS listeners, by default and
    per port."""

    default: FrontendTLSSettings
    per_port: list[FrontendTLSPortConfig] = Field(default_factory=list, max_length=64)

    @field_validator("per_port")
    @classmethod
    def _unique_ports(cls, per_port: list[FrontendTLSPortConfig]) -> list[FrontendTLSPortConfig]:
        if len({p.port for p in per_port}) != len(per_port):
            raise ValueError("Port for TLS configuration must be unique within the Gateway")
        return per_port

    def for_port(self, port: int) -> FrontendTLSValidation | None:
        """The validation of HTTPS listeners on ``port``: its override, else the default."""
        for override in self.per_port:
            if override.port == port:
                return override.tls.validation
        return self.default.validation


class GatewaySpecTLS(KubeModel):
    """Gateway-wide TLS (Gateway API v1.4 ``spec.tls``)."""

    frontend: FrontendTLSConfig | None = None


class GatewaySpec(KubeModel):
    gateway_class_name: str = Field(min_length=1)
    listeners: list[GatewayListener] = Field(min_length=1)
    tls: GatewaySpecTLS | None = None
    addresses: list[GatewayAddress] = Field(default_factory=list)
    infrastructure: Annotated[
        dict[str, object] | None, Unserved("meshxds deploys no proxies to label or configure")
    ] = None


class Gateway(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = _VERSIONS
    KIND: ClassVar[str] = "Gateway"
    spec: GatewaySpec


class ParentReference(KubeModel):
    group: str = GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    name: str = Field(min_length=1)
    section_name: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class HTTPPathMatch(KubeModel):
    type: Literal["Exact", "PathPrefix", "RegularExpression"] = "PathPrefix"
    value: str = "/"


class HTTPHeaderMatch(KubeModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: HeaderName
    value: str = Field(min_length=1, max_length=4096)


class HTTPQueryParamMatch(KubeModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    name: HeaderName
    value: str


class HTTPRouteMatch(KubeModel):
    path: HTTPPathMatch = Field(default_factory=HTTPPathMatch)
    headers: list[HTTPHeaderMatch] = Field(default_factory=list)
    query_params: list[HTTPQueryParamMatch] = Field(default_factory=list)
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] | None = (
        None
    )


class HTTPHeader(KubeModel):
    name: HeaderName
    value: str = Field(min_length=1, max_length=4096)


class HTTPHeaderFilter(KubeModel):
    set: list[HTTPHeader] = Field(default_factory=list)
    add: list[HTTPHeader] = Field(default_factory=list)
    remove: list[HeaderName] = Field(default_factory=list)


class HTTPPathModifier(KubeModel):
    type: Literal["ReplaceFullPath", "ReplacePrefixMatch"]
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class HTTPRequestRedirectFilter(KubeModel):
    scheme: Literal["http", "https"] | None = None
    hostname: str | None = None
    path: HTTPPathModifier | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    status_code: Literal[301, 302, 303, 307, 308] = 302


class HTTPURLRewriteFilter(KubeModel):
    hostname: str | None = None
    path: HTTPPathModifier | None = None


class BackendObjectReference(KubeModel):
    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1)
    namespace: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)


class Fraction(KubeModel):
    numerator: int = Field(ge=0)
    denominator: int = Field(default=100, ge=1)


class HTTPRequestMirrorFilter(KubeModel):
    backend_ref: BackendObjectReference
    percent: int | None = Field(default=None, ge=0, le=100)
    fraction: Fraction | None = None


# The CRD's CORSOrigin: ``*``, or ``http(s)://host[:port]`` whose host may be ``*`` or start with a
# ``*.`` label. Anything else (a path, a wildcard inside a label) never reaches the translator.
CORSOrigin = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"(^\*$)|(^(http(s)?):\/\/(((\*\.)?([a-zA-Z0-9\-]+\.)*[a-zA-Z0-9-]+|\*)(:([0-9]{1,5}))?)$)",
    ),
]
HTTPMethodWithWildcard = Literal[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*"
]


class HTTPCORSFilter(KubeModel):
    """Gateway API ``CORS`` filter (Standard since v1.3, GEP-1767), with the CRD's validation."""

    allow_origins: list[CORSOrigin] = Field(default_factory=list, max_length=64)
    allow_credentials: bool | None = None
    allow_methods: list[HTTPMethodWithWildcard] = Field(default_factory=list, max_length=9)
    allow_headers: list[HeaderName] = Field(default_factory=list, max_length=64)
    expose_headers: list[HeaderName] = Field(default_factory=list, max_length=64)
    max_age: int = Field(default=5, ge=1, le=2**31 - 1)
    """Seconds; the API server's default is 5."""

    @field_validator("allow_origins", "allow_methods", "allow_headers", "expose_headers")
    @classmethod
    def _a_set_with_wildcard_alone(cls, values: list[str]) -> list[str]:
        # The CRD's ``listType=set`` and its "cannot contain '*' alongside other ..." rules.
        if "*" in values and len(values) > 1:
            raise ValueError("'*' cannot be listed alongside other values")
        if len(set(values)) != len(values):
            raise ValueError("a value is listed twice (the list is a set)")
        return values


_FILTER_FIELDS = {"CORS": "cors"}
"""Filter types whose config field the CRD requires exactly with that type (the CEL rules
``filter.cors must be specified for CORS filter.type`` and ``... must be nil if ...``)."""


class LocalObjectReference(KubeModel):
    group: str = ""
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)


_KGATEWAY_GROUP = "gateway.kgateway.dev"


def _names_traffic_policy(ref: object) -> bool:
    return isinstance(ref, LocalObjectReference) and (ref.group, ref.kind) == (
        _KGATEWAY_GROUP,
        "TrafficPolicy",
    )


class HTTPRouteFilter(KubeModel):
    type: str = Field(min_length=1)
    request_header_modifier: HTTPHeaderFilter | None = None
    response_header_modifier: HTTPHeaderFilter | None = None
    request_redirect: HTTPRequestRedirectFilter | None = None
    url_rewrite: HTTPURLRewriteFilter | None = None
    request_mirror: HTTPRequestMirrorFilter | None = None
    cors: HTTPCORSFilter | None = None
    extension_ref: Annotated[
        LocalObjectReference | None,
        # An HTTPRoute rule's ExtensionRef to a kgateway TrafficPolicy attaches it (httproutes.py).
        Unserved("extension filters other than kgateway TrafficPolicy", served=_names_traffic_policy),
    ] = None

    @model_validator(mode="after")
    def _config_matches_type(self) -> Self:
        for kind, name in _FILTER_FIELDS.items():
            given = getattr(self, name) is not None
            if self.type == kind and not given:
                raise ValueError(f"{name} must be set for a filter of type {kind}")
            if self.type != kind and given:
                raise ValueError(f"{name} must not be set for a filter of type {self.type}")
        return self


class FilterWithoutExtensions(HTTPRouteFilter):
    """A filter where no extension is served, a TrafficPolicy's included: a backendRef's (a
    TrafficPolicy attaches to rules) and a GRPCRoute rule's."""

    extension_ref: Annotated[LocalObjectReference | None, Unserved("extension filters")] = None


class BackendRef(KubeModel):
    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1)
    namespace: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    weight: int = Field(default=1, ge=0, le=1_000_000)


class HTTPBackendRef(BackendRef):
    filters: list[FilterWithoutExtensions] = Field(default_factory=list)


_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_DURATION = re.compile(r"(?:[0-9]{1,5}(?:h|ms|m|s)){1,4}")
_DURATION_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: str) -> float:
    """Seconds in a GEP-2257 duration (``1h``, ``500ms``, ``1m30s``; at most four units); raises
    ``ValueError`` naming the bad value."""
    if not _DURATION.fullmatch(value):
        raise ValueError(f"{value!r} is not a duration such as '10s', '1m30s' or '500ms'")
    return sum(int(n) * _DURATION_SECONDS[unit] for n, unit in _DURATION_PART.findall(value))


def _seconds(value: str | None) -> float | None:
    try:
        return parse_duration(value) if value is not None else None
    except ValueError:
        return None  # a malformed duration is the translator's warning, not a rejection


class HTTPRouteTimeouts(KubeModel):
    request: str | None = None
    backend_request: str | None = None

    @model_validator(mode="after")
    def _backend_request_within_request(self) -> HTTPRouteTimeouts:
        # The CRD's validation rule (GEP-1742): the API server refuses such a route, so do we.
        request, backend = _seconds(self.request), _seconds(self.backend_request)
        if request and backend is not None and backend > request:
            raise ValueError("backendRequest timeout cannot be longer than request timeout")
        return self


class HTTPRouteRetry(KubeModel):
    """GEP-1731: when to try a request to a backend again, how often, how long apart."""

    codes: list[Annotated[int, Field(ge=400, le=599)]] = Field(default_factory=list)
    """Response statuses to retry on (the CRD's range, a set)."""
    attempts: int | None = Field(default=None, ge=0)
    """Retries after the first try; ``0`` turns retries off; unset: the implementation's default."""
    backoff: Annotated[str, Field(pattern=r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")] | None = None
    """Base interval between tries (a GEP-2257 duration)."""

    @field_validator("codes")
    @classmethod
    def _a_set(cls, codes: list[int]) -> list[int]:
        if len(set(codes)) != len(codes):
            raise ValueError("codes must not repeat (a set)")
        return codes


class HTTPRouteRule(KubeModel):
    name: str | None = None
    matches: list[HTTPRouteMatch] = Field(default_factory=lambda: [HTTPRouteMatch()])
    filters: list[HTTPRouteFilter] = Field(default_factory=list)
    backend_refs: list[HTTPBackendRef] = Field(default_factory=list)
    timeouts: HTTPRouteTimeouts | None = None
    retry: HTTPRouteRetry | None = None

    @field_validator("filters")
    @classmethod
    def _one_cors_filter(cls, filters: list[HTTPRouteFilter]) -> list[HTTPRouteFilter]:
        if sum(f.type == "CORS" for f in filters) > 1:
            raise ValueError("the CORS filter cannot be repeated")
        return filters


class HTTPRouteSpec(KubeModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[HTTPRouteRule] = Field(default_factory=lambda: [HTTPRouteRule()])


class HTTPRoute(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = _VERSIONS
    KIND: ClassVar[str] = "HTTPRoute"
    spec: HTTPRouteSpec = Field(default_factory=HTTPRouteSpec)


class GRPCMethodMatch(KubeModel):
    type: Literal["Exact", "RegularExpression"] = "Exact"
    service: str | None = None
    method: str | None = None


class GRPCRouteMatch(KubeModel):
    method: GRPCMethodMatch | None = None
    headers: list[HTTPHeaderMatch] = Field(default_factory=list)


class GRPCBackendRef(HTTPBackendRef):
    """Same fields as an HTTPBackendRef (filters limited to the header modifiers by the spec)."""


class GRPCRouteRule(KubeModel):
    name: str | None = None
    matches: list[GRPCRouteMatch] = Field(default_factory=lambda: [GRPCRouteMatch()])
    filters: list[FilterWithoutExtensions] = Field(default_factory=list)
    backend_refs: list[GRPCBackendRef] = Field(default_factory=list)


class GRPCRouteSpec(KubeModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[GRPCRouteRule] = Field(default_factory=lambda: [GRPCRouteRule()])


class GRPCRoute(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1", "v1alpha2")
    KIND: ClassVar[str] = "GRPCRoute"
    spec: GRPCRouteSpec = Field(default_factory=GRPCRouteSpec)


class TCPRouteRule(KubeModel):
    name: str | None = None
    backend_refs: list[BackendRef] = Field(default_factory=list)


class TLSRouteSpec(KubeModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    hostnames: list[str] = Field(default_factory=list)
    rules: list[TCPRouteRule] = Field(min_length=1)


class TLSRoute(Resource):
    """TLS by SNI: passthrough to the backends (or after termination on a Terminate listener)."""

    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha2", "v1alpha3", "v1")
    KIND: ClassVar[str] = "TLSRoute"
    spec: TLSRouteSpec


class TCPRouteSpec(KubeModel):
    parent_refs: list[ParentReference] = Field(default_factory=list)
    rules: list[TCPRouteRule] = Field(min_length=1)


class TCPRoute(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha2", "v1")
    KIND: ClassVar[str] = "TCPRoute"
    spec: TCPRouteSpec


class ReferenceGrantFrom(KubeModel):
    group: str
    kind: str
    namespace: str


class ReferenceGrantTo(KubeModel):
    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(KubeModel):
    from_: list[ReferenceGrantFrom] = Field(alias="from", min_length=1)
    to: list[ReferenceGrantTo] = Field(min_length=1)


class ReferenceGrant(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1beta1", "v1alpha2", "v1")
    KIND: ClassVar[str] = "ReferenceGrant"
    spec: ReferenceGrantSpec


class LocalPolicyTargetReference(KubeModel):
    """A policy's target in its own namespace; ``sectionName`` narrows it (a Service port name)."""

    group: str = ""
    kind: str = Field(min_length=1)
    name: str = Field(min_length=1)
    section_name: str | None = None


class SubjectAltName(KubeModel):
    type: Literal["Hostname", "URI"]
    hostname: str = ""
    uri: str = ""

    @model_validator(mode="after")
    def _value_matches_type(self) -> Self:
        # The CRD's CEL rules: exactly the field of its type.
        if self.type == "Hostname" and (not self.hostname or self.uri):
            raise ValueError("a SubjectAltName of type Hostname needs hostname (and no uri)")
        if self.type == "URI" and (not self.uri or self.hostname):
            raise ValueError("a SubjectAltName of type URI needs uri (and no hostname)")
        return self


class BackendTLSPolicyValidation(KubeModel):
    ca_certificate_refs: list[LocalObjectReference] = Field(default_factory=list, max_length=8)
    well_known_ca_certificates: str | None = Field(default=None, alias="wellKnownCACertificates")
    hostname: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    )
    """The SNI, and the name the certificate must carry unless ``subjectAltNames`` are given."""
    subject_alt_names: list[SubjectAltName] = Field(default_factory=list, max_length=5)

    @model_validator(mode="after")
    def _one_trust_source(self) -> Self:
        # The CRD's two CEL rules on the validation.
        if self.ca_certificate_refs and self.well_known_ca_certificates:
            raise ValueError("must not contain both CACertificateRefs and WellKnownCACertificates")
        if not self.ca_certificate_refs and not self.well_known_ca_certificates:
            raise ValueError("must specify either CACertificateRefs or WellKnownCACertificates")
        return self


class BackendTLSPolicySpec(KubeModel):
    target_refs: list[LocalPolicyTargetReference] = Field(min_length=1, max_length=16)
    validation: BackendTLSPolicyValidation
    options: Annotated[dict[str, str], Unserved("implementation-specific TLS options")] = Field(
        default_factory=dict
    )


class BackendTLSPolicy(Resource):
    """TLS from the Gateway to a Service's endpoints: the CA, SNI and names to verify."""

    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1", "v1alpha3")
    KIND: ClassVar[str] = "BackendTLSPolicy"
    spec: BackendTLSPolicySpec
