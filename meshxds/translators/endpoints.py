"""The one place endpoints are computed: (Service, port) → ready endpoints, from EndpointSlices.

Every frontend (Gateway API, Istio, kgateway) asks this index, so a Service port has the same
endpoints whoever routes to it, and an endpoint-only change (EndpointSlices, Pods) can be served
by recomputing the load assignments of the clusters whose ``ir.EndpointKey`` names a touched
Service, without translating routes, listeners or clusters again.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshxds import ir
from meshxds.model import core
from meshxds.model.base import Resource
from meshxds.model.manifests import ResourceSet

__all__ = ["ENDPOINT_KINDS", "EndpointIndex", "LabelledEndpoint", "is_ip"]

ENDPOINT_KINDS: frozenset[type[Resource]] = frozenset({core.EndpointSlice, core.Pod})
"""Kinds that only ever change endpoints (addresses, readiness, the labels subsets select by)."""

ServiceKey = tuple[str, str]
"""``(namespace, name)`` of a Service."""


def is_ip(text: str) -> bool:
    """An IPv4 or IPv6 address (not a name); ``inet_pton`` first, as ``ipaddress`` is slow."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, text)
        except (OSError, ValueError):
            continue
        return True
    # Scoped IPv6 (``fe80::1%eth0``) is beyond inet_pton.
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelledEndpoint:
    """An endpoint with the labels of the Pod behind it (what Istio subsets select by)."""

    endpoint: ir.LbEndpoint
    labels: tuple[tuple[str, str], ...] = ()

    def has(self, selector: Mapping[str, str] | Iterable[tuple[str, str]]) -> bool:
        mine = dict(self.labels)
        pairs = selector.items() if isinstance(selector, Mapping) else selector
        return all(mine.get(k) == v for k, v in pairs)


class EndpointIndex:
    """EndpointSlices by Service, Pods by name; answers memoized per port and subset."""

    def __init__(self, resources: ResourceSet) -> None:
        slices: dict[ServiceKey, list[core.EndpointSlice]] = defaultdict(list)
        for eps in resources.all(core.EndpointSlice):
            if service := eps.service_name:
                slices[(eps.namespace, service)].append(eps)
        self._slices = dict(slices)
        self._pods = resources.objects.get(core.Pod, {})
        self._labelled: dict[tuple[ServiceKey, str, int | None], tuple[LabelledEndpoint, ...]] = {}
        # Keyed by the EndpointKey's fields as a plain tuple: it hashes and compares in C, where
        # the dataclass's __hash__ and __eq__ are Python (a lookup per cluster per proxy build).
        self._endpoints: dict[tuple[object, ...], tuple[ir.LbEndpoint, ...]] = {}
        # One LbEndpoint per (address, port): Services that select the same Pods share them.
        self._lb: dict[tuple[str, int], ir.LbEndpoint] = {}

    @classmethod
    def updated(
        cls, previous: EndpointIndex, resources: ResourceSet, changed: Iterable[Resource]
    ) -> EndpointIndex:
        """The index of ``resources``, made from ``previous`` (the index of the set before) and
        ``changed`` (old and new versions of what moved), in the time of the change, not of the
        10,000 EndpointSlices (the endpoint fast path). Answers are computed afresh, lazily."""
        index = cls.__new__(cls)
        slices = dict(previous._slices)
        for obj in changed:
            if not isinstance(obj, core.EndpointSlice) or not (service := obj.service_name):
                continue
            key = (obj.namespace, service)
            kept = [s for s in slices.get(key, ()) if s.key != obj.key]
            current = resources.get(core.EndpointSlice, obj.namespace, obj.name)
            if current is not None and current.service_name == service:
                kept.append(current)
            if kept:
                slices[key] = kept
            else:
                slices.pop(key, None)
        index._slices = slices
        index._pods = resources.objects.get(core.Pod, {})
        index._labelled = {}
        index._endpoints = {}
        index._lb = {}
        return index

    def labelled(
        self, namespace: str, service: str, port_name: str, target_port: int | None
    ) -> tuple[LabelledEndpoint, ...]:
        """Ready endpoints of a Service port with their Pods' labels, deduplicated and sorted."""
        memo_key = ((namespace, service), port_name, target_port)
        found = self._labelled.get(memo_key)
        if found is None:
            found = self._labelled[memo_key] = self._compute(namespace, service, port_name, target_port)
        return found

    @staticmethod
    def _target(eps: core.EndpointSlice, port_name: str, target_port: int | None) -> int | None:
        """The port a slice's endpoints listen on for this Service port; ``None``: not served here."""
        if eps.address_type == "FQDN":
            return None
        for p in eps.ports:
            if p.name == port_name and p.port:
                return p.port
        return target_port if not eps.ports else None

    def _compute(
        self, namespace: str, service: str, port_name: str, target_port: int | None
    ) -> tuple[LabelledEndpoint, ...]:
        # Plain tuples while collecting: they hash and sort in C, dataclasses in Python.
        found: set[tuple[str, int, tuple[tuple[str, str], ...]]] = set()
        for eps in self._slices.get((namespace, service), ()):
            target = self._target(eps, port_name, target_port)
            if target is None:
                continue
            for ep in eps.endpoints:
                if not ep.is_ready:
                    continue
                labels: tuple[tuple[str, str], ...] = ()
                ref = ep.target_ref
                if ref is not None and ref.kind == "Pod":
                    pod = self._pods.get((ref.namespace or namespace, ref.name))
                    labels = tuple(sorted(pod.metadata.labels.items())) if pod is not None else ()
                for address in ep.addresses:
                    if is_ip(address):
                        found.add((address, target, labels))
        return tuple(
            LabelledEndpoint(endpoint=self._lb_endpoint(address, port), labels=labels)
            for address, port, labels in sorted(found)
        )

    def _lb_endpoint(self, address: str, port: int) -> ir.LbEndpoint:
        found = self._lb.get((address, port))
        if found is None:
            found = self._lb[(address, port)] = ir.LbEndpoint(address=address, port=port)
        return found

    def _ready(
        self, namespace: str, service: str, port_name: str, target_port: int | None
    ) -> tuple[ir.LbEndpoint, ...]:
        """``_compute`` without Pod labels (no subset selects by them): each address once."""
        known = self._lb  # an address found there is an IP: no need to parse it again
        found: dict[tuple[str, int], ir.LbEndpoint] = {}
        for eps in self._slices.get((namespace, service), ()):
            target = self._target(eps, port_name, target_port)
            if target is None:
                continue
            for ep in eps.endpoints:
                if not ep.is_ready:
                    continue
                for address in ep.addresses:
                    pair = (address, target)
                    endpoint = known.get(pair)
                    if endpoint is None:
                        if not is_ip(address):
                            continue
                        endpoint = known[pair] = ir.LbEndpoint(address=address, port=target)
                    found[pair] = endpoint
        # Plain tuples sort in C, and as LbEndpoint orders (address, then port).
        return tuple([found[pair] for pair in sorted(found)])

    def endpoints(self, key: ir.EndpointKey) -> tuple[ir.LbEndpoint, ...]:
        """What a cluster of ``key`` balances over: sorted, each address once."""
        memo_key = (key.namespace, key.service, key.port_name, key.target_port, key.subset)
        found = self._endpoints.get(memo_key)
        if found is None:
            if key.subset:
                labelled = self.labelled(key.namespace, key.service, key.port_name, key.target_port)
                chosen = {e.endpoint for e in labelled if e.has(key.subset)}
                found = tuple(sorted(chosen, key=lambda e: (e.address, e.port)))  # LbEndpoint's own order
            else:
                found = self._ready(key.namespace, key.service, key.port_name, key.target_port)
            self._endpoints[memo_key] = found
        return found

    def touched_services(self, changed: Iterable[Resource], before: ResourceSet) -> set[ServiceKey]:
        """Services whose endpoints the changed EndpointSlices and Pods may move (old and new)."""
        touched: set[ServiceKey] = set()
        pods: set[tuple[str, str]] = set()
        for obj in changed:
            if isinstance(obj, core.EndpointSlice) and obj.service_name:
                touched.add((obj.namespace, obj.service_name))
            elif isinstance(obj, core.Pod):
                pods.add(obj.key)
        if pods:
            for index in (self, EndpointIndex(before)):
                for service, slices in index._slices.items():
                    if any(
                        ep.target_ref is not None
                        and ep.target_ref.kind == "Pod"
                        and (ep.target_ref.namespace or eps.namespace, ep.target_ref.name) in pods
                        for eps in slices
                        for ep in eps.endpoints
                    ):
                        touched.add(service)
        return touched
