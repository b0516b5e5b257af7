"""The mesh's service registry as Istio sees it: Kubernetes Services (endpoints from
EndpointSlices, labels from their Pods) and ServiceEntries (endpoints inline or WorkloadEntries).

Hostnames are FQDNs (``reviews.prod.svc.cluster.local``); :meth:`ServiceRegistry.resolve` turns
the short names VirtualServices and DestinationRules use into them, relative to a namespace.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshxds import ir, names
from meshxds.model import core, istio
from meshxds.model.manifests import ResourceSet
from meshxds.translators.hostnames import hostname_matches
from meshxds.translators.protocol import decide_port_protocol
from meshxds.translators.upstream import (
    ENTRY,
    Discovery,
    EndpointIndex,
    LabelledEndpoint,
    UpstreamPort,
    decide_discovery,
    is_ip,
    service_port,
)

__all__ = ["RegisteredService", "ServiceRegistry", "visible_to"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisteredService:
    hostname: str
    namespace: str
    ports: tuple[UpstreamPort, ...]
    source: ir.ObjectRef
    export_to: tuple[str, ...] = ()
    discovery: Discovery = "EDS"
    """``EDS`` (Kubernetes, STATIC ServiceEntries), ``STRICT_DNS`` (DNS ServiceEntries, and
    entries with a hostname among their endpoints)."""
    external: bool = False
    cluster_ips: tuple[str, ...] = ()
    short_name: str = ""

    def port(self, number: int | None) -> UpstreamPort | None:
        if number is None:
            return self.ports[0] if len(self.ports) == 1 else None
        return next((p for p in self.ports if p.number == number), None)

    def name_forms(self, client_namespace: str) -> tuple[str, ...]:
        """Every hostname a client in ``client_namespace`` may use for this service: ``name``
        (only from the service's own namespace, as DNS search paths resolve it), ``name.ns``,
        ``name.ns.svc`` and the FQDN."""
        if not self.short_name:
            return (self.hostname,)
        base = f"{self.short_name}.{self.namespace}"
        forms = (base, f"{base}.svc", self.hostname)
        return (self.short_name, *forms) if client_namespace == self.namespace else forms


def visible_to(export_to: tuple[str, ...], owner_namespace: str, namespace: str) -> bool:
    """Istio ``exportTo``: empty or ``*`` is everywhere, ``.`` the owner's namespace, else names."""
    if not export_to or "*" in export_to:
        return True
    return (namespace == owner_namespace and "." in export_to) or namespace in export_to


@dataclass(slots=True)
class ServiceRegistry:
    resources: ResourceSet
    cluster_domain: str = names.CLUSTER_DOMAIN
    services: dict[str, RegisteredService] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    endpoint_index: EndpointIndex | None = None
    """Shared with the other frontends; built from ``resources`` when not given."""

    def __post_init__(self) -> None:
        index = self.endpoint_index or EndpointIndex(self.resources)
        for svc in self.resources.all(core.Service):
            self._add_kubernetes(svc, index)
        for entry in self.resources.all(istio.ServiceEntry):
            self._add_service_entry(entry, index)

    def _add_kubernetes(self, svc: core.Service, index: EndpointIndex) -> None:
        ports = tuple(service_port(svc, number, endpoints=index) for number in range(len(svc.spec.ports)))
        self.warnings.extend(f"{svc.ref}: {w}" for port in ports for w in port.decision.warnings)
        hostname = names.service_fqdn(svc.name, svc.namespace, domain=self.cluster_domain)
        cluster_ips = tuple(ip for ip in (svc.spec.cluster_ips or [svc.spec.cluster_ip]) if ip and is_ip(ip))
        self.services[hostname] = RegisteredService(
            hostname=hostname,
            namespace=svc.namespace,
            ports=ports,
            source=ir.ObjectRef(kind="Service", namespace=svc.namespace, name=svc.name),
            cluster_ips=cluster_ips,
            short_name=svc.name,
            export_to=tuple(
                a.strip()
                for a in svc.metadata.annotations.get("networking.istio.io/exportTo", "").split(",")
                if a.strip()
            ),
        )

    def _add_service_entry(self, entry: istio.ServiceEntry, index: EndpointIndex) -> None:
        spec = entry.spec
        resolution = spec.resolution or "NONE"
        if resolution == "NONE":
            self.warnings.append(
                f"{entry.ref}: resolution NONE needs the original destination of intercepted traffic, "
                "which meshxds does not capture; the entry is not served"
            )
            return
        for h_index, host in enumerate(spec.hosts):
            if host.startswith("*"):
                self.warnings.append(
                    f"{entry.ref}: spec.hosts[{h_index}]: wildcard hosts are not supported; skipped"
                )
                continue
            ports = []
            for p_index, port in enumerate(spec.ports):
                decision = decide_port_protocol(
                    port_name=port.name,
                    server_protocol=port.protocol,
                    field_prefix=f"spec.ports[{p_index}]",
                )
                endpoints = index.entry_endpoints(entry.namespace, entry.name, port.name)
                if resolution in ("DNS", "DNS_ROUND_ROBIN") and not endpoints:
                    # No endpoints: Istio resolves the host itself.
                    endpoints = (
                        LabelledEndpoint(
                            endpoint=ir.LbEndpoint(address=host, port=port.target_port or port.number)
                        ),
                    )
                # From the shared index, so a WorkloadEntry edit moves only load assignments
                # (used only when the entry's clusters are EDS: see ``discovery`` below).
                key = ir.EndpointKey(
                    namespace=entry.namespace, service=entry.name, port_name=port.name, entry=ENTRY
                )
                ports.append(
                    UpstreamPort(
                        number=port.number,
                        name=port.name,
                        decision=decision,
                        endpoints=endpoints,
                        endpoint_key=key,
                    )
                )
            discovery = decide_discovery(
                (e.endpoint.address for p in ports for e in p.endpoints),
                dns=resolution in ("DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"),
                eds=True,
            )
            self.services[host] = RegisteredService(
                hostname=host,
                namespace=entry.namespace,
                ports=tuple(ports),
                source=ir.ObjectRef(kind="ServiceEntry", namespace=entry.namespace, name=entry.name),
                export_to=tuple(spec.export_to),
                discovery=discovery,
                external=(spec.location or "MESH_EXTERNAL") == "MESH_EXTERNAL",
            )

    def resolve(self, host: str, namespace: str) -> str:
        """A VirtualService/DestinationRule host as an FQDN: ``reviews`` in ``prod`` →
        ``reviews.prod.svc.cluster.local``; a registered name or an FQDN is kept."""
        if host in self.services or "*" in host:
            return host
        parts = host.split(".")
        if len(parts) == 1:
            return names.service_fqdn(host, namespace, domain=self.cluster_domain)
        if (
            len(parts) == 2
            and names.service_fqdn(parts[0], parts[1], domain=self.cluster_domain) in self.services
        ):
            return names.service_fqdn(parts[0], parts[1], domain=self.cluster_domain)
        return host

    def get(self, hostname: str) -> RegisteredService | None:
        return self.services.get(hostname)

    def matching(self, pattern: str) -> list[RegisteredService]:
        """Services whose hostname the (possibly wildcard) pattern covers."""
        return [s for h, s in sorted(self.services.items()) if hostname_matches(pattern, h)]
