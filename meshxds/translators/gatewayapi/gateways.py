"""The first phases: the GatewayClasses our controller handles, and the Gateways of those classes."""

from __future__ import annotations

from meshxds.model import gatewayapi
from meshxds.translators.gatewayapi.context import Run
from meshxds.translators.gatewayapi.status import gateway_class_status

__all__ = ["process_gateway_classes", "process_gateways"]


def process_gateway_classes(run: Run) -> set[str]:
    ours: set[str] = set()
    for gc in run.resources.all(gatewayapi.GatewayClass):
        if gc.spec.controller_name != run.options.controller_name:
            continue
        ours.add(gc.name)
        run.statuses.append(gateway_class_status(gc))
    return ours


def process_gateways(run: Run, classes: set[str]) -> dict[tuple[str, str], gatewayapi.Gateway]:
    """The Gateways of our classes, by ``(namespace, name)``."""
    return {g.key: g for g in run.resources.all(gatewayapi.Gateway) if g.spec.gateway_class_name in classes}
