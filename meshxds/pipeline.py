"""Glue between the stages: objects → translation → per-identity snapshots.

A ``Translation`` is the pure result of one run of every translator over one consistent
``ResourceSet``. ``SnapshotBuilder`` turns it into the Envoy snapshot of any proxy identity;
the cache calls it at most once per identity per generation. ``Pipeline`` decides, per new
``ResourceSet``, how little work it needs: nothing when no object changed; the endpoint fast
path when only EndpointSlices or Pods changed (Istio's EDS-only push: the affected
ClusterLoadAssignments are rebuilt, no route, listener or cluster is translated); otherwise a
translation whose unchanged resources keep their bytes and versions (``ResourceMemo``).
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace

from meshxds import ir
from meshxds.conditions import AnalysisMessage, Level, ObjectStatus
from meshxds.errors import IRValidationError
from meshxds.identity import ProxyIdentity
from meshxds.model import core, gatewayapi, kgateway
from meshxds.model.base import Resource
from meshxds.model.manifests import ResourceSet
from meshxds.options import TranslateOptions, gateway_for_proxy
from meshxds.translators.gatewayapi import GatewayAPIResult, translate_gateway_api
from meshxds.translators.istio import IstioTranslator
from meshxds.translators.upstream import ENDPOINT_KINDS, EndpointIndex
from meshxds.xds.cache import TYPE_ENDPOINT, Snapshot
from meshxds.xds.memo import ResourceMemo

__all__ = [
    "COMPILE_INPUTS",
    "Changes",
    "Pipeline",
    "SnapshotBuilder",
    "Translation",
    "changes_between",
    "translate",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Translation:
    resources: ResourceSet
    gateway_api: GatewayAPIResult
    istio: IstioTranslator
    endpoints: EndpointIndex
    """The index the translators read endpoints from."""
    istio_messages: tuple[AnalysisMessage, ...] = ()
    """What the Istio translator found wrong, as records (``IstioTranslator.check``)."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every warning as text (the other frontends' and the sources' are only text)."""
        istio = tuple(m.labelled() for m in self.istio_warnings)
        return self.resources.warnings + self.gateway_api.warnings + istio

    @property
    def istio_warnings(self) -> tuple[AnalysisMessage, ...]:
        return tuple(m for m in self.istio_messages if m.level is Level.WARNING)

    @property
    def errors(self) -> tuple[AnalysisMessage, ...]:
        """Valid manifests asking for something meshxds cannot serve (e.g. ISTIO_MUTUAL)."""
        return tuple(m for m in self.istio_messages if m.level is Level.ERROR)

    def error_entries(self) -> list[dict[str, str]]:
        """The errors as ``validate --output json`` and ``/debug/config`` list them."""
        return [self._entry(m) for m in self.errors]

    def warning_entries(self) -> list[dict[str, str]]:
        """The warnings as ``validate --output json`` and ``/debug/config`` list them: a record's
        entry for each Istio message, ``{"message": text}`` (and empty keys) for the others."""
        texts = self.resources.warnings + self.gateway_api.warnings
        return [*map(_text_entry, texts), *map(self._entry, self.istio_warnings)]

    def _entry(self, message: AnalysisMessage) -> dict[str, str]:
        file = self.resources.origins.get(message.object.ref, "") if message.object is not None else ""
        return message.as_dict(file=file)

    @property
    def statuses(self) -> tuple[ObjectStatus, ...]:
        return self.gateway_api.statuses

    def config_for(self, identity: ProxyIdentity) -> ir.ProxyConfig:
        """What a proxy of this identity serves: the Gateway API Gateway its labels name and the
        Istio Gateways whose selector its labels match; a proxy none selects is a sidecar."""
        selected: list[ir.ProxyConfig] = []
        key = gateway_for_proxy(identity.namespace, identity.label_map)
        if key is not None and key in self.gateway_api.gateways:
            selected.append(self.gateway_api.gateways[key])
        istio_config = self.istio.config_for(identity, sidecar=not selected)
        if istio_config.gateways or not selected:
            selected.append(istio_config.config)
        return ir.ProxyConfig.merge(selected)


def _text_entry(text: str) -> dict[str, str]:
    return {"file": "", "object": "", "field": "", "message": text}


def translate(
    resources: ResourceSet,
    options: TranslateOptions | None = None,
    *,
    reuse: Translation | None = None,
    endpoints: EndpointIndex | None = None,
    gateways: Collection[tuple[str, str]] | None = None,
) -> Translation:
    """Run every translator over one consistent set of objects. ``reuse``: an earlier translation
    whose compiled routes and unchanged Gateways may be kept, and ``endpoints`` an index still
    true of ``resources`` (both only when none of ``COMPILE_INPUTS`` changed since).
    ``gateways``: only these Gateway API Gateways (one proxy's config; see ``translate_gateway_api``)."""
    options = options or TranslateOptions()
    endpoints = endpoints or EndpointIndex(resources)
    istio_translator = IstioTranslator(
        resources,
        listener_address=options.listener_address,
        cluster_domain=options.cluster_domain,
        endpoint_index=endpoints,
    )
    messages = istio_translator.check() if istio_translator.has_config else ()
    return Translation(
        resources=resources,
        gateway_api=translate_gateway_api(
            resources,
            options,
            endpoint_index=endpoints,
            previous=reuse.gateway_api if reuse is not None else None,
            only=gateways,
        ),
        istio=istio_translator,
        endpoints=endpoints,
        istio_messages=messages,
    )


COMPILE_INPUTS: frozenset[type[Resource]] = frozenset(
    {
        core.Service,
        core.EndpointSlice,
        core.Pod,
        gatewayapi.ReferenceGrant,
        kgateway.Backend,
        kgateway.BackendConfigPolicy,
        # A TrafficPolicy on an HTTPRoute or its rules shapes the routes it compiles to.
        kgateway.TrafficPolicy,
        # A BackendTLSPolicy (and the CA bundles it reads) shapes the clusters routes compile to.
        gatewayapi.BackendTLSPolicy,
        core.ConfigMap,
        core.Secret,
    }
)
"""What a Gateway API route compiles from besides itself: when none of these changed, the last
translation's compiled routes (and the configs of Gateways whose routes did not change) hold."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Changes:
    """What differs between two ``ResourceSet``s."""

    objects: tuple[Resource, ...] = ()
    """Old and new versions of every object added, removed or modified."""
    kinds: frozenset[type[Resource]] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.objects)

    @property
    def endpoints_only(self) -> bool:
        return bool(self.kinds) and self.kinds <= ENDPOINT_KINDS


def changes_between(before: ResourceSet, after: ResourceSet) -> Changes:
    """Objects whose content changed. Both sources keep unchanged objects as the same Python
    objects, so this is mostly identity checks; and when ``after`` says which keys may differ
    from ``before`` (``ResourceSet.changed_since``), only those are looked at."""
    changed: list[Resource] = []
    kinds: set[type[Resource]] = set()
    hint = after.changed_since
    if hint is not None and hint[0] == before.token:
        # The source says where the two may differ: a one-file edit costs its own keys.
        candidates: Iterable[tuple[type[Resource], Iterable[tuple[str, str]] | None]] = hint[1].items()
    else:
        candidates = ((model, None) for model in before.objects.keys() | after.objects.keys())
    for model, keys in candidates:
        old = before.objects.get(model, {})
        new = after.objects.get(model, {})
        if old is new:
            continue
        for key in old.keys() | new.keys() if keys is None else keys:
            a, b = old.get(key), new.get(key)
            if a is b or a == b:
                continue
            changed.extend(o for o in (a, b) if o is not None)
            kinds.add(model)
    return Changes(objects=tuple(changed), kinds=frozenset(kinds))


def _with_endpoints(
    config: ir.ProxyConfig, index: EndpointIndex, services: set[tuple[str, str]] | None
) -> ir.ProxyConfig:
    """``config`` with the endpoints of its keyed clusters taken from ``index`` (only those of
    ``services``, when given); the same object when nothing moved."""
    clusters = list(config.clusters)
    moved = False
    for position, cluster in enumerate(clusters):
        key = cluster.endpoint_key
        if key is None or (services is not None and (key.namespace, key.service) not in services):
            continue
        endpoints = index.endpoints(key)
        if endpoints != cluster.endpoints:
            clusters[position] = replace(cluster, endpoints=endpoints)
            moved = True
    return replace(config, clusters=tuple(clusters)) if moved else config


@dataclass(slots=True)
class _Built:
    config: ir.ProxyConfig
    snapshot: Snapshot


class SnapshotBuilder:
    """``ProxyIdentity → Snapshot`` for one translation (and endpoint index).

    Unchanged resources keep their serialized bytes and versions across generations (a
    ``ResourceMemo`` reading through to the previous builder's), and an identity whose resources
    are all unchanged keeps its very ``Snapshot`` object, so its streams see nothing to send.
    """

    def __init__(
        self,
        translation: Translation,
        *,
        previous: SnapshotBuilder | None = None,
        endpoints: EndpointIndex | None = None,
    ) -> None:
        self.translation = translation
        self.endpoints = endpoints or translation.endpoints
        """Where EDS clusters' endpoints come from: newer than the translation's after a fast-path update."""
        self.memo: ResourceMemo = ResourceMemo(previous.memo if previous is not None else None)
        # _built and _previous are written by builds in worker threads and by ``forget`` on the
        # loop, and copied by the next builder: every change and copy holds the lock.
        self._lock = threading.Lock()
        self._previous: dict[ProxyIdentity, _Built] = previous._copy_built() if previous is not None else {}
        self._built: dict[ProxyIdentity, _Built] = {}

    def __call__(self, identity: ProxyIdentity) -> Snapshot:
        built = self._built.get(identity)
        if built is not None:
            return built.snapshot
        # Endpoints always come from the current index: clusters of a fast-path update, or of
        # routes a translation reused, were computed from an older one.
        config = _with_endpoints(self.translation.config_for(identity), self.endpoints, None)
        problems = config.validate()
        if problems:
            raise IRValidationError(problems)
        snapshot = self._reuse(identity, self.memo.snapshot(config))
        snapshot.check_consistent()
        with self._lock:
            self._built[identity] = _Built(config, snapshot)
        return snapshot

    def ready(self, identity: ProxyIdentity) -> Snapshot | None:
        """The snapshot of ``identity`` if already built (``prebuild``, or carried by the fast
        path), without building it: the cache takes it on the loop."""
        built = self._built.get(identity)
        return None if built is None else built.snapshot

    def identities(self) -> frozenset[ProxyIdentity]:
        """Every identity this builder keeps a snapshot for (built, or the previous builder's)."""
        with self._lock:
            return frozenset(self._built.keys() | self._previous.keys())

    def forget(self, identities: Iterable[ProxyIdentity]) -> None:
        """Drop the snapshots of ``identities`` (no stream holds them any more): the next
        builder does not carry them, and asked for again they are built again."""
        identities = tuple(identities)
        with self._lock:
            for identity in identities:
                self._built.pop(identity, None)
                self._previous.pop(identity, None)
        # The Istio translator memoizes one config per identity (a sidecar's is the whole mesh).
        self.translation.istio.forget(identities)

    def _copy_built(self) -> dict[ProxyIdentity, _Built]:
        with self._lock:
            return dict(self._built)

    def _reuse(self, identity: ProxyIdentity, snapshot: Snapshot) -> Snapshot:
        """The previous snapshot of ``identity`` itself when every resource is the same."""
        before = self._previous.get(identity)
        if before is None:
            return snapshot
        old = before.snapshot
        same = all(
            old.get(type_url).keys() == by_name.keys()
            and all(old.get(type_url)[name] is resource for name, resource in by_name.items())
            for type_url, by_name in snapshot.resources.items()
        )
        return old if same else snapshot

    def with_new_endpoints(
        self, resources: ResourceSet, endpoints: EndpointIndex, services: set[tuple[str, str]]
    ) -> SnapshotBuilder:
        """The endpoint fast path: the next builder, where only the ClusterLoadAssignments of
        clusters whose endpoints come from ``services`` are rebuilt, in every snapshot built so far."""
        nxt = SnapshotBuilder(
            replace(self.translation, resources=resources), previous=self, endpoints=endpoints
        )
        nxt.memo = self.memo.carried()
        # nxt is not published yet: no other thread reaches its dicts.
        for identity, built in nxt._previous.items():
            config = _with_endpoints(built.config, endpoints, services)
            if config is built.config:
                nxt._built[identity] = built
                continue
            eds = dict(built.snapshot.get(TYPE_ENDPOINT))
            for old, cluster in zip(built.config.clusters, config.clusters, strict=True):
                if cluster is not old and cluster.name in eds:
                    eds[cluster.name] = nxt.memo.load_assignment(cluster)
            snapshot = built.snapshot.replacing(TYPE_ENDPOINT, eds)
            nxt._built[identity] = _Built(config, snapshot)
        return nxt

    def prebuild(self, identities: Iterable[ProxyIdentity]) -> None:
        """Build these identities now (off the event loop); a failure is left for the cache to
        report, which keeps that identity's last good snapshot."""
        for identity in identities:
            try:
                self(identity)
            except Exception:
                continue  # the cache logs it when it builds the identity itself


@dataclass(slots=True)
class Pipeline:
    """The serving loop's state: the current builder, and how the next one is made."""

    options: TranslateOptions = field(default_factory=TranslateOptions)
    builder: SnapshotBuilder | None = None
    fast_updates: int = 0
    """Updates served by the endpoint fast path (for tests and metrics)."""
    full_updates: int = 0
    last_path: str = ""
    """How the latest update was made: ``translated``, ``endpoints`` (the fast path) or ``unchanged``."""

    def update(self, resources: ResourceSet, identities: Iterable[ProxyIdentity] = ()) -> SnapshotBuilder:
        """The builder serving ``resources``, with ``identities`` built: the current one itself
        when no object changed. Pure computation: meant for a worker thread, with the result
        published on the loop."""
        previous = self.builder
        if previous is None:
            builder = SnapshotBuilder(translate(resources, self.options))
            self.full_updates += 1
            self.last_path = "translated"
        else:
            changes = changes_between(previous.translation.resources, resources)
            if not changes and resources.warnings == previous.translation.resources.warnings:
                self.last_path = "unchanged"
                return previous
            endpoints = previous.endpoints
            if changes.kinds & ENDPOINT_KINDS:
                endpoints = EndpointIndex.updated(previous.endpoints, resources, changes.objects)
            if (
                changes.endpoints_only
                and endpoints.refuses_fast_path(changes.objects, previous.endpoints) is None
            ):
                touched = endpoints.touched_services(
                    changes.objects, previous.translation.resources, previous.endpoints
                )
                builder = previous.with_new_endpoints(resources, endpoints, touched)
                self.fast_updates += 1
                self.last_path = "endpoints"
            else:
                if changes.kinds & COMPILE_INPUTS:
                    translation = translate(resources, self.options)
                else:
                    # e.g. a WorkloadEntry that makes a ServiceEntry's clusters DNS: the updated index.
                    translation = translate(
                        resources, self.options, reuse=previous.translation, endpoints=endpoints
                    )
                builder = SnapshotBuilder(translation, previous=previous)
                self.full_updates += 1
                self.last_path = "translated"
        builder.prebuild(identities)
        self.builder = builder
        return builder
