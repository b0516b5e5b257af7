"""What the phases of one Gateway API translation share: the run's indexes and options, one
context per listener (Envoy Gateway's ``contexts.go``) that phases fill in, and the memo one run
hands the next."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from meshxds import ir
from meshxds.conditions import Condition, ObjectStatus
from meshxds.model import core, gatewayapi
from meshxds.model.manifests import ResourceSet
from meshxds.options import TranslateOptions
from meshxds.translators.backends import BackendIndex
from meshxds.translators.gatewayapi.httproutes import CompiledRoute
from meshxds.translators.gatewayapi.precedence import SortableRoute
from meshxds.translators.kgateway import TrafficPolicies

__all__ = ["AnyRoute", "GatewayAPIMemo", "ListenerContext", "Run", "namespace_labels"]

AnyRoute = gatewayapi.HTTPRoute | gatewayapi.GRPCRoute | gatewayapi.TLSRoute | gatewayapi.TCPRoute


@dataclass(slots=True)
class GatewayAPIMemo:
    """What one run hands the next when none of the objects routes compile from changed
    (Envoy Gateway re-translates only what changed): each route's compiled result, by object
    identity, and each Gateway's config with the inputs it was assembled from."""

    compiled: dict[int, tuple[object, CompiledRoute]] = field(default_factory=dict)
    configs: dict[tuple[str, str], tuple[tuple[object, ...], ir.ProxyConfig, tuple[str, ...]]] = field(
        default_factory=dict
    )


@dataclass(slots=True)
class ListenerContext:
    gateway: gatewayapi.Gateway
    spec: gatewayapi.GatewayListener
    kinds: tuple[str, ...]
    conditions: list[Condition] = field(default_factory=list)
    attached: int = 0
    routes: list[tuple[tuple[str, ...], SortableRoute]] = field(default_factory=list)
    tcp_routes: list[tuple[tuple[str, ...], tuple[ir.WeightedCluster, ...]]] = field(default_factory=list)
    tls: ir.DownstreamTls | None = None

    @property
    def valid(self) -> bool:
        return all(c.status for c in self.conditions if c.type in ("Accepted", "ResolvedRefs"))


@dataclass(slots=True)
class Run:
    """State of one translation run: indexes in, contexts and warnings out."""

    resources: ResourceSet
    options: TranslateOptions
    backends: BackendIndex
    namespaces: dict[str, dict[str, str]]
    listeners: dict[tuple[str, str], list[ListenerContext]] = field(default_factory=dict)
    statuses: list[ObjectStatus] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    clusters: dict[tuple[str, str], dict[str, ir.Cluster]] = field(default_factory=lambda: defaultdict(dict))
    secrets: dict[tuple[str, str], dict[str, ir.TlsSecret]] = field(default_factory=lambda: defaultdict(dict))
    ca_secrets: dict[tuple[str, str], dict[str, ir.CaSecret]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    """Per Gateway: the CA bundles its ``spec.tls.frontend`` validates client certificates with."""
    insecure_frontend: set[tuple[str, str]] = field(default_factory=set)
    """Gateways with an ``AllowInsecureFallback`` validation (a Gateway condition says so)."""
    previous: GatewayAPIMemo | None = None
    """The last run's memo, when what routes compile from is unchanged since."""
    memo: GatewayAPIMemo = field(default_factory=GatewayAPIMemo)
    only: frozenset[tuple[str, str]] | None = None
    """Translate only these Gateways (and the routes attached to them); ``None``: all."""
    traffic: TrafficPolicies = field(default_factory=TrafficPolicies)
    """kgateway TrafficPolicies by target: route compilers and ``attach`` ask them."""
    defaulted: dict[tuple[int, int], SortableRoute] = field(default_factory=dict)
    """Routes with a listener's TrafficPolicy defaults (``with_listener_defaults``' cache)."""

    def wanted(self, gateway: tuple[str, str]) -> bool:
        return self.only is None or gateway in self.only


def namespace_labels(resources: ResourceSet) -> dict[str, dict[str, str]]:
    labels = {
        ns.name: {"kubernetes.io/metadata.name": ns.name, **ns.metadata.labels}
        for ns in resources.all(core.Namespace)
    }
    return labels
