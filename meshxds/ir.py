"""The neutral model every translator produces and ``xds/resources.py`` consumes.

Frozen, slotted dataclasses with tuples, so an IR value is hashable, comparable and
deterministic. Nothing here knows Envoy protos or Kubernetes objects; every node carries the
``ObjectRef`` of the object it came from, and decisions keep their reason. This module
imports nothing of ours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import product
from typing import Literal, TypeVar

__all__ = [
    "NO_HEADER_CHANGES",
    "AccessLog",
    "CaSecret",
    "CircuitBreaker",
    "Cluster",
    "Cors",
    "DirectResponse",
    "DownstreamHttpOptions",
    "DownstreamTls",
    "EndpointKey",
    "Fault",
    "FilterChain",
    "ForwardAction",
    "HashPolicy",
    "HeaderMatch",
    "HeaderMutation",
    "HealthCheck",
    "Http2Keepalive",
    "LbEndpoint",
    "Listener",
    "Mirror",
    "ObjectRef",
    "OutlierDetection",
    "PathMatch",
    "ProxyConfig",
    "QueryParamMatch",
    "Redirect",
    "RetryPolicy",
    "Route",
    "RouteMatch",
    "RouteTable",
    "SecretBytes",
    "StringMatch",
    "TcpKeepalive",
    "TcpProxyOptions",
    "TlsSecret",
    "UpstreamHttpOptions",
    "UpstreamProtocol",
    "UpstreamTls",
    "UrlRewrite",
    "VirtualHost",
    "WeightedCluster",
    "describe_difference",
]


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class ObjectRef:
    """The manifest object an IR node came from."""

    kind: str
    namespace: str
    name: str
    section: str = ""

    def __str__(self) -> str:
        base = f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"
        return f"{base}#{self.section}" if self.section else base


class UpstreamProtocol(StrEnum):
    """What Envoy speaks to a cluster's endpoints."""

    HTTP1 = "HTTP/1.1"
    HTTP2 = "HTTP/2"
    DOWNSTREAM = "downstream"
    """Whatever the client spoke (Istio's auto-detection / ``useClientProtocol``)."""
    TCP = "TCP"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class LbEndpoint:
    address: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class EndpointKey:
    """Where a cluster's endpoints come from: the ready endpoints of one Service (or STATIC
    ServiceEntry) port, optionally only those whose Pods (workloads) carry ``subset`` labels. An
    endpoint-only change recomputes the load assignments of the clusters whose key names a
    touched Service, and nothing else."""

    namespace: str
    service: str
    port_name: str
    """The Service port's name, matched against the EndpointSlices' port names."""
    target_port: int | None = None
    """The Service's numeric ``targetPort``, used for slices that list no ports."""
    subset: tuple[tuple[str, str], ...] = ()
    """Pod labels every endpoint must have (an Istio subset); empty is every endpoint."""
    entry: str = ""
    """``ServiceEntry``: ``service`` names an Istio ServiceEntry, whose endpoints are its own and
    the WorkloadEntries it selects; empty: a Kubernetes Service."""


LbPolicy = Literal["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV", "CLUSTER_PROVIDED"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CircuitBreaker:
    """Envoy's per-cluster thresholds (Istio ``connectionPool``); ``None`` keeps Envoy's default."""

    max_connections: int | None = None
    max_pending_requests: int | None = None
    max_requests: int | None = None
    max_retries: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OutlierDetection:
    consecutive_5xx: int | None = None
    consecutive_gateway_errors: int | None = None
    interval_s: float | None = None
    base_ejection_time_s: float | None = None
    max_ejection_percent: int | None = None
    min_health_percent: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthCheck:
    """Active health checking of a cluster's endpoints (kgateway BackendConfigPolicy
    ``healthCheck``): an endpoint that fails ``unhealthy_threshold`` checks in a row gets no
    traffic until it passes ``healthy_threshold`` in a row."""

    kind: Literal["http", "grpc"]
    interval_s: float
    timeout_s: float
    unhealthy_threshold: int = 1
    healthy_threshold: int = 1
    path: str = ""
    """HTTP: the path requested (a 200 passes)."""
    method: str = ""
    """HTTP: the method; empty, GET."""
    host: str = ""
    """HTTP: the Host header; gRPC: the ``:authority``. Empty, the cluster's name."""
    service_name: str = ""
    """gRPC: the ``grpc.health.v1`` service asked about; empty, the server as a whole."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpKeepalive:
    """OS-level keepalive on a cluster's connections or a listener's accepted ones; ``None``: the
    OS default."""

    probes: int | None = None
    time_s: int | None = None
    interval_s: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Http2Keepalive:
    """HTTP/2 PINGs on upstream connections: a PING unanswered for ``timeout_s`` (no frame at
    all arrives) closes the connection, so a half-dead one is found before a call hangs on it."""

    timeout_s: float
    interval_s: float | None = None
    """A PING this often (Envoy adds up to 15 % jitter); ``None``: no periodic PINGs."""
    connection_idle_interval_s: float | None = None
    """A PING before a new stream on a connection idle this long; ``None``: none."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamHttpOptions:
    """HTTP connection options to the endpoints (kgateway ``commonHttpProtocolOptions`` and
    ``http2ProtocolOptions``, Istio ``connectionPool``); the ``h2_`` ones apply only where Envoy
    speaks HTTP/2."""

    idle_timeout_s: float | None = None
    max_connection_duration_s: float | None = None
    max_stream_duration_s: float | None = None
    max_headers_count: int | None = None
    h2_max_concurrent_streams: int | None = None
    h2_initial_stream_window_size: int | None = None
    h2_initial_connection_window_size: int | None = None
    h2_keepalive: Http2Keepalive | None = None
    h2_stream_error_on_invalid_http_message: bool | None = None
    """Reset only the offending stream, not the connection, on an invalid HTTP/2 message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamTls:
    """TLS origination to the endpoints (Istio DestinationRule ``tls`` SIMPLE / MUTUAL, a Gateway
    API BackendTLSPolicy). Without a CA (file or secret) the proxy's system roots verify."""

    sni: str = ""
    ca_file: str | None = None
    ca_secret: str | None = None
    """SDS name of a validation context (CA bundle)."""
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_secret: str | None = None
    """SDS name of the client certificate (MUTUAL with ``credentialName``)."""
    subject_alt_names: tuple[str, ...] = ()
    """DNS names, one of which the server's certificate must carry (exactly)."""
    uri_subject_alt_names: tuple[str, ...] = ()
    """URI SANs (e.g. SPIFFE ids), matched exactly; either list may match."""
    insecure_skip_verify: bool = False
    reject_all: bool = False
    """No usable trust anchor (a policy whose CA refs are all invalid): every handshake fails,
    so requests fail with 503 rather than travel unverified or in plaintext."""
    alpn: tuple[str, ...] = ()
    """Offered ALPN; empty: chosen by ``alpn_for`` from the cluster's upstream protocol."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HashPolicy:
    """What a consistent-hash cluster hashes a request by (Istio ``consistentHash``)."""

    kind: Literal["header", "cookie", "source_ip", "query_parameter"]
    name: str = ""
    cookie_ttl_s: float | None = None
    """A cookie with a TTL is generated when the request has none (sticky sessions)."""
    cookie_path: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    name: str
    """``outbound|PORT|SUBSET|HOST``; also the EDS service name."""
    discovery: Literal["EDS", "STATIC", "STRICT_DNS"] = "EDS"
    upstream_protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    protocol_reason: str = ""
    """Why this protocol, e.g. ``Service/default/nginx spec.ports[0].appProtocol is 'http2'``."""
    endpoints: tuple[LbEndpoint, ...] = ()
    endpoint_key: EndpointKey | None = None
    """Set when ``endpoints`` come from a Service's EndpointSlices (EDS clusters)."""
    connect_timeout_s: float = 10.0
    lb_policy: LbPolicy = "ROUND_ROBIN"
    hash_policy: HashPolicy | None = None
    """With RING_HASH/MAGLEV: routes to this cluster hash requests by this."""
    ring_size: int | None = None
    """RING_HASH minimum ring size, or MAGLEV table size."""
    circuit_breaker: CircuitBreaker | None = None
    outlier_detection: OutlierDetection | None = None
    upstream_tls: UpstreamTls | None = None
    max_requests_per_connection: int | None = None
    health_checks: tuple[HealthCheck, ...] = ()
    tcp_keepalive: TcpKeepalive | None = None
    http_options: UpstreamHttpOptions | None = None
    source: ObjectRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StringMatch:
    kind: Literal["exact", "prefix", "suffix", "regex", "present"]
    value: str = ""
    ignore_case: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatch:
    name: str
    """Lower-case; pseudo-headers such as ``:method`` included."""
    match: StringMatch
    invert: bool = False
    treat_missing_as_empty: bool = False
    """A missing header is matched as ``""`` (so an inverted match succeeds: Istio ``withoutHeaders``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryParamMatch:
    name: str
    match: StringMatch


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMatch:
    kind: Literal["prefix", "path_separated_prefix", "exact", "regex"] = "prefix"
    value: str = "/"
    ignore_case: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteMatch:
    path: PathMatch = field(default_factory=PathMatch)
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMutation:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


NO_HEADER_CHANGES = HeaderMutation()
"""The (immutable, shared) empty mutation: most routes and backends change no header, and one
instance instead of two per route keeps a large config's object count, and GC time, down."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedCluster:
    cluster: str
    weight: int
    request_headers: HeaderMutation = NO_HEADER_CHANGES
    """Per-backend header changes (Gateway API backendRef filters)."""
    response_headers: HeaderMutation = NO_HEADER_CHANGES


@dataclass(frozen=True, slots=True, kw_only=True)
class Mirror:
    """Send a copy of each request (response ignored) to ``cluster`` for ``percent`` of requests."""

    cluster: str
    percent: float = 100.0


@dataclass(frozen=True, slots=True, kw_only=True)
class UrlRewrite:
    host: str | None = None
    full_path: str | None = None
    prefix: str | None = None
    """Replace the matched prefix with this (``ReplacePrefixMatch``)."""
    regex: tuple[str, str] | None = None
    """``(RE2 pattern, substitution)`` applied to the path (Istio ``uriRegexRewrite``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAction:
    backends: tuple[WeightedCluster, ...]
    invalid_weight: int = 0
    """Weight of backends that could not be resolved: that share of requests gets 500."""
    timeout_s: float | None = None
    """The whole request's limit (Envoy's route ``timeout``). ``None``: Envoy's default (15 s,
    which cuts a long stream); ``0``: no limit."""
    grpc_timeout_header_max_s: float | None = None
    """A gRPC client's deadline (its ``grpc-timeout`` header) ends the call at the proxy, capped
    at this; ``0``: uncapped; ``None``: the header is not read. Translators set it to the route
    timeout (``0`` when there is none), as Istio does."""
    idle_timeout_s: float | None = None
    """A request whose stream carries nothing for this long ends (Envoy's route
    ``idle_timeout``, overriding the listener's ``stream_idle_timeout``); ``0``: never;
    ``None``: the listener's."""
    rewrite: UrlRewrite | None = None
    mirrors: tuple[Mirror, ...] = ()
    hash_policies: tuple[HashPolicy, ...] = ()
    """From consistent-hash destinations: what Envoy hashes to pick their endpoint."""
    grpc_web: bool = False
    """The backends speak gRPC (a GRPC or GRPC-Web port, a GRPCRoute, an Istio GRPC-WEB server):
    a browser's gRPC-Web request is translated to gRPC for them (the ``grpc_web`` HTTP filter)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    attempts: int
    """Retries after the first try; ``0`` with ``per_try_timeout_s`` only bounds that try."""
    per_try_timeout_s: float | None = None
    retry_on: str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    retriable_status_codes: tuple[int, ...] = ()
    backoff_base_s: float | None = None
    """Base interval of Envoy's jittered exponential backoff (its cap: ten times it);
    ``None``: Envoy's default, 25 ms."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """Fault injection on a route (Istio ``fault``): a delay and/or an abort, each for a share."""

    delay_s: float | None = None
    delay_percent: float = 100.0
    abort_http_status: int | None = None
    abort_grpc_status: int | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Cors:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_s: float | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectResponse:
    status: int
    body: str = ""
    body_bytes: bytes | None = None
    """A binary body, sent as given (Istio ``directResponse.body.bytes``) instead of ``body``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    full_path: str | None = None
    prefix: str | None = None
    status_code: int = 302


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    name: str
    """A path-like id, e.g. ``httproute/default/nginx/rule/0/match/0``."""
    match: RouteMatch
    action: ForwardAction | DirectResponse | Redirect
    request_headers: HeaderMutation = NO_HEADER_CHANGES
    response_headers: HeaderMutation = NO_HEADER_CHANGES
    retries: RetryPolicy | None = None
    fault: Fault | None = None
    cors: Cors | None = None
    source: ObjectRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    require_tls: bool = False
    """Plain-HTTP requests get a 301 to https (Istio ``tls.httpsRedirect``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTable:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessLog:
    """A file access log on an HTTP listener (kgateway ``HTTPListenerPolicy.accessLog.fileSink``)."""

    path: str
    text_format: str | None = None
    """Envoy command operators in a line, e.g. ``%PROTOCOL% %UPSTREAM_PROTOCOL%``."""
    json_format: tuple[tuple[str, str], ...] | None = None
    """Key → command operator string; ``None`` with ``text_format`` ``None``: Envoy's default line."""
    source: ObjectRef | None = None


class SecretBytes(bytes):
    """Key material: compares and hashes as bytes, never prints."""

    def __repr__(self) -> str:
        return "[redacted]"

    __str__ = __repr__


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSecret:
    """A certificate and key delivered over SDS (never inline in a listener)."""

    name: str
    """The SDS resource name, e.g. ``kubernetes://gateway-system/example-cert``."""
    certificate_chain: bytes
    private_key: SecretBytes
    source: ObjectRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CaSecret:
    """A CA bundle delivered over SDS as a validation context (MUTUAL TLS)."""

    name: str
    ca_certificates: bytes
    source: ObjectRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamTls:
    """TLS terminated by the listener."""

    certificates: tuple[str, ...] = ()
    """SDS names of the server certificates (several: e.g. RSA and ECDSA)."""
    certificate_files: tuple[tuple[str, str], ...] = ()
    """``(chain path, key path)`` on the proxy's filesystem (Istio ``serverCertificate``/``privateKey``)."""
    alpn: tuple[str, ...] = ("h2", "http/1.1")
    require_client_certificate: bool = False
    ca_secret: str | None = None
    """SDS name of the CA that verifies client certificates (MUTUAL)."""
    accept_untrusted: bool = False
    """Let a client whose certificate does not verify through (Gateway API
    ``AllowInsecureFallback``): the backend decides."""
    ca_file: str | None = None
    subject_alt_names: tuple[str, ...] = ()
    spki_hashes: tuple[str, ...] = ()
    cert_hashes: tuple[str, ...] = ()
    min_version: str | None = None
    """``TLSv1_2`` style, Envoy's names."""
    max_version: str | None = None
    cipher_suites: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamHttpOptions:
    """The HTTP connection manager's settings toward clients (kgateway ListenerPolicy
    ``httpSettings``, HTTPListenerPolicy); ``None`` keeps the default. The ``h2_`` ones apply to
    clients speaking HTTP/2."""

    stream_idle_timeout_s: float | None = None
    """A stream with no activity for this long is reset (408 before the response starts); 0: never."""
    idle_timeout_s: float | None = None
    """A connection without streams for this long is closed (HTTP/2: GOAWAY first); 0: never."""
    max_requests_per_connection: int | None = None
    max_headers_count: int | None = None
    h2_max_concurrent_streams: int | None = None
    h2_initial_stream_window_size: int | None = None
    h2_initial_connection_window_size: int | None = None
    h2_allow_connect: bool | None = None
    """Extended CONNECT (WebSocket over HTTP/2); ``None``: on, meshxds's default."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TcpProxyOptions:
    """Limits on a TCP proxy's connections; ``None``: Envoy's default (idle 1 h; no maximum)."""

    idle_timeout_s: float | None = None
    """Close a connection without bytes either way for this long; ``0``: never."""
    max_connection_duration_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterChain:
    """One way of handling a connection on a listener, chosen by SNI."""

    name: str
    server_names: tuple[str, ...] = ()
    """SNI values this chain serves; ``()`` matches any (the default chain)."""
    tls: DownstreamTls | None = None
    route_table: RouteTable | None = None
    """HTTP: the connection manager's routes (delivered over RDS)."""
    tcp_backends: tuple[WeightedCluster, ...] = ()
    """TCP proxy (when ``route_table`` is ``None``): weighted upstream clusters."""
    destination_ranges: tuple[str, ...] = ()
    """CIDRs of the original destination this chain serves (a sidecar's per-service TCP chains)."""
    tcp_options: TcpProxyOptions | None = None
    """TCP proxy: connection limits (Istio's DestinationRule ``connectionPool.tcp``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Listener:
    name: str
    address: str
    port: int
    chains: tuple[FilterChain, ...]
    stat_prefix: str
    access_logs: tuple[AccessLog, ...] = ()
    http_options: DownstreamHttpOptions | None = None
    """For the connection managers of its HTTP chains."""
    per_connection_buffer_limit_bytes: int | None = None
    tcp_keepalive: TcpKeepalive | None = None
    """On the connections the listener accepts (set on its socket, which they inherit)."""
    sources: tuple[ObjectRef, ...] = ()

    @property
    def inspects_tls(self) -> bool:
        """SNI matching needs Envoy's ``tls_inspector`` listener filter."""
        return any(c.server_names for c in self.chains)

    @property
    def has_matched_chains(self) -> bool:
        """Chains selected by SNI or destination; the rest is the default chain."""
        return any(c.server_names or c.destination_ranges for c in self.chains)

    @property
    def route_tables(self) -> tuple[RouteTable, ...]:
        return tuple(c.route_table for c in self.chains if c.route_table is not None)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """Everything one proxy group receives."""

    listeners: tuple[Listener, ...] = ()
    clusters: tuple[Cluster, ...] = ()
    secrets: tuple[TlsSecret, ...] = ()
    ca_secrets: tuple[CaSecret, ...] = ()
    conflicts: tuple[str, ...] = ()
    """Two different values under one name, found by ``merge`` (only one of them could be kept):
    ``validate()`` reports them, so such a config is never served."""

    def validate(self) -> list[str]:
        """Every broken invariant (empty when fine): no conflicting definitions, unique names,
        routes point at known clusters."""
        problems: list[str] = list(self.conflicts)
        cluster_names = [c.name for c in self.clusters]
        if len(set(cluster_names)) != len(cluster_names):
            problems.append("cluster names are not unique")
        listener_names = [lis.name for lis in self.listeners]
        if len(set(listener_names)) != len(listener_names):
            problems.append("listener names are not unique")
        addresses = [(lis.address, lis.port) for lis in self.listeners]
        if len(set(addresses)) != len(addresses):
            problems.append("two listeners bind the same address and port")
        known = set(cluster_names)
        secrets = {s.name for s in self.secrets}
        secrets |= {s.name for s in self.ca_secrets}
        tables = [t.name for lis in self.listeners for t in lis.route_tables]
        if len(set(tables)) != len(tables):
            problems.append("route table names are not unique")
        for listener in self.listeners:
            defaults = [c for c in listener.chains if not c.server_names and not c.destination_ranges]
            if len(defaults) > 1:
                problems.append(f"listener {listener.name} has {len(defaults)} default filter chains")
            # Envoy rejects the listener when two chains match one (SNI name, destination) pair.
            matched: dict[tuple[str, str], str] = {}
            for chain in listener.chains:
                if not chain.server_names and not chain.destination_ranges:
                    continue
                for pair in product(chain.server_names or ("",), chain.destination_ranges or ("",)):
                    if pair in matched:
                        problems.append(
                            f"listener {listener.name}: chains {matched[pair]} and {chain.name} both match "
                            f"{' '.join(p for p in pair if p)}"
                        )
                    matched.setdefault(pair, chain.name)
            for chain in listener.chains:
                if chain.tls is not None:
                    wanted = list(chain.tls.certificates)
                    if chain.tls.ca_secret:
                        wanted.append(chain.tls.ca_secret)
                    problems.extend(
                        f"listener {listener.name} chain {chain.name} uses unknown secret {name}"
                        for name in wanted
                        if name not in secrets
                    )
                problems.extend(
                    f"listener {listener.name} chain {chain.name} points at unknown cluster {b.cluster}"
                    for b in chain.tcp_backends
                    if b.cluster not in known
                )
                if chain.route_table is None and not chain.tcp_backends:
                    problems.append(
                        f"listener {listener.name} chain {chain.name} has neither routes nor backends"
                    )
            for table in listener.route_tables:
                for vhost in table.virtual_hosts:
                    for route in vhost.routes:
                        if isinstance(route.action, ForwardAction):
                            problems.extend(
                                f"route {route.name} points at unknown cluster {b.cluster}"
                                for b in route.action.backends
                                if b.cluster not in known
                            )
        return problems

    @staticmethod
    def merge(configs: list[ProxyConfig]) -> ProxyConfig:
        """Union of several groups' config (a proxy selected by more than one gateway).

        The same value under one name is shared; two different values under one name are a
        conflict, recorded in ``conflicts`` (the first is kept, and ``validate()`` fails), never
        a silent pick."""
        if len(configs) == 1:
            return configs[0]
        conflicts: list[str] = [c for config in configs for c in config.conflicts]
        clusters: dict[str, Cluster] = {}
        listeners: dict[str, Listener] = {}
        secrets: dict[str, TlsSecret] = {}
        ca_secrets: dict[str, CaSecret] = {}
        for config in configs:
            for ca in config.ca_secrets:
                _merge_one(ca_secrets, ca, "CA secret", conflicts)
            for cluster in config.clusters:
                _merge_one(clusters, cluster, "cluster", conflicts)
            for listener in config.listeners:
                _merge_one(listeners, listener, "listener", conflicts)
            for secret in config.secrets:
                _merge_one(secrets, secret, "secret", conflicts)
        return ProxyConfig(
            listeners=tuple(listeners[k] for k in sorted(listeners)),
            clusters=tuple(clusters[k] for k in sorted(clusters)),
            secrets=tuple(secrets[k] for k in sorted(secrets)),
            ca_secrets=tuple(ca_secrets[k] for k in sorted(ca_secrets)),
            conflicts=tuple(conflicts),
        )


_Named = TypeVar("_Named", "Cluster", "Listener", "TlsSecret", "CaSecret")


def _merge_one(by_name: dict[str, _Named], value: _Named, what: str, conflicts: list[str]) -> None:
    """Add ``value`` under its name; a different value already there is a conflict."""
    known = by_name.setdefault(value.name, value)
    if known is not value and known != value:
        conflicts.append(
            f"{what} {value.name} is defined twice, differently ({describe_difference(known, value)})"
        )


def describe_difference(first: object, second: object) -> str:
    """Which fields of two values of one dataclass differ, and where each came from."""
    if not dataclasses.is_dataclass(first) or type(first) is not type(second):
        return "different kinds"
    fields = [f.name for f in dataclasses.fields(first) if getattr(first, f.name) != getattr(second, f.name)]
    parts = [f"{', '.join(fields)} differ"]
    origins = [_origin(first), _origin(second)]
    if all(origins) and origins[0] != origins[1]:
        parts.append(f"from {origins[0]} and {origins[1]}")
    return "; ".join(parts)


def _origin(value: object) -> str:
    source = getattr(value, "source", None)
    if source is not None:
        return str(source)
    sources = getattr(value, "sources", ())
    return ", ".join(str(s) for s in sources)


def _store_slots_directly(cls: type) -> None:
    """Give a frozen, slotted, keyword-only dataclass an ``__init__`` that stores each field
    through its slot descriptor.

    A frozen class cannot assign its fields, so the ``__init__`` dataclasses generates calls
    ``object.__setattr__`` once per field: the dearest part of building IR (a tenth of
    translating 10,000 routes). Storing through the descriptor does the same ~40% sooner. The
    signature, defaults and default factories are the dataclass's own; nothing else changes.
    """
    params: list[str] = []
    lines: list[str] = []
    scope: dict[str, object] = {"_MISSING": dataclasses.MISSING}
    for f in dataclasses.fields(cls):
        if not (f.init and f.kw_only):
            raise TypeError(f"{cls.__name__}.{f.name}: only keyword-only __init__ fields are handled")
        store = f"_store_{f.name}"
        scope[store] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            scope[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
            lines.append(f"    {store}(self, {f.name})")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            lines.append(f"    {store}(self, _factory_{f.name}() if {f.name} is _MISSING else {f.name})")
        else:
            params.append(f.name)
            lines.append(f"    {store}(self, {f.name})")
    if hasattr(cls, "__post_init__") or not params:
        raise TypeError(f"{cls.__name__}: __post_init__ and field-less classes are not handled")
    exec(f"def __init__(self, *, {', '.join(params)}) -> None:\n" + "\n".join(lines), scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    type.__setattr__(cls, "__init__", init)


for _name in __all__:
    _cls = globals()[_name]
    if isinstance(_cls, type) and dataclasses.is_dataclass(_cls):
        _store_slots_directly(_cls)
del _name, _cls
