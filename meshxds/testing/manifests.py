"""Manifest builders for tests, demos and benchmarks: the objects most cases start from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = ["CONTROLLER_NAME", "gateway_api_docs", "gateway_listener", "to_yaml"]

CONTROLLER_NAME = "meshxds.io/gateway-controller"


def gateway_listener(
    port: int,
    *,
    name: str = "http",
    protocol: str = "HTTP",
    hostname: str | None = None,
    allowed_from: str = "All",
    **extra: Any,
) -> dict[str, Any]:
    """A Gateway listener; ``extra`` adds fields such as ``tls``."""
    listener: dict[str, Any] = {"name": name, "port": port, "protocol": protocol}
    if hostname:
        listener["hostname"] = hostname
    listener["allowedRoutes"] = {"namespaces": {"from": allowed_from}}
    listener.update(extra)
    return listener


def gateway_api_docs(
    listeners: Iterable[Mapping[str, Any]], *, name: str = "http", namespace: str = "gateway-system"
) -> list[dict[str, Any]]:
    """The GatewayClass meshxds serves and one Gateway with ``listeners``."""
    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "meshxds"},
            "spec": {"controllerName": CONTROLLER_NAME},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"gatewayClassName": "meshxds", "listeners": [dict(x) for x in listeners]},
        },
    ]


def to_yaml(docs: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML file, in the order given (``---`` separated, a trailing one too)."""
    return "".join(yaml.safe_dump(dict(d), sort_keys=False) + "---\n" for d in docs)
