"""Envoy resource names: the one place they are spelled (design.md, "Contracts").

Istio users know these names from ``istioctl proxy-config``; keeping them lets their
dashboards and habits carry over.
"""

from __future__ import annotations

__all__ = [
    "VARIANT_SEPARATOR",
    "cluster_name",
    "https_route_config_name",
    "listener_name",
    "parse_cluster_name",
    "route_config_name",
    "sds_secret_name",
    "service_fqdn",
    "virtual_host_name",
]

CLUSTER_DOMAIN = "cluster.local"


def service_fqdn(name: str, namespace: str, *, domain: str = CLUSTER_DOMAIN) -> str:
    """``nginx`` in ``default`` → ``nginx.default.svc.cluster.local``."""
    return f"{name}.{namespace}.svc.{domain}"


def listener_name(port: int, *, bind: str = "0.0.0.0") -> str:
    """``0.0.0.0_8080``: the address Envoy binds, then the port."""
    return f"{bind}_{port}"


def route_config_name(port: int) -> str:
    """``http.8080``: one route table per HTTP port."""
    return f"http.{port}"


VARIANT_SEPARATOR = "~"
"""Joins a protocol variant to the SUBSET part. Istio subset names are DNS-1123 labels
(``[a-z0-9-]``), so a name holding ``~`` is never a real subset's; a clash would still be
reported (``ir.ProxyConfig.merge``), never served silently."""


def cluster_name(
    host: str, port: int, *, subset: str = "", variant: str = "", direction: str = "outbound"
) -> str:
    """``outbound|8080||nginx.default.svc.cluster.local`` (``direction|PORT|SUBSET|HOST``).

    ``variant``: a protocol other than the port's own, e.g. the HTTP/2 cluster a GRPCRoute needs
    for an HTTP/1.1 port, ``outbound|8080|~http2|nginx.default.svc.cluster.local`` (after a subset:
    ``outbound|8080|v1~http2|...``). The port's own protocol keeps the plain name.
    """
    if variant:
        subset = f"{subset}{VARIANT_SEPARATOR}{variant}"
    return f"{direction}|{port}|{subset}|{host}"


def parse_cluster_name(name: str) -> tuple[str, int, str, str]:
    """Inverse of :func:`cluster_name`: ``(direction, port, subset, host)``."""
    direction, port, subset, host = name.split("|", 3)
    return direction, int(port), subset, host


def virtual_host_name(hostname: str, port: int) -> str:
    """``http2.example.com:8080``; a catch-all host is ``*:8080``."""
    return f"{hostname}:{port}"


def https_route_config_name(port: int, chain: str) -> str:
    """``https.443.a.example.com``: one route table per TLS filter chain of a port."""
    return f"https.{port}.{chain}"


def sds_secret_name(namespace: str, name: str) -> str:
    """``kubernetes://gateway-system/example-cert``: the SDS name of a Kubernetes Secret."""
    return f"kubernetes://{namespace}/{name}"
