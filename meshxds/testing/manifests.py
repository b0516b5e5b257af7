"""Manifest builders for tests, demos and benchmarks: the objects most cases start from."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

__all__ = [
    "CONTROLLER_NAME",
    "gateway_api_docs",
    "gateway_listener",
    "routed_service_docs",
    "service_docs",
    "to_yaml",
]

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


def service_docs(
    name: str,
    *,
    upstream_port: int,
    namespace: str = "default",
    port: int = 8080,
    port_name: str | None = None,
    app_protocol: str | None = None,
    target_port: int | None = None,
) -> list[dict[str, Any]]:
    """A Service with one port (``port``) and its EndpointSlice: one ready endpoint at
    ``127.0.0.1:upstream_port``. The slice's port carries the Service port's name, as the
    EndpointSlice controller writes it."""
    service_port: dict[str, Any] = {"port": port}
    slice_port: dict[str, Any] = {"port": upstream_port}
    if port_name:
        service_port["name"] = slice_port["name"] = port_name
    if target_port is not None:
        service_port["targetPort"] = target_port
    if app_protocol:
        service_port["appProtocol"] = app_protocol
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [service_port]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-1",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [slice_port],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
    ]


def routed_service_docs(
    name: str,
    *,
    upstream_port: int,
    hostnames: Iterable[str],
    namespace: str = "default",
    port: int = 8080,
    port_name: str | None = None,
    app_protocol: str | None = None,
    gateway: tuple[str, str] = ("gateway-system", "http"),
) -> list[dict[str, Any]]:
    """The kgateway guide's three objects: a Service port (``port``, target 80), an EndpointSlice
    at ``127.0.0.1:upstream_port``, and an HTTPRoute for ``hostnames`` on ``gateway`` (ns, name)."""
    return [
        *service_docs(
            name,
            upstream_port=upstream_port,
            namespace=namespace,
            port=port,
            port_name=port_name,
            app_protocol=app_protocol,
            target_port=80,
        ),
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "parentRefs": [{"name": gateway[1], "namespace": gateway[0]}],
                "hostnames": list(hostnames),
                "rules": [{"backendRefs": [{"name": name, "port": port}]}],
            },
        },
    ]


def to_yaml(docs: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML text, in the order given, ``---`` between documents."""
    return "---\n".join(yaml.safe_dump(dict(d), sort_keys=False) for d in docs)
