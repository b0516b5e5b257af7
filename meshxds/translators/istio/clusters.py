"""Upstream clusters for Istio destinations: DestinationRule selection, traffic-policy merging,
and the policy inputs (lb, outlier, circuit breaker, connection pool, TLS, HTTP/2 upgrade) the
shared upstream layer builds each cluster with; also the TCP proxy limits ``connectionPool.tcp``
sets for TCP routes to a destination."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from meshxds import ir, names
from meshxds.model import core, istio
from meshxds.model.manifests import ResourceSet
from meshxds.translators.certificates import secret_value, tls_secret_from
from meshxds.translators.hostnames import covering_patterns
from meshxds.translators.istio.registry import RegisteredService, ServiceRegistry, visible_to
from meshxds.translators.upstream import (
    DEFAULT_CONNECT_TIMEOUT_S,
    ClusterPolicy,
    UpstreamPort,
    build_cluster,
    decide_upstream_protocol,
)

__all__ = ["ClusterBuilder", "Policy", "merged_policy"]

_LB: dict[str, ir.LbPolicy] = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",
    "RANDOM": "RANDOM",
    "UNSPECIFIED": "ROUND_ROBIN",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """The effective DestinationRule settings for one cluster after merging levels."""

    load_balancer: istio.LoadBalancerSettings | None = None
    connection_pool: istio.ConnectionPoolSettings | None = None
    outlier_detection: istio.OutlierDetection | None = None
    tls: istio.ClientTLSSettings | None = None


def _apply_level(policy: Policy, level: istio.TrafficPolicy | None, port: int) -> Policy:
    """Istio merges by replacing whole sections: the top level, then the port's level."""
    if level is None:
        return policy
    merged = Policy(
        load_balancer=level.load_balancer or policy.load_balancer,
        connection_pool=level.connection_pool or policy.connection_pool,
        outlier_detection=level.outlier_detection or policy.outlier_detection,
        tls=level.tls or policy.tls,
    )
    for port_level in level.port_level_settings:
        if port_level.port is not None and port_level.port.number == port:
            merged = Policy(
                load_balancer=port_level.load_balancer or merged.load_balancer,
                connection_pool=port_level.connection_pool or merged.connection_pool,
                outlier_detection=port_level.outlier_detection or merged.outlier_detection,
                tls=port_level.tls or merged.tls,
            )
    return merged


def merged_policy(rule: istio.DestinationRule | None, port: int, subset: istio.Subset | None) -> Policy:
    policy = Policy()
    if rule is not None:
        policy = _apply_level(policy, rule.spec.traffic_policy, port)
    if subset is not None:
        policy = _apply_level(policy, subset.traffic_policy, port)
    return policy


def _upstream_protocol(port: UpstreamPort, policy: Policy) -> tuple[ir.UpstreamProtocol, str]:
    """The shared decision (Istio's precedence) fed the DestinationRule's ``useClientProtocol``
    and ``h2UpgradePolicy``; ``DO_NOT_UPGRADE`` never downgrades an HTTP2/GRPC port."""
    http = policy.connection_pool.http if policy.connection_pool is not None else None
    use_client = http is not None and http.use_client_protocol
    upgrade = http is not None and http.h2_upgrade_policy == "UPGRADE"
    return decide_upstream_protocol(
        port.decision,
        client_protocol="DestinationRule connectionPool.http.useClientProtocol is true" if use_client else "",
        h2_upgrade="DestinationRule connectionPool.http.h2UpgradePolicy is UPGRADE" if upgrade else "",
    )


@dataclass(slots=True)
class ClusterBuilder:
    """Builds (and remembers) the clusters one proxy's config needs."""

    resources: ResourceSet
    registry: ServiceRegistry
    proxy_namespace: str
    clusters: dict[str, ir.Cluster] = field(default_factory=dict)
    secrets: dict[str, ir.TlsSecret] = field(default_factory=dict)
    ca_secrets: dict[str, ir.CaSecret] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    _tcp_options: dict[str, ir.TcpProxyOptions] = field(default_factory=dict)
    """By cluster name: what the DestinationRule's ``connectionPool.tcp`` sets on TCP proxies."""
    _rules: dict[str, list[tuple[str, istio.DestinationRule]]] = field(default_factory=dict)
    """Visible rules by their (resolved, lowercase) host pattern, probed per service hostname."""

    def __post_init__(self) -> None:
        for rule in self.resources.all(istio.DestinationRule):
            if rule.spec.workload_selector is not None:
                continue  # applies to sidecars of selected workloads only: not modelled here
            if visible_to(tuple(rule.spec.export_to), rule.namespace, self.proxy_namespace):
                host = self.registry.resolve(rule.spec.host, rule.namespace)
                self._rules.setdefault(host.lower(), []).append((host, rule))

    def destination_rule(self, service: RegisteredService) -> istio.DestinationRule | None:
        """The most specific rule for a host: exact before wildcard, then the proxy's namespace,
        then the service's, then the oldest (Istio's order)."""
        candidates = [c for p in covering_patterns(service.hostname) for c in self._rules.get(p, ())]
        if not candidates:
            return None

        def rank(item: tuple[str, istio.DestinationRule]) -> tuple[object, ...]:
            host, rule = item
            return (
                host != service.hostname,
                -len(host),
                rule.namespace != self.proxy_namespace,
                rule.namespace != service.namespace,
                rule.metadata.creation_timestamp or "~",
                rule.namespace,
                rule.name,
            )

        return sorted(candidates, key=rank)[0][1]

    def hash_policies(self, cluster_names: Iterable[str]) -> tuple[ir.HashPolicy, ...]:
        """The hash policies of the consistent-hash clusters among these (each once)."""
        found: list[ir.HashPolicy] = []
        for name in cluster_names:
            cluster = self.clusters.get(name)
            if cluster is not None and cluster.hash_policy is not None and cluster.hash_policy not in found:
                found.append(cluster.hash_policy)
        return tuple(found)

    def tcp_proxy_options(self, backends: Sequence[ir.WeightedCluster]) -> ir.TcpProxyOptions | None:
        """The limits of a TCP proxy to these clusters: Istio takes the first destination's
        ``connectionPool.tcp`` (``idleTimeout``, ``maxConnectionDuration``). Istio reads only the
        rule's top-level policy here; meshxds the policy the cluster itself was built with, so a
        port-level or subset ``connectionPool`` counts as it does for the cluster."""
        return self._tcp_options.get(backends[0].cluster) if backends else None

    def cluster(self, hostname: str, port_number: int | None, subset_name: str | None) -> ir.Cluster | str:
        """The cluster for a destination, or a sentence saying why there is none."""
        service = self.registry.get(hostname)
        if service is None:
            return f"host {hostname} is not a known service"
        if not visible_to(service.export_to, service.namespace, self.proxy_namespace):
            return f"service {hostname} is not exported to namespace {self.proxy_namespace}"
        port = service.port(port_number)
        if port is None:
            wanted = "a port (the service has several)" if port_number is None else f"port {port_number}"
            return f"service {hostname} has no {wanted}"
        rule = self.destination_rule(service)
        subset: istio.Subset | None = None
        if subset_name:
            subset = next((s for s in (rule.spec.subsets if rule else []) if s.name == subset_name), None)
            if subset is None:
                return f"no DestinationRule defines subset {subset_name} for {hostname}"
        name = names.cluster_name(hostname, port.number, subset=subset_name or "")
        cached = self.clusters.get(name)
        if cached is not None:
            return cached
        cluster = self._build(name, service, port, rule, subset)
        self.clusters[name] = cluster
        return cluster

    def _build(
        self,
        name: str,
        service: RegisteredService,
        port: UpstreamPort,
        rule: istio.DestinationRule | None,
        subset: istio.Subset | None,
    ) -> ir.Cluster:
        policy = merged_policy(rule, port.number, subset)
        endpoints, key = port.subset(subset.labels if subset is not None else {})
        pool = policy.connection_pool
        tcp = pool.tcp if pool is not None else None
        http = pool.http if pool is not None else None
        circuit = None
        if tcp is not None or http is not None:
            circuit = ir.CircuitBreaker(
                max_connections=tcp.max_connections if tcp else None,
                max_pending_requests=http.http1_max_pending_requests if http else None,
                max_requests=http.http2_max_requests if http else None,
                max_retries=http.max_retries if http else None,
            )
        if tcp is not None and (tcp.idle_timeout is not None or tcp.max_connection_duration is not None):
            self._tcp_options[name] = ir.TcpProxyOptions(
                idle_timeout_s=_optional_seconds(tcp.idle_timeout),
                max_connection_duration_s=_optional_seconds(tcp.max_connection_duration),
            )
        return build_cluster(
            name=name,
            source=service.source,
            protocol=_upstream_protocol(port, policy),
            endpoints=endpoints,
            discovery=service.discovery,
            endpoint_key=key,
            policy=ClusterPolicy(
                connect_timeout_s=_seconds(tcp.connect_timeout if tcp else None, DEFAULT_CONNECT_TIMEOUT_S),
                lb_policy=self._lb_policy(policy, name),
                hash_policy=_hash_policy(policy.load_balancer),
                ring_size=_ring_size(policy.load_balancer),
                circuit_breaker=circuit,
                outlier_detection=_outlier(policy.outlier_detection),
                upstream_tls=self._upstream_tls(policy.tls, service, name),
                max_requests_per_connection=http.max_requests_per_connection if http else None,
                tcp_keepalive=self._tcp_keepalive(tcp, rule, name),
                http_options=_http_options(tcp, http),
            ),
        )

    def _tcp_keepalive(
        self, tcp: istio.TCPSettings | None, rule: istio.DestinationRule | None, name: str
    ) -> ir.TcpKeepalive | None:
        """``tcp.tcpKeepalive``; an empty one still turns SO_KEEPALIVE on with the OS's values.
        Envoy counts whole seconds: Istio truncates, and a value under 1 s (truncated to 0, which
        the kernel refuses for TCP_KEEPIDLE / TCP_KEEPINTVL) is left out with a warning."""
        keepalive = tcp.tcp_keepalive if tcp is not None else None
        if keepalive is None:
            return None
        whole: dict[str, int | None] = {}
        for field_name, value in (("time", keepalive.time), ("interval", keepalive.interval)):
            seconds = int(istio.parse_istio_duration(value)) if value is not None else None
            if seconds == 0:
                self.warnings.append(
                    f"cluster {name}: {rule.ref if rule else 'DestinationRule'} "
                    f"connectionPool.tcp.tcpKeepalive.{field_name} {value} is under 1s, and TCP "
                    "keepalive counts whole seconds; not applied (the OS default is used)"
                )
                seconds = None
            whole[field_name] = seconds
        return ir.TcpKeepalive(
            probes=keepalive.probes or None, time_s=whole["time"], interval_s=whole["interval"]
        )

    def _lb_policy(self, policy: Policy, name: str) -> ir.LbPolicy:
        lb = policy.load_balancer
        if lb is None:
            return "ROUND_ROBIN"
        if lb.consistent_hash is not None:
            return "MAGLEV" if lb.consistent_hash.maglev is not None else "RING_HASH"
        if lb.simple == "PASSTHROUGH":
            self.warnings.append(
                f"cluster {name}: PASSTHROUGH load balancing is not supported; using ROUND_ROBIN"
            )
            return "ROUND_ROBIN"
        return _LB.get(lb.simple or "UNSPECIFIED", "ROUND_ROBIN")

    def _upstream_tls(
        self, tls: istio.ClientTLSSettings | None, service: RegisteredService, name: str
    ) -> ir.UpstreamTls | None:
        if tls is None or (tls.mode or "DISABLE") == "DISABLE":
            return None
        if tls.mode == "ISTIO_MUTUAL":
            self.warnings.append(
                f"cluster {name}: tls.mode ISTIO_MUTUAL needs a mesh CA, which meshxds does not run; "
                "plaintext is used"
            )
            return None
        client_secret = ca_secret = None
        if tls.credential_name:
            secret = self.resources.get(core.Secret, self.proxy_namespace, tls.credential_name)
            if secret is None:
                self.warnings.append(
                    f"cluster {name}: credentialName {tls.credential_name} not found in namespace "
                    f"{self.proxy_namespace}"
                )
            else:
                if tls.mode == "MUTUAL":
                    found = tls_secret_from(secret)
                    if isinstance(found, str):
                        self.warnings.append(f"cluster {name}: {found}")
                    else:
                        self.secrets[found.name] = found
                        client_secret = found.name
                ca = secret_value(secret, "ca.crt")
                if ca is not None:
                    ca_name = names.sds_secret_name(secret.namespace, secret.name) + "-cacert"
                    self.ca_secrets[ca_name] = ir.CaSecret(name=ca_name, ca_certificates=ca)
                    ca_secret = ca_name
        return ir.UpstreamTls(
            sni=tls.sni or (service.hostname if service.external else ""),
            ca_file=tls.ca_certificates,
            ca_secret=ca_secret,
            client_cert_file=tls.client_certificate if tls.mode == "MUTUAL" else None,
            client_key_file=tls.private_key if tls.mode == "MUTUAL" else None,
            client_secret=client_secret,
            subject_alt_names=tuple(tls.subject_alt_names),
            insecure_skip_verify=bool(tls.insecure_skip_verify),
        )


def _seconds(value: str | None, default: float) -> float:
    return istio.parse_istio_duration(value) if value else default


def _optional_seconds(value: str | None) -> float | None:
    return istio.parse_istio_duration(value) if value is not None else None


def _http_options(
    tcp: istio.TCPSettings | None, http: istio.HTTPSettings | None
) -> ir.UpstreamHttpOptions | None:
    """Istio's ``applyConnectionPool``: ``http.idleTimeout``, else ``tcp.idleTimeout``, is the
    connection's idle timeout; ``tcp.maxConnectionDuration`` its lifetime; ``maxConcurrentStreams``
    (above 0) and ``http2KeepAlive`` apply where Envoy speaks HTTP/2."""
    idle = http.idle_timeout if http is not None else None
    if idle is None and tcp is not None:
        idle = tcp.idle_timeout
    keepalive = http.http2_keep_alive if http is not None else None
    options = ir.UpstreamHttpOptions(
        idle_timeout_s=_optional_seconds(idle),
        max_connection_duration_s=_optional_seconds(tcp.max_connection_duration if tcp else None),
        h2_max_concurrent_streams=(http.max_concurrent_streams or None) if http is not None else None,
        h2_keepalive=ir.Http2Keepalive(
            interval_s=istio.parse_istio_duration(keepalive.interval),
            timeout_s=istio.parse_istio_duration(keepalive.timeout),
        )
        if keepalive is not None
        else None,
    )
    return None if options == ir.UpstreamHttpOptions() else options


def _outlier(od: istio.OutlierDetection | None) -> ir.OutlierDetection | None:
    if od is None:
        return None
    return ir.OutlierDetection(
        consecutive_5xx=od.consecutive_5xx_errors
        if od.consecutive_5xx_errors is not None
        else od.consecutive_errors,
        consecutive_gateway_errors=od.consecutive_gateway_errors,
        interval_s=_seconds(od.interval, 0) or None,
        base_ejection_time_s=_seconds(od.base_ejection_time, 0) or None,
        max_ejection_percent=od.max_ejection_percent,
        min_health_percent=od.min_health_percent,
    )


def _hash_policy(lb: istio.LoadBalancerSettings | None) -> ir.HashPolicy | None:
    hashing = lb.consistent_hash if lb is not None else None
    if hashing is None:
        return None
    if hashing.http_header_name:
        return ir.HashPolicy(kind="header", name=hashing.http_header_name.lower())
    if hashing.http_cookie is not None:
        cookie = hashing.http_cookie
        return ir.HashPolicy(
            kind="cookie",
            name=cookie.name,
            cookie_ttl_s=istio.parse_istio_duration(cookie.ttl) if cookie.ttl else None,
            cookie_path=cookie.path,
        )
    if hashing.http_query_parameter_name:
        return ir.HashPolicy(kind="query_parameter", name=hashing.http_query_parameter_name)
    return ir.HashPolicy(kind="source_ip")


def _ring_size(lb: istio.LoadBalancerSettings | None) -> int | None:
    hashing = lb.consistent_hash if lb is not None else None
    if hashing is None:
        return None
    if hashing.maglev is not None:
        return hashing.maglev.table_size
    if hashing.ring_hash is not None and hashing.ring_hash.minimum_ring_size:
        return hashing.ring_hash.minimum_ring_size
    return hashing.minimum_ring_size
