"""The neutral model every translator produces and ``xds/resources.py`` consumes.

Frozen, slotted dataclasses with tuples, so an IR value is hashable, comparable and
deterministic. Nothing here knows Envoy protos or Kubernetes objects; every node carries the
``ObjectRef`` of the object it came from, and decisions keep their reason. This module
imports nothing of ours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

__all__ = [
    "AccessLog",
    "Cluster",
    "DirectResponse",
    "ForwardAction",
    "HeaderMatch",
    "HeaderMutation",
    "HttpListener",
    "LbEndpoint",
    "ObjectRef",
    "PathMatch",
    "ProxyConfig",
    "QueryParamMatch",
    "Redirect",
    "Route",
    "RouteMatch",
    "RouteTable",
    "StringMatch",
    "UpstreamProtocol",
    "UrlRewrite",
    "VirtualHost",
    "WeightedCluster",
]


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class ObjectRef:
    """The manifest object an IR node came from."""

    kind: str
    namespace: str
    name: str
    section: str = ""

    def __str__(self) -> str:
        base = f"{self.kind}/{self.namespace}/{self.name}" if self.namespace else f"{self.kind}/{self.name}"
        return f"{base}#{self.section}" if self.section else base


class UpstreamProtocol(StrEnum):
    """What Envoy speaks to a cluster's endpoints."""

    HTTP1 = "HTTP/1.1"
    HTTP2 = "HTTP/2"
    DOWNSTREAM = "downstream"
    """Whatever the client spoke (Istio's auto-detection / ``useClientProtocol``)."""
    TCP = "TCP"


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class LbEndpoint:
    address: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    name: str
    """``outbound|PORT|SUBSET|HOST``; also the EDS service name."""
    discovery: Literal["EDS", "STATIC", "STRICT_DNS"] = "EDS"
    upstream_protocol: UpstreamProtocol = UpstreamProtocol.HTTP1
    protocol_reason: str = ""
    """Why this protocol, e.g. ``Service/default/nginx spec.ports[0].appProtocol is 'http2'``."""
    endpoints: tuple[LbEndpoint, ...] = ()
    connect_timeout_s: float = 10.0
    source: ObjectRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StringMatch:
    kind: Literal["exact", "prefix", "suffix", "regex", "present"]
    value: str = ""
    ignore_case: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMatch:
    name: str
    """Lower-case; pseudo-headers such as ``:method`` included."""
    match: StringMatch
    invert: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryParamMatch:
    name: str
    match: StringMatch


@dataclass(frozen=True, slots=True, kw_only=True)
class PathMatch:
    kind: Literal["prefix", "path_separated_prefix", "exact", "regex"] = "prefix"
    value: str = "/"
    ignore_case: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteMatch:
    path: PathMatch = field(default_factory=PathMatch)
    headers: tuple[HeaderMatch, ...] = ()
    query_params: tuple[QueryParamMatch, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightedCluster:
    cluster: str
    weight: int


@dataclass(frozen=True, slots=True, kw_only=True)
class UrlRewrite:
    host: str | None = None
    full_path: str | None = None
    prefix: str | None = None
    """Replace the matched prefix with this (``ReplacePrefixMatch``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardAction:
    backends: tuple[WeightedCluster, ...]
    invalid_weight: int = 0
    """Weight of backends that could not be resolved: that share of requests gets 500."""
    timeout_s: float | None = None
    """``None``: Envoy's default; ``0``: no timeout."""
    rewrite: UrlRewrite | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectResponse:
    status: int
    body: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Redirect:
    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    full_path: str | None = None
    prefix: str | None = None
    status_code: int = 302


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMutation:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    name: str
    """A path-like id, e.g. ``httproute/default/nginx/rule/0/match/0``."""
    match: RouteMatch
    action: ForwardAction | DirectResponse | Redirect
    request_headers: HeaderMutation = field(default_factory=HeaderMutation)
    response_headers: HeaderMutation = field(default_factory=HeaderMutation)
    source: ObjectRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteTable:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessLog:
    """A file access log on an HTTP listener (kgateway ``HTTPListenerPolicy.accessLog.fileSink``)."""

    path: str
    text_format: str | None = None
    """Envoy command operators in a line, e.g. ``%PROTOCOL% %UPSTREAM_PROTOCOL%``."""
    json_format: tuple[tuple[str, str], ...] | None = None
    """Key → command operator string; ``None`` with ``text_format`` ``None``: Envoy's default line."""
    source: ObjectRef | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpListener:
    name: str
    address: str
    port: int
    route_table: RouteTable
    stat_prefix: str
    access_logs: tuple[AccessLog, ...] = ()
    sources: tuple[ObjectRef, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """Everything one proxy group receives."""

    listeners: tuple[HttpListener, ...] = ()
    clusters: tuple[Cluster, ...] = ()

    def validate(self) -> list[str]:
        """Every broken invariant (empty when fine): unique names, routes point at known clusters."""
        problems: list[str] = []
        cluster_names = [c.name for c in self.clusters]
        if len(set(cluster_names)) != len(cluster_names):
            problems.append("cluster names are not unique")
        listener_names = [lis.name for lis in self.listeners]
        if len(set(listener_names)) != len(listener_names):
            problems.append("listener names are not unique")
        addresses = [(lis.address, lis.port) for lis in self.listeners]
        if len(set(addresses)) != len(addresses):
            problems.append("two listeners bind the same address and port")
        known = set(cluster_names)
        for listener in self.listeners:
            for vhost in listener.route_table.virtual_hosts:
                for route in vhost.routes:
                    if isinstance(route.action, ForwardAction):
                        problems.extend(
                            f"route {route.name} points at unknown cluster {b.cluster}"
                            for b in route.action.backends
                            if b.cluster not in known
                        )
        return problems

    @staticmethod
    def merge(configs: list[ProxyConfig]) -> ProxyConfig:
        """Union of several groups' config (a proxy selected by more than one gateway)."""
        if len(configs) == 1:
            return configs[0]
        clusters: dict[str, Cluster] = {}
        listeners: dict[str, HttpListener] = {}
        for config in configs:
            for cluster in config.clusters:
                clusters.setdefault(cluster.name, cluster)
            for listener in config.listeners:
                listeners.setdefault(listener.name, listener)
        return ProxyConfig(
            listeners=tuple(listeners[k] for k in sorted(listeners)),
            clusters=tuple(clusters[k] for k in sorted(clusters)),
        )
