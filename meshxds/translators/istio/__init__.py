"""Istio ``networking.istio.io`` → IR.

Unlike Gateway API config, Istio config depends on the proxy: which Gateways its labels select,
``sourceLabels`` in matches, and the namespace it sees services from. So ``IstioTranslator``
indexes the objects once per run and builds a ``ProxyConfig`` per proxy identity on demand (the
snapshot cache asks once per identity per generation). Pure: no I/O, no clock, no Envoy imports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from meshxds import ir, names
from meshxds.identity import ProxyIdentity
from meshxds.model import core, istio
from meshxds.model.manifests import ResourceSet
from meshxds.translators.istio.clusters import ClusterBuilder
from meshxds.translators.istio.gateways import build_gateways, selects
from meshxds.translators.istio.registry import ServiceRegistry
from meshxds.translators.istio.sidecar import build_sidecar
from meshxds.translators.upstream import EndpointIndex

__all__ = ["IstioConfig", "IstioTranslator"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IstioConfig:
    config: ir.ProxyConfig
    gateways: tuple[str, ...]
    """``ns/name`` of the Istio Gateways that selected the proxy (empty: it is a sidecar)."""
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class IstioTranslator:
    resources: ResourceSet
    listener_address: str = "0.0.0.0"
    cluster_domain: str = names.CLUSTER_DOMAIN
    endpoint_index: EndpointIndex | None = None
    """Shared with the other frontends; built from ``resources`` when not given."""
    _registry: ServiceRegistry | None = field(init=False, default=None)
    gateways: list[istio.Gateway] = field(init=False)
    virtual_services: list[istio.VirtualService] = field(init=False)
    _secrets: dict[tuple[str, str], core.Secret] = field(init=False)
    # The translation is pure: one result per (identity, sidecar) serves check(), the snapshot
    # builder and validate's explanations alike.
    _configs: dict[tuple[ProxyIdentity, bool], IstioConfig] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.gateways = self.resources.all(istio.Gateway)
        # Older VirtualServices first: Istio resolves overlaps in favour of the oldest.
        self.virtual_services = sorted(
            self.resources.all(istio.VirtualService),
            key=lambda vs: (vs.metadata.creation_timestamp or "~", vs.namespace, vs.name),
        )
        self._secrets = {s.key: s for s in self.resources.all(core.Secret)}

    @property
    def registry(self) -> ServiceRegistry:
        """Built on first use: a mesh without Istio config whose proxies are all Gateway API
        gateways never pays for it."""
        if self._registry is None:
            self._registry = ServiceRegistry(
                self.resources, cluster_domain=self.cluster_domain, endpoint_index=self.endpoint_index
            )
        return self._registry

    @property
    def has_config(self) -> bool:
        return bool(self.gateways or self.virtual_services or self.resources.all(istio.ServiceEntry))

    def selected_gateways(self, identity: ProxyIdentity) -> list[istio.Gateway]:
        return [g for g in self.gateways if selects(g, identity.label_map)]

    def config_for(self, identity: ProxyIdentity, *, sidecar: bool) -> IstioConfig:
        """The proxy's gateway config (if any Istio Gateway selects it), else — when ``sidecar``
        — the mesh's outbound config."""
        key = (identity, sidecar)
        config = self._configs.get(key)
        if config is None:
            config = self._configs[key] = self._build(identity, sidecar=sidecar)
        return config

    def forget(self, identities: Iterable[ProxyIdentity]) -> None:
        """Drop the memoized configs of ``identities`` (proxies gone for good); asked for
        again, they are translated again."""
        for identity in identities:
            for sidecar in (False, True):
                self._configs.pop((identity, sidecar), None)

    def _build(self, identity: ProxyIdentity, *, sidecar: bool) -> IstioConfig:
        selected = self.selected_gateways(identity)
        if not selected and not sidecar:
            # Neither an Istio gateway nor a sidecar (a Gateway API gateway): nothing to build.
            return IstioConfig(config=ir.ProxyConfig(), gateways=())
        clusters = ClusterBuilder(self.resources, self.registry, identity.namespace)
        context_args: dict[str, object] = {
            "proxy_namespace": identity.namespace,
            "proxy_labels": identity.label_map,
            "clusters": clusters,
            "registry": self.registry,
        }
        errors: list[str] = []
        warnings: list[str] = []
        listeners: list[ir.Listener] = []
        if selected:
            build = build_gateways(
                selected,
                vses=self.virtual_services,
                context_args=context_args,
                listener_address=self.listener_address,
                secrets=clusters.secrets,
                ca_secrets=clusters.ca_secrets,
                secrets_by_key=self._secrets,
            )
            listeners, errors, warnings = build.listeners, build.errors, build.warnings
        elif sidecar:
            side = build_sidecar(context_args, self.virtual_services, listener_address=self.listener_address)
            listeners, warnings = side.listeners, side.warnings
        config = ir.ProxyConfig(
            listeners=tuple(sorted(listeners, key=lambda lis: lis.name)),
            clusters=tuple(clusters.clusters[k] for k in sorted(clusters.clusters)),
            secrets=tuple(clusters.secrets[k] for k in sorted(clusters.secrets)),
            ca_secrets=tuple(clusters.ca_secrets[k] for k in sorted(clusters.ca_secrets)),
        )
        return IstioConfig(
            config=config,
            gateways=tuple(f"{g.namespace}/{g.name}" for g in selected),
            errors=tuple(dict.fromkeys(errors)),
            warnings=tuple(dict.fromkeys([*self.registry.warnings, *clusters.warnings, *warnings])),
        )

    def check(self) -> tuple[list[str], list[str]]:
        """Errors and warnings of every Istio Gateway (as its selected proxies see it) and of the
        sidecars of every namespace holding VirtualServices, for ``meshxds validate``."""
        errors: list[str] = []
        warnings: list[str] = list(self.registry.warnings)
        seen_errors: set[str] = set()
        seen_warnings = set(warnings)  # each message once, without a quadratic list scan
        identities = [ProxyIdentity.of(namespace=g.namespace, labels=g.spec.selector) for g in self.gateways]
        namespaces = sorted({vs.namespace for vs in self.virtual_services})
        identities += [ProxyIdentity.of(namespace=ns) for ns in namespaces]
        for identity in dict.fromkeys(identities):
            result = self.config_for(identity, sidecar=True)
            for error in result.errors:
                if error not in seen_errors:
                    seen_errors.add(error)
                    errors.append(error)
            for warning in result.warnings:
                if warning not in seen_warnings:
                    seen_warnings.add(warning)
                    warnings.append(warning)
            problems = [f"{identity}: {p}" for p in result.config.validate()]
            warnings.extend(problems)
            seen_warnings.update(problems)
        return errors, warnings
