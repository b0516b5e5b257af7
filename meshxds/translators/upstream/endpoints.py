"""The one place endpoints are computed: (Service, port) → ready endpoints, from EndpointSlices;
(ServiceEntry, port) → its inline endpoints and the WorkloadEntries it selects.

Every frontend (Gateway API, Istio, kgateway) asks this index, so a Service port has the same
endpoints whoever routes to it, and an endpoint-only change (EndpointSlices, Pods, and
WorkloadEntries of STATIC ServiceEntries) can be served by recomputing the load assignments of
the clusters whose ``ir.EndpointKey`` names a touched Service, without translating routes,
listeners or clusters again.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from meshxds import ir
from meshxds.model import core, istio
from meshxds.model.base import Resource
from meshxds.model.manifests import ResourceSet
from meshxds.translators.labels import labels_match

__all__ = ["ENDPOINT_KINDS", "ENTRY", "EndpointIndex", "LabelledEndpoint", "is_ip"]

ENDPOINT_KINDS: frozenset[type[Resource]] = frozenset({core.EndpointSlice, core.Pod, istio.WorkloadEntry})
"""Kinds that change endpoints (addresses, readiness, the labels subsets select by): only, for
EndpointSlices and Pods; a WorkloadEntry also may turn a ServiceEntry's cluster from EDS into
DNS (``EndpointIndex.refuses_fast_path`` says when)."""

ENTRY = "ServiceEntry"
"""``ir.EndpointKey.entry`` of a ServiceEntry's ports."""

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
        return labels_match(dict(self.labels), selector)


class EndpointIndex:
    """EndpointSlices by Service, Pods by name; answers memoized per port and subset."""

    def __init__(self, resources: ResourceSet) -> None:
        slices: dict[ServiceKey, list[core.EndpointSlice]] = defaultdict(list)
        for eps in resources.all(core.EndpointSlice):
            if service := eps.service_name:
                slices[(eps.namespace, service)].append(eps)
        self._slices = dict(slices)
        self._pods = resources.objects.get(core.Pod, {})
        self._entries = resources.objects.get(istio.ServiceEntry, {})
        self._workloads = _workloads_by_namespace(resources.all(istio.WorkloadEntry))
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
        index._entries = resources.objects.get(istio.ServiceEntry, {})
        workloads = dict(previous._workloads)
        for namespace in {o.namespace for o in changed if isinstance(o, istio.WorkloadEntry)}:
            workloads.pop(namespace, None)
            workloads.update(
                _workloads_by_namespace(
                    w
                    for w in resources.objects.get(istio.WorkloadEntry, {}).values()
                    if isinstance(w, istio.WorkloadEntry) and w.namespace == namespace
                )
            )
        index._workloads = workloads
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

    def _ready_endpoints(
        self, namespace: str, service: str, port_name: str, target_port: int | None
    ) -> Iterator[tuple[core.Endpoint, int]]:
        """The ready endpoints of a Service port's slices, each with the port it listens on."""
        for eps in self._slices.get((namespace, service), ()):
            target = self._target(eps, port_name, target_port)
            if target is not None:
                for ep in eps.endpoints:
                    if ep.is_ready:
                        yield ep, target

    def _compute(
        self, namespace: str, service: str, port_name: str, target_port: int | None
    ) -> tuple[LabelledEndpoint, ...]:
        # Plain tuples while collecting: they hash and sort in C, dataclasses in Python.
        found: set[tuple[str, int, tuple[tuple[str, str], ...]]] = set()
        for ep, target in self._ready_endpoints(namespace, service, port_name, target_port):
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
        for ep, target in self._ready_endpoints(namespace, service, port_name, target_port):
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

    def entry_endpoints(self, namespace: str, name: str, port_name: str) -> tuple[LabelledEndpoint, ...]:
        """A ServiceEntry port's endpoints, in order: its inline ``endpoints``, then the
        WorkloadEntries of its namespace its ``workloadSelector`` selects (Istio's rules); a
        workload with no address (on another network) has no endpoint reachable from here."""
        memo_key = ((namespace, name), f"{ENTRY}/{port_name}", None)
        found = self._labelled.get(memo_key)
        if found is None:
            found = self._labelled[memo_key] = self._entry_endpoints(namespace, name, port_name)
        return found

    def _entry_endpoints(self, namespace: str, name: str, port_name: str) -> tuple[LabelledEndpoint, ...]:
        entry = self._entries.get((namespace, name))
        if not isinstance(entry, istio.ServiceEntry):
            return ()
        port = next((p for p in entry.spec.ports if p.name == port_name), None)
        if port is None:
            return ()
        spec = entry.spec
        workloads = list(spec.endpoints)
        if spec.workload_selector is not None:
            selector = spec.workload_selector.labels
            workloads += [
                w.spec for w in self._workloads.get(namespace, ()) if labels_match(w.spec.labels, selector)
            ]
        found = []
        for workload in workloads:
            if not workload.address:
                continue
            target = workload.ports.get(port.name) or port.target_port or port.number
            found.append(
                LabelledEndpoint(
                    endpoint=self._lb_endpoint(workload.address, target),
                    labels=tuple(sorted(workload.labels.items())),
                )
            )
        return tuple(found)

    def endpoints(self, key: ir.EndpointKey) -> tuple[ir.LbEndpoint, ...]:
        """What a cluster of ``key`` balances over: sorted, each address once."""
        memo_key = (key.namespace, key.service, key.port_name, key.target_port, key.subset, key.entry)
        found = self._endpoints.get(memo_key)
        if found is None:
            if key.entry:
                labelled = self.entry_endpoints(key.namespace, key.service, key.port_name)
                chosen = {e.endpoint for e in labelled if e.has(key.subset)}
                found = tuple(sorted(chosen, key=lambda e: (e.address, e.port)))
            elif key.subset:
                labelled = self.labelled(key.namespace, key.service, key.port_name, key.target_port)
                chosen = {e.endpoint for e in labelled if e.has(key.subset)}
                found = tuple(sorted(chosen, key=lambda e: (e.address, e.port)))  # LbEndpoint's own order
            else:
                found = self._ready(key.namespace, key.service, key.port_name, key.target_port)
            self._endpoints[memo_key] = found
        return found

    def selecting(self, workload: istio.WorkloadEntry) -> list[istio.ServiceEntry]:
        """The ServiceEntries of the workload's namespace whose ``workloadSelector`` selects it."""
        found: list[istio.ServiceEntry] = []
        for entry in self._entries.values():
            if not isinstance(entry, istio.ServiceEntry) or entry.namespace != workload.namespace:
                continue
            selector = entry.spec.workload_selector
            if selector is None:
                continue
            if labels_match(workload.spec.labels, selector.labels):
                found.append(entry)
        return found

    def refuses_fast_path(self, changed: Iterable[Resource], before: EndpointIndex) -> str | None:
        """Why the changed WorkloadEntries need a full translation, or ``None``: every
        ServiceEntry they move (before or after the change) is STATIC with IP addresses only,
        so its clusters are EDS before and after and only their load assignments move (a
        hostname address, or a DNS resolution, makes the cluster STRICT_DNS, whose endpoints
        are part of the cluster itself)."""
        for obj in changed:
            if not isinstance(obj, istio.WorkloadEntry):
                continue
            for index in (before, self):
                for entry in index.selecting(obj):
                    resolution = entry.spec.resolution or "NONE"
                    if resolution == "NONE":
                        continue  # not served at all
                    if resolution != "STATIC":
                        return f"{entry.ref} resolves by {resolution}"
                    for port in entry.spec.ports:
                        for e in (*before.entry_endpoints(entry.namespace, entry.name, port.name),
                                  *self.entry_endpoints(entry.namespace, entry.name, port.name)):  # fmt: skip
                            if not is_ip(e.endpoint.address):
                                return f"{entry.ref} has an endpoint that is not an IP address"
        return None

    def touched_services(
        self, changed: Iterable[Resource], before: ResourceSet, previous: EndpointIndex | None = None
    ) -> set[ServiceKey]:
        """Services (and ServiceEntries) whose endpoints the changed EndpointSlices, Pods and
        WorkloadEntries may move (old and new)."""
        touched: set[ServiceKey] = set()
        pods: set[tuple[str, str]] = set()
        for obj in changed:
            if isinstance(obj, core.EndpointSlice) and obj.service_name:
                touched.add((obj.namespace, obj.service_name))
            elif isinstance(obj, core.Pod):
                pods.add(obj.key)
            elif isinstance(obj, istio.WorkloadEntry):
                previous = previous or EndpointIndex(before)  # ``before``'s index, if not given
                for index in (self, previous):
                    touched.update(e.key for e in index.selecting(obj))
        if pods:
            for index in (self, previous or EndpointIndex(before)):
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


def _workloads_by_namespace(
    workloads: Iterable[istio.WorkloadEntry],
) -> dict[str, tuple[istio.WorkloadEntry, ...]]:
    by_namespace: dict[str, list[istio.WorkloadEntry]] = defaultdict(list)
    for workload in sorted(workloads, key=lambda w: w.key):
        by_namespace[workload.namespace].append(workload)
    return {namespace: tuple(found) for namespace, found in by_namespace.items()}
