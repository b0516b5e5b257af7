"""How a translation is asked for, and how a proxy names the Gateway it serves: shared by the
CLI, ``serve``, the sources (the controller name in status) and the translators."""

from __future__ import annotations

from dataclasses import dataclass

from meshxds import names

__all__ = ["CONTROLLER_NAME", "GATEWAY_NAME_LABEL", "TranslateOptions", "gateway_for_proxy"]

CONTROLLER_NAME = "meshxds.io/gateway-controller"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


@dataclass(frozen=True, slots=True, kw_only=True)
class TranslateOptions:
    listener_address: str = "0.0.0.0"
    """Where listeners bind when the manifest does not say (tests and the demo use 127.0.0.1)."""
    controller_name: str = CONTROLLER_NAME
    cluster_domain: str = names.CLUSTER_DOMAIN


def gateway_for_proxy(namespace: str, labels: dict[str, str]) -> tuple[str, str] | None:
    """The Gateway a proxy serves: its namespace plus the ``gateway-name`` label."""
    name = labels.get(GATEWAY_NAME_LABEL)
    return (namespace, name) if name else None
