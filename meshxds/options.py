"""How a translation is asked for, and how a proxy names the Gateway it serves: shared by the
CLI, ``serve``, the sources (the controller name in status) and the translators."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from meshxds import names

__all__ = [
    "CONTROLLER_NAME",
    "GATEWAY_NAME_LABEL",
    "MAX_GATEWAY_ADDRESSES",
    "TranslateOptions",
    "gateway_address_type",
    "gateway_for_proxy",
]

CONTROLLER_NAME = "meshxds.io/gateway-controller"
GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"
MAX_GATEWAY_ADDRESSES = 16
"""The CRD's ``maxItems`` of a Gateway's ``spec.addresses`` and ``status.addresses``."""

# The CRD's rule for a Hostname address (GatewayStatusAddress): the API server refuses others.
_HOSTNAME = re.compile(r"(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True, slots=True, kw_only=True)
class TranslateOptions:
    listener_address: str = "0.0.0.0"
    """Where listeners bind when the manifest does not say (tests and the demo use 127.0.0.1)."""
    controller_name: str = CONTROLLER_NAME
    cluster_domain: str = names.CLUSTER_DOMAIN
    gateway_addresses: tuple[str, ...] = ()
    """Where every Gateway's proxies are reachable (``serve --gateway-address``: a load balancer's
    IP or DNS name, say): their ``status.addresses`` when ``spec.addresses`` asks for none, and
    the only addresses ``spec.addresses`` may ask for."""


def gateway_address_type(value: str) -> str | None:
    """``IPAddress`` or ``Hostname``, as ``status.addresses`` would carry ``value``; ``None``
    when it is neither an IP address nor a hostname the Gateway CRD accepts."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        ok = len(value) <= 253 and _HOSTNAME.fullmatch(value) is not None
        return "Hostname" if ok else None
    return "IPAddress"


def gateway_for_proxy(namespace: str, labels: dict[str, str]) -> tuple[str, str] | None:
    """The Gateway a proxy serves: its namespace plus the ``gateway-name`` label."""
    name = labels.get(GATEWAY_NAME_LABEL)
    return (namespace, name) if name else None
