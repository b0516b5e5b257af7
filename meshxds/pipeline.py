"""Glue between the stages: objects → translation → per-identity snapshots.

A ``Translation`` is the pure result of one run of every translator over one consistent
``ResourceSet``. ``SnapshotBuilder`` turns it into the Envoy snapshot of any proxy identity;
the cache calls it at most once per identity per generation.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshxds import ir
from meshxds.errors import IRValidationError
from meshxds.identity import ProxyIdentity
from meshxds.model.manifests import ResourceSet
from meshxds.translators.gatewayapi import (
    GatewayAPIResult,
    TranslateOptions,
    gateway_for_proxy,
    translate_gateway_api,
)
from meshxds.translators.istio import IstioTranslator
from meshxds.translators.status import ObjectStatus
from meshxds.xds.cache import Snapshot
from meshxds.xds.resources import build_resources

__all__ = ["SnapshotBuilder", "Translation", "translate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Translation:
    resources: ResourceSet
    gateway_api: GatewayAPIResult
    istio: IstioTranslator
    istio_errors: tuple[str, ...] = ()
    istio_warnings: tuple[str, ...] = ()

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.resources.warnings + self.gateway_api.warnings + self.istio_warnings

    @property
    def errors(self) -> tuple[str, ...]:
        """Valid manifests asking for something meshxds cannot serve (e.g. ISTIO_MUTUAL)."""
        return self.istio_errors

    @property
    def statuses(self) -> tuple[ObjectStatus, ...]:
        return self.gateway_api.statuses

    def config_for(self, identity: ProxyIdentity) -> ir.ProxyConfig:
        """What a proxy of this identity serves: the Gateway API Gateway its labels name and the
        Istio Gateways whose selector its labels match; a proxy none selects is a sidecar."""
        selected: list[ir.ProxyConfig] = []
        key = gateway_for_proxy(identity.namespace, identity.label_map)
        if key is not None and key in self.gateway_api.gateways:
            selected.append(self.gateway_api.gateways[key])
        istio_config = self.istio.config_for(identity, sidecar=not selected)
        if istio_config.gateways or not selected:
            selected.append(istio_config.config)
        return ir.ProxyConfig.merge(selected)


def translate(resources: ResourceSet, options: TranslateOptions | None = None) -> Translation:
    """Run every translator over one consistent set of objects."""
    options = options or TranslateOptions()
    istio_translator = IstioTranslator(
        resources, listener_address=options.listener_address, cluster_domain=options.cluster_domain
    )
    errors, warnings = istio_translator.check() if istio_translator.has_config else ([], [])
    return Translation(
        resources=resources,
        gateway_api=translate_gateway_api(resources, options),
        istio=istio_translator,
        istio_errors=tuple(errors),
        istio_warnings=tuple(warnings),
    )


class SnapshotBuilder:
    """``ProxyIdentity → Snapshot`` for one translation, reusing the serialized resources of the
    previous snapshot of each identity so unchanged resources keep their objects and versions."""

    def __init__(self, translation: Translation, *, previous: SnapshotBuilder | None = None) -> None:
        self.translation = translation
        self._last: dict[ProxyIdentity, Snapshot] = dict(previous._last) if previous is not None else {}

    def __call__(self, identity: ProxyIdentity) -> Snapshot:
        config = self.translation.config_for(identity)
        problems = config.validate()
        if problems:
            raise IRValidationError(problems)
        snapshot = Snapshot.from_messages(build_resources(config), previous=self._last.get(identity))
        self._last[identity] = snapshot
        return snapshot
