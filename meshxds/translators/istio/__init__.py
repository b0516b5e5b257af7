"""Istio ``networking.istio.io`` → IR.

Unlike Gateway API config, Istio config depends on the proxy: which Gateways its labels select,
``sourceLabels`` in matches, and the namespace it sees services from. So ``IstioTranslator``
indexes the objects once per run and builds a ``ProxyConfig`` per proxy identity on demand (the
snapshot cache asks once per identity per generation). Pure: no I/O, no clock, no Envoy imports.

Problems are reported as ``AnalysisMessage`` records (object, field, level, Istio-style code:
``messages.py``), never as sentences a reader must parse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from meshxds import ir, names
from meshxds.conditions import AnalysisMessage, Level
from meshxds.identity import ProxyIdentity
from meshxds.model import core, istio
from meshxds.model.manifests import ResourceSet
from meshxds.translators.istio.clusters import ClusterBuilder
from meshxds.translators.istio.context import BuildContext
from meshxds.translators.istio.gateways import build_gateways, selects
from meshxds.translators.istio.messages import INTERNAL_ERROR, UNCLASSIFIED
from meshxds.translators.istio.registry import ServiceRegistry
from meshxds.translators.istio.sidecar import build_sidecar
from meshxds.translators.upstream import EndpointIndex

__all__ = ["IstioConfig", "IstioTranslator"]


@dataclass(frozen=True, slots=True, kw_only=True)
class IstioConfig:
    config: ir.ProxyConfig
    gateways: tuple[str, ...]
    """``ns/name`` of the Istio Gateways that selected the proxy (empty: it is a sidecar)."""
    messages: tuple[AnalysisMessage, ...] = ()
    """Each once, in the order found."""

    @property
    def errors(self) -> tuple[AnalysisMessage, ...]:
        return tuple(m for m in self.messages if m.level is Level.ERROR)

    @property
    def warnings(self) -> tuple[AnalysisMessage, ...]:
        return tuple(m for m in self.messages if m.level is Level.WARNING)


def _unclassified(sentences: Iterable[str]) -> list[AnalysisMessage]:
    """The registry's and the cluster builder's sentences (the upstream layer, being rewritten to
    serve every frontend, reports no records yet), kept whole rather than parsed."""
    return [AnalysisMessage(type=UNCLASSIFIED, level=Level.WARNING, message=s) for s in sentences]


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
        build = BuildContext(
            proxy_namespace=identity.namespace,
            proxy_labels=identity.label_map,
            registry=self.registry,
            clusters=clusters,
            secrets=self._secrets,
            listener_address=self.listener_address,
        )
        if selected:
            build_gateways(build, selected, self.virtual_services)
        else:
            build_sidecar(build, self.virtual_services)
        config = ir.ProxyConfig(
            listeners=tuple(sorted(build.listeners, key=lambda lis: lis.name)),
            clusters=tuple(clusters.clusters[k] for k in sorted(clusters.clusters)),
            secrets=tuple(clusters.secrets[k] for k in sorted(clusters.secrets)),
            ca_secrets=tuple(clusters.ca_secrets[k] for k in sorted(clusters.ca_secrets)),
        )
        messages = [
            *_unclassified(self.registry.warnings),
            *_unclassified(clusters.warnings),
            *build.messages,
        ]
        return IstioConfig(
            config=config,
            gateways=tuple(f"{g.namespace}/{g.name}" for g in selected),
            messages=tuple(dict.fromkeys(messages)),
        )

    def check(self) -> tuple[AnalysisMessage, ...]:
        """The messages of every Istio Gateway (as its selected proxies see it) and of the
        sidecars of every namespace holding VirtualServices, each once, for ``meshxds validate``."""
        found: dict[AnalysisMessage, None] = dict.fromkeys(_unclassified(self.registry.warnings))
        identities = [ProxyIdentity.of(namespace=g.namespace, labels=g.spec.selector) for g in self.gateways]
        namespaces = sorted({vs.namespace for vs in self.virtual_services})
        identities += [ProxyIdentity.of(namespace=ns) for ns in namespaces]
        for identity in dict.fromkeys(identities):
            result = self.config_for(identity, sidecar=True)
            found.update(dict.fromkeys(result.messages))
            for problem in result.config.validate():
                # An IR invariant the build broke: a bug, but the rest is still served.
                message = f"{identity}: {problem}"
                found[AnalysisMessage(type=INTERNAL_ERROR, level=Level.WARNING, message=message)] = None
        return tuple(found)
