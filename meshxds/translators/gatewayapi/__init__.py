"""Gateway API → IR.

``translate_gateway_api`` runs in phases, as Envoy Gateway's translator does, one module each:
gateways.py accepts the GatewayClasses of our controller and their Gateways; listeners.py their
listeners (tls.py resolving certificates); routes.py compiles each route once, one module per
kind (httproutes.py, grpcroutes.py, tcproutes.py), and attach.py attaches it to the listeners
its parentRefs name and admit; proxyconfigs.py assembles one ``ProxyConfig`` per Gateway, with
routes ranked by precedence.py; status.py gives the status of every object read. The phases
share the run's state (context.py). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from meshxds import ir
from meshxds.conditions import ObjectStatus
from meshxds.model.manifests import ResourceSet
from meshxds.options import TranslateOptions
from meshxds.translators.backends import BackendIndex
from meshxds.translators.backendtls import policy_statuses
from meshxds.translators.gatewayapi.context import GatewayAPIMemo, Run, namespace_labels
from meshxds.translators.gatewayapi.gateways import process_gateway_classes, process_gateways
from meshxds.translators.gatewayapi.listeners import process_listeners
from meshxds.translators.gatewayapi.proxyconfigs import build_proxy_config
from meshxds.translators.gatewayapi.routes import process_routes
from meshxds.translators.gatewayapi.status import gateway_status
from meshxds.translators.kgateway import backend_configs, policy_target_warnings, traffic_policies
from meshxds.translators.upstream import EndpointIndex

__all__ = ["GatewayAPIMemo", "GatewayAPIResult", "translate_gateway_api"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayAPIResult:
    gateways: dict[tuple[str, str], ir.ProxyConfig]
    """``(namespace, name)`` of each Gateway we serve → its proxies' config."""
    statuses: tuple[ObjectStatus, ...]
    warnings: tuple[str, ...]
    memo: GatewayAPIMemo = field(default_factory=GatewayAPIMemo, compare=False, repr=False)


def translate_gateway_api(
    resources: ResourceSet,
    options: TranslateOptions | None = None,
    *,
    endpoint_index: EndpointIndex | None = None,
    previous: GatewayAPIResult | None = None,
    only: Collection[tuple[str, str]] | None = None,
) -> GatewayAPIResult:
    """Every Gateway of our class → its proxies' IR, plus the status of everything read.

    ``previous``: the last result, given only when no object routes compile from (Services,
    kgateway Backends, ReferenceGrants, endpoints) changed since; its compiled routes and
    unchanged Gateways' configs are reused. Their clusters may carry older endpoints: the
    snapshot builder takes endpoints from the current index.

    ``only``: translate just these Gateways and the routes attached to them (``meshxds
    translate`` prints one proxy's config: in a 10-Gateway mesh, a tenth of the routes). The
    statuses and warnings are then those of that part; such a result is never a ``previous``."""
    options = options or TranslateOptions()
    cluster_policies = backend_configs(resources)
    run = Run(
        resources=resources,
        options=options,
        backends=BackendIndex(
            resources=resources,
            cluster_domain=options.cluster_domain,
            endpoint_index=endpoint_index,
            cluster_policy=cluster_policies.policy,
        ),
        namespaces=namespace_labels(resources),
        previous=previous.memo if previous is not None else None,
        only=frozenset(only) if only is not None else None,
        traffic=traffic_policies(resources),
    )
    classes = process_gateway_classes(run)
    gateways = process_gateways(run, classes)
    process_listeners(run, gateways.values())
    process_routes(run)
    run.warnings.extend(cluster_policies.warnings)
    run.warnings.extend(policy_target_warnings(resources))
    run.warnings.extend(run.traffic.warnings)
    wanted = {key: gw for key, gw in gateways.items() if run.wanted(key)}
    configs = {key: build_proxy_config(run, gw) for key, gw in wanted.items()}
    run.statuses.extend(gateway_status(run, gw) for gw in wanted.values())
    assert run.backends.tls_policies is not None
    run.statuses.extend(
        policy_statuses(run.backends.tls_policies, configs, controller_name=run.options.controller_name)
    )
    run.warnings.extend(
        w for p in run.backends.tls_policies.policies for w in run.backends.tls_policies.applied(p).warnings
    )
    return GatewayAPIResult(
        gateways=configs,
        statuses=tuple(sorted(run.statuses, key=lambda s: (s.kind, s.namespace, s.name))),
        warnings=tuple(run.warnings),
        memo=run.memo,
    )
