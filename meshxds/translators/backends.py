"""Gateway API backendRefs (a Service port, or a kgateway ``Backend``) → clusters: kinds,
cross-namespace grants, port lookup, and the protocol a route kind needs.

What a cluster is (its protocol decision, discovery, endpoints) comes from the shared upstream
layer, ``translators/upstream``, as it does for Istio's destinations.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple, cast

from meshxds import ir, names
from meshxds.model import core, gatewayapi, kgateway
from meshxds.model.manifests import ResourceSet
from meshxds.translators.backendtls import BackendTlsPolicies
from meshxds.translators.protocol import Protocol, ProtocolDecision, decide_port_protocol, is_grpc
from meshxds.translators.upstream import (
    ClusterPolicy,
    EndpointIndex,
    UpstreamPort,
    build_cluster,
    decide_discovery,
    decide_upstream_protocol,
    service_port,
)
from meshxds.translators.upstream.clusters import NO_POLICY

__all__ = ["BackendIndex", "ClusterPolicyLookup", "ResolvedBackend", "kgateway_backend_host"]

ClusterPolicyLookup = Callable[[str, str, str, "core.ServicePort | None"], ClusterPolicy]
"""``(kind, namespace, name, Service port or None)`` → the policy attached to that backend
(kgateway BackendConfigPolicy)."""

_BACKEND_KINDS = frozenset({("", "Service"), (kgateway.GROUP, "Backend")})


def kgateway_backend_host(name: str, namespace: str) -> str:
    """The HOST part of a kgateway Backend's cluster name: ``outbound|80||http2.default.backend.kgateway``."""
    return f"{name}.{namespace}.backend.kgateway"


_VARIANT_TAGS: dict[ir.UpstreamProtocol, str] = {
    ir.UpstreamProtocol.HTTP1: "http",
    ir.UpstreamProtocol.HTTP2: "http2",
    ir.UpstreamProtocol.DOWNSTREAM: "auto",
    ir.UpstreamProtocol.TCP: "tcp",
}
"""The cluster-name tag of a protocol variant, in Istio's lower-case protocol spellings."""


def _choose_protocol(
    decision: ProtocolDecision,
    default: ir.UpstreamProtocol,
    force: tuple[ir.UpstreamProtocol, str] | None,
) -> tuple[ir.UpstreamProtocol, str, str]:
    """``(protocol, reason, variant)``: the port's own protocol keeps the plain cluster name
    (``variant`` empty); a route kind that forces another (a GRPCRoute's HTTP/2 on an HTTP/1.1
    port) gets a variant cluster of its own, so neither overwrites the other."""
    own, own_reason = decide_upstream_protocol(decision, default=default)
    if force is None:
        return own, own_reason, ""
    protocol, reason = force
    return protocol, reason, "" if protocol == own else _VARIANT_TAGS[protocol]


class _BackendRef(NamedTuple):
    """One backendRef as resolved: routes that share it share the answer."""

    group: str
    kind: str
    name: str
    namespace: str
    port: int | None
    from_kind: str
    from_namespace: str
    default_protocol: ir.UpstreamProtocol
    force_protocol: tuple[ir.UpstreamProtocol, str] | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedBackend:
    """A backendRef that resolved to a Service port, or the reason it did not."""

    cluster: ir.Cluster | None
    reason: str = "ResolvedRefs"
    """A Gateway API ResolvedRefs reason: ``ResolvedRefs``, ``BackendNotFound``, ``InvalidKind``, ..."""
    message: str = ""
    warnings: tuple[str, ...] = ()
    grpc: bool = False
    """The port speaks gRPC (GRPC or GRPC-Web): routes to it also take gRPC-Web from browsers."""


@dataclass(slots=True)
class BackendIndex:
    """Lookups built once per translation run."""

    resources: ResourceSet
    cluster_domain: str = names.CLUSTER_DOMAIN
    endpoint_index: EndpointIndex | None = None
    """Shared with the other frontends; built from ``resources`` when not given."""
    cluster_policy: ClusterPolicyLookup | None = None
    """Policies attached to Services and Backends; none when not given."""
    _grants: dict[str, list[gatewayapi.ReferenceGrant]] = field(default_factory=dict)
    _clusters: dict[tuple[str, ir.UpstreamProtocol], ir.Cluster] = field(default_factory=dict)
    # Per (Service, port) object: the upstream port and cluster host, decided once however
    # many routes use it. Keyed by identity: the objects live as long as ``resources``.
    _ports: dict[tuple[int, int], tuple[UpstreamPort, str]] = field(default_factory=dict)
    _resolved: dict[_BackendRef, ResolvedBackend] = field(default_factory=dict)
    _services: Mapping[tuple[str, str], core.Service] = field(default_factory=dict)
    tls_policies: BackendTlsPolicies | None = None
    """The run's BackendTLSPolicies (built from ``resources`` when not given)."""

    def __post_init__(self) -> None:
        if self.tls_policies is None:
            self.tls_policies = BackendTlsPolicies(self.resources)
        if self.endpoint_index is None:
            self.endpoint_index = EndpointIndex(self.resources)
        # Services by (namespace, name), looked up once per distinct backendRef.
        self._services = cast(
            "Mapping[tuple[str, str], core.Service]", self.resources.objects.get(core.Service, {})
        )
        grants: dict[str, list[gatewayapi.ReferenceGrant]] = defaultdict(list)
        for grant in self.resources.all(gatewayapi.ReferenceGrant):
            grants[grant.namespace].append(grant)
        self._grants = dict(grants)

    def _policy(self, kind: str, namespace: str, name: str, port: core.ServicePort | None) -> ClusterPolicy:
        """The policy attached to a Service port or Backend: meshxds's defaults without one."""
        if self.cluster_policy is None:
            return NO_POLICY
        return self.cluster_policy(kind, namespace, name, port)

    def reference_allowed(
        self,
        *,
        from_group: str,
        from_kind: str,
        from_namespace: str,
        to_group: str,
        to_kind: str,
        to_namespace: str,
        to_name: str,
    ) -> bool:
        """Same namespace, or a ReferenceGrant in the target namespace admits the reference."""
        if from_namespace == to_namespace:
            return True
        for grant in self._grants.get(to_namespace, []):
            admits_from = any(
                f.group == from_group and f.kind == from_kind and f.namespace == from_namespace
                for f in grant.spec.from_
            )
            admits_to = any(
                t.group == to_group and t.kind == to_kind and (t.name is None or t.name == to_name)
                for t in grant.spec.to
            )
            if admits_from and admits_to:
                return True
        return False

    def service_cluster(
        self,
        service: core.Service,
        port: core.ServicePort,
        *,
        default_protocol: ir.UpstreamProtocol,
        force_protocol: tuple[ir.UpstreamProtocol, str] | None = None,
    ) -> tuple[ir.Cluster, tuple[str, ...], Protocol]:
        """The cluster for one Service port in one protocol (memoized), protocol warnings, and the
        port's own protocol."""
        memo = self._ports.get((id(service), id(port)))
        if memo is None:
            upstream = service_port(service, service.spec.ports.index(port))
            host = names.service_fqdn(service.name, service.namespace, domain=self.cluster_domain)
            memo = self._ports[(id(service), id(port))] = (upstream, host)
        upstream, host = memo
        decision = upstream.decision
        protocol, reason, variant = _choose_protocol(decision, default_protocol, force_protocol)
        name = names.cluster_name(host, port.port, variant=variant)
        # Keyed by protocol too: an HTTP/1.1 and a TCP cluster of an undecided port share the
        # plain name, and both are kept so the clash is reported where they meet, not dropped here.
        cached = self._clusters.get((name, protocol))
        if cached is not None:
            return cached, decision.warnings, decision.protocol
        key = upstream.endpoint_key
        assert self.endpoint_index is not None and key is not None
        assert self.tls_policies is not None
        applied = self.tls_policies.for_port(service, port)
        # kgateway's BackendConfigPolicy settings, and a BackendTLSPolicy's TLS on top of them.
        policy = self._policy("Service", service.namespace, service.name, port)
        if applied is not None:
            policy = replace(policy, upstream_tls=applied.tls)
        cluster = build_cluster(
            name=name,
            source=ir.ObjectRef(kind="Service", namespace=service.namespace, name=service.name),
            protocol=(protocol, reason),
            # Every variant reads the same endpoints: one EndpointKey per Service port.
            endpoints=self.endpoint_index.endpoints(key),
            endpoint_key=key,
            policy=policy,
        )
        self._clusters[(name, protocol)] = cluster
        if not decision.warnings:
            return cluster, (), decision.protocol
        return cluster, tuple(f"{service.ref}: {w}" for w in decision.warnings), decision.protocol

    def resolve_backend_ref(
        self,
        *,
        group: str,
        kind: str,
        name: str,
        namespace: str,
        port: int | None,
        from_kind: str,
        from_namespace: str,
        default_protocol: ir.UpstreamProtocol = ir.UpstreamProtocol.HTTP1,
        force_protocol: tuple[ir.UpstreamProtocol, str] | None = None,
    ) -> ResolvedBackend:
        """Resolve a Gateway API backendRef (a Service, or a kgateway Backend) to a cluster;
        memoized per run (routes share backends: 10,000 routes make 32,000 references)."""
        ref = _BackendRef(
            group, kind, name, namespace, port, from_kind, from_namespace, default_protocol, force_protocol
        )
        found = self._resolved.get(ref)
        if found is None:
            found = self._resolved[ref] = self._resolve(ref)
        return found

    def _resolve(self, ref: _BackendRef) -> ResolvedBackend:
        group, kind, name, namespace, port, from_kind, from_namespace, default_protocol, force_protocol = ref
        if (group, kind) not in _BACKEND_KINDS:
            return ResolvedBackend(
                cluster=None,
                reason="InvalidKind",
                message=f"backend kind {group or 'core'}/{kind} is not supported",
            )
        if namespace != from_namespace and not self.reference_allowed(
            from_group=gatewayapi.GROUP,
            from_kind=from_kind,
            from_namespace=from_namespace,
            to_group=group,
            to_kind=kind,
            to_namespace=namespace,
            to_name=name,
        ):
            return ResolvedBackend(
                cluster=None,
                reason="RefNotPermitted",
                message=f"no ReferenceGrant in namespace {namespace} allows {from_kind}s from "
                f"{from_namespace} to use {kind} {name}",
            )
        if kind == "Backend":
            return self._kgateway_backend(name, namespace, default_protocol, force_protocol)
        service = self._services.get((namespace, name))
        if service is None:
            return ResolvedBackend(
                cluster=None, reason="BackendNotFound", message=f"Service {namespace}/{name} not found"
            )
        if port is None:
            return ResolvedBackend(
                cluster=None,
                reason="BackendNotFound",
                message=f"a port is required to use Service {namespace}/{name}",
            )
        service_port = None
        for candidate in service.spec.ports:  # Service.port() without its generator
            if candidate.port == port:
                service_port = candidate
                break
        if service_port is None:
            return ResolvedBackend(
                cluster=None,
                reason="BackendNotFound",
                message=f"Service {namespace}/{name} has no port {port}",
            )
        cluster, warnings, protocol = self.service_cluster(
            service, service_port, default_protocol=default_protocol, force_protocol=force_protocol
        )
        return ResolvedBackend(cluster=cluster, warnings=warnings, grpc=is_grpc(protocol))

    def _kgateway_backend(
        self,
        name: str,
        namespace: str,
        default_protocol: ir.UpstreamProtocol,
        force_protocol: tuple[ir.UpstreamProtocol, str] | None,
    ) -> ResolvedBackend:
        """A kgateway ``Backend`` of type Static: IPs → STATIC cluster, names → STRICT_DNS."""
        backend = self.resources.get(kgateway.Backend, namespace, name)
        if backend is None:
            return ResolvedBackend(
                cluster=None, reason="BackendNotFound", message=f"Backend {namespace}/{name} not found"
            )
        static = backend.spec.static
        if backend.spec.type != "Static" or static is None:
            return ResolvedBackend(
                cluster=None,
                reason="InvalidKind",
                message=f"Backend {namespace}/{name} of type {backend.spec.type} is not supported",
            )
        decision = decide_port_protocol(
            port_name=None, app_protocol=static.app_protocol, field_prefix="spec.static"
        )
        protocol, reason, variant = _choose_protocol(decision, default_protocol, force_protocol)
        cluster = build_cluster(
            name=names.cluster_name(
                kgateway_backend_host(name, namespace), static.hosts[0].port, variant=variant
            ),
            source=ir.ObjectRef(kind="Backend", namespace=namespace, name=name),
            protocol=(protocol, reason),
            endpoints=tuple(ir.LbEndpoint(address=h.host, port=h.port) for h in static.hosts),
            discovery=decide_discovery(h.host for h in static.hosts),
            policy=self._policy("Backend", namespace, name, None),
        )
        return ResolvedBackend(cluster=cluster, grpc=is_grpc(decision.protocol))
