"""Build each Envoy resource once per IR value: ``ir`` node → serialized ``CachedResource``.

IR nodes are frozen and hashable, so an unchanged cluster, listener, route table or secret is
found by value and its bytes (and version) are reused, whichever identity or generation asks.
A memo keeps what it built plus a read-through to the previous generation's memo, so memory
stays bounded by what the last two generations used: one entry per distinct value, whichever
identities asked (it holds no identity's IR beyond the node that first brought a value).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from google.protobuf.message import Message

from meshxds import ir
from meshxds.xds.cache import PUSH_ORDER, TYPE_CLUSTER, TYPE_ENDPOINT, CachedResource, Snapshot
from meshxds.xds.resources import ResourcePart, build_cluster_load_assignment, resource_parts

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

    def carried(self) -> ResourceMemo:
        """A memo for the next generation holding this one's entries (and what this one read
        through to) as its own: the endpoint fast path reuses every resource but a few load
        assignments without asking a memo, and the translation after it must still find them."""
        memo = ResourceMemo()
        memo._built = {**self._previous, **self._built}
        memo._by_id = {**self._previous_by_id, **self._by_id}
        return memo

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
        if found is not None:
            # An equal node of another identity (a sidecar's own copy of a mesh cluster): not
            # indexed by id, or every identity's IR would stay alive here, released or not.
            return found
        found = self._previous.get(by_value)
        if found is None:
            self.builds += 1
            found = CachedResource.from_message(name, build(node))
        self._built[by_value] = found
        self._by_id[by_id] = (node, found)
        return found

    def resource(self, part: ResourcePart) -> CachedResource:
        type_url, name, node, build = part
        return self._get(type_url, node, name, build, key=_KEYS.get(type_url))

    def load_assignment(self, cluster: ir.Cluster) -> CachedResource:
        return self.resource((TYPE_ENDPOINT, cluster.name, cluster, build_cluster_load_assignment))

    def snapshot(self, config: ir.ProxyConfig) -> Snapshot:
        """Every resource of one proxy group (``resource_parts``), memoized."""
        out: dict[str, dict[str, CachedResource]] = {t: {} for t in PUSH_ORDER}
        for part in resource_parts(config):
            _put(out[part[0]], self.resource(part))
        return Snapshot(resources=out)


def _put(by_name: dict[str, CachedResource], resource: CachedResource) -> None:
    if resource.name in by_name:
        raise ValueError(f"duplicate {resource.type_url} resource {resource.name!r}")
    by_name[resource.name] = resource


def _without_endpoints(cluster: ir.Cluster) -> ir.Cluster:
    return replace(cluster, endpoints=()) if cluster.endpoints else cluster


# What a resource's bytes depend on, where that is less than its IR node: an EDS cluster does
# not carry its endpoints, and a load assignment is its cluster's name and endpoints.
_KEYS: dict[str, Callable[[Any], Hashable]] = {
    TYPE_CLUSTER: lambda c: _without_endpoints(c) if c.discovery == "EDS" else c,
    TYPE_ENDPOINT: lambda c: (c.name, c.endpoints),
}
