"""Build each Envoy resource once per IR value: ``ir`` node → serialized ``CachedResource``.

IR nodes are frozen and hashable, so an unchanged cluster, listener, route table or secret is
found by value and its bytes (and version) are reused, whichever identity or generation asks.
A memo keeps what it built plus a read-through to the previous generation's memo, so memory
stays bounded by what the last two generations used.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from typing import TypeVar

from google.protobuf.message import Message

from meshxds import ir
from meshxds.xds.cache import (
    TYPE_CLUSTER,
    TYPE_ENDPOINT,
    TYPE_LISTENER,
    TYPE_ROUTE,
    TYPE_SECRET,
    CachedResource,
    Snapshot,
)
from meshxds.xds.resources import (
    build_ca_secret,
    build_cluster,
    build_cluster_load_assignment,
    build_listener,
    build_route_configuration,
    build_secret,
)

__all__ = ["ResourceMemo"]

N = TypeVar("N", bound=Hashable)


class ResourceMemo:
    """``(type, IR value) → CachedResource`` for one generation, reading through to the last."""

    def __init__(self, previous: ResourceMemo | None = None) -> None:
        self._built: dict[tuple[str, Hashable], CachedResource] = {}
        # The same entries by the identity of the IR object asked for: reused IR (an unchanged
        # Gateway's config) is found without hashing a thousand-route tree again.
        self._by_id: dict[tuple[str, int], tuple[object, CachedResource]] = {}
        # Only the previous generation's own entries: no chain of memos is kept alive.
        self._previous: Mapping[tuple[str, Hashable], CachedResource] = (
            previous._built if previous is not None else {}
        )
        self._previous_by_id: Mapping[tuple[str, int], tuple[object, CachedResource]] = (
            previous._by_id if previous is not None else {}
        )
        self.builds = 0
        """Resources serialized by this memo (the rest were found): for tests and benchmarks."""

    def _get(
        self,
        type_url: str,
        node: N,
        name: str,
        build: Callable[[N], Message],
        *,
        key: Callable[[N], Hashable] | None = None,
    ) -> CachedResource:
        """``key(node)`` (default: ``node``) is what the bytes depend on, when less than ``node``."""
        by_id = (type_url, id(node))
        for table in (self._by_id, self._previous_by_id):
            hit = table.get(by_id)
            if hit is not None and hit[0] is node:
                self._by_id[by_id] = hit
                return hit[1]
        by_value = (type_url, node if key is None else key(node))
        found = self._built.get(by_value)
        if found is None:
            found = self._previous.get(by_value)
            if found is None:
                self.builds += 1
                found = CachedResource.from_message(name, build(node))
            self._built[by_value] = found
        self._by_id[by_id] = (node, found)
        return found

    def cluster(self, cluster: ir.Cluster) -> CachedResource:
        # The cluster resource does not carry endpoints: EDS clusters built for other
        # endpoints are the same bytes, so endpoints are left out of the key.
        key = _without_endpoints if cluster.discovery == "EDS" else None
        return self._get(TYPE_CLUSTER, cluster, cluster.name, build_cluster, key=key)

    def load_assignment(self, cluster: ir.Cluster) -> CachedResource:
        return self._get(
            TYPE_ENDPOINT,
            cluster,
            cluster.name,
            build_cluster_load_assignment,
            key=lambda c: (c.name, c.endpoints),
        )

    def listener(self, listener: ir.Listener) -> CachedResource:
        return self._get(TYPE_LISTENER, listener, listener.name, build_listener)

    def route_table(self, table: ir.RouteTable) -> CachedResource:
        return self._get(TYPE_ROUTE, table, table.name, build_route_configuration)

    def secret(self, secret: ir.TlsSecret) -> CachedResource:
        return self._get(TYPE_SECRET, secret, secret.name, build_secret)

    def ca_secret(self, secret: ir.CaSecret) -> CachedResource:
        return self._get(TYPE_SECRET, secret, secret.name, build_ca_secret)

    def snapshot(self, config: ir.ProxyConfig) -> Snapshot:
        """Every resource of one proxy group (what ``build_resources`` makes), memoized."""
        return Snapshot(resources=self.resources(config))

    def resources(self, config: ir.ProxyConfig) -> dict[str, dict[str, CachedResource]]:
        out: dict[str, dict[str, CachedResource]] = {
            TYPE_CLUSTER: {},
            TYPE_ENDPOINT: {},
            TYPE_LISTENER: {},
            TYPE_ROUTE: {},
            TYPE_SECRET: {},
        }
        for cluster in config.clusters:
            _put(out[TYPE_CLUSTER], self.cluster(cluster))
            if cluster.discovery == "EDS":
                _put(out[TYPE_ENDPOINT], self.load_assignment(cluster))
        for listener in config.listeners:
            _put(out[TYPE_LISTENER], self.listener(listener))
            for table in listener.route_tables:
                _put(out[TYPE_ROUTE], self.route_table(table))
        for secret in config.secrets:
            _put(out[TYPE_SECRET], self.secret(secret))
        for ca in config.ca_secrets:
            _put(out[TYPE_SECRET], self.ca_secret(ca))
        return out


def _put(by_name: dict[str, CachedResource], resource: CachedResource) -> None:
    if resource.name in by_name:
        raise ValueError(f"duplicate {resource.type_url} resource {resource.name!r}")
    by_name[resource.name] = resource


def _without_endpoints(cluster: ir.Cluster) -> ir.Cluster:
    return replace(cluster, endpoints=()) if cluster.endpoints else cluster
