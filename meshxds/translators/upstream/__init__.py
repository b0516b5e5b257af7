"""The upstream layer every frontend (Gateway API, Istio, kgateway) builds its clusters with.

- ``endpoints``: the one endpoint index, (Service or ServiceEntry port) → ready endpoints.
- ``ports``: a Service port's protocol decision and endpoint key; subsets of its endpoints.
- ``clusters``: the upstream protocol decision with its reason, the discovery type, and the one
  constructor of ``ir.Cluster``, fed each frontend's own policy.

Frontends decide what to connect to (backendRefs, VirtualService destinations) and which policy
applies (DestinationRules); what a cluster is, is decided here, once.
"""

from __future__ import annotations

from meshxds.translators.upstream.clusters import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_H2_IDLE_TIMEOUT_S,
    DEFAULT_H2_KEEPALIVE,
    ClusterPolicy,
    Discovery,
    alpn_for,
    build_cluster,
    decide_discovery,
    decide_upstream_protocol,
)
from meshxds.translators.upstream.endpoints import (
    ENDPOINT_KINDS,
    ENTRY,
    EndpointIndex,
    LabelledEndpoint,
    is_ip,
)
from meshxds.translators.upstream.ports import UpstreamPort, service_port

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_H2_IDLE_TIMEOUT_S",
    "DEFAULT_H2_KEEPALIVE",
    "ENDPOINT_KINDS",
    "ENTRY",
    "ClusterPolicy",
    "Discovery",
    "EndpointIndex",
    "LabelledEndpoint",
    "UpstreamPort",
    "alpn_for",
    "build_cluster",
    "decide_discovery",
    "decide_upstream_protocol",
    "is_ip",
    "service_port",
]
