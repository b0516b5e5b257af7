"""Versioned, serialize-once xDS snapshots and the per-identity snapshot cache.

A ``Snapshot`` is an immutable ``type_url -> name -> CachedResource`` map. Each resource is
serialized once (deterministically) into an ``Any`` shared by every subscriber; its version is
the hash of those bytes, so a version changes only when the bytes change.

Responses are assembled from bytes (protobuf's wire format makes a message the concatenation of
its fields): each resource keeps its ``DiscoveryResponse.resources`` and
``DeltaDiscoveryResponse.resources`` entries, built once on first use, and a snapshot memoizes
what many streams ask of it alike (a selection of resources with its version and entries, the
names changed since another snapshot), so N proxies of one identity cost one build.

``SnapshotCache`` holds the current *builder* (identity -> snapshot), memoizes one snapshot per
``ProxyIdentity`` per generation and calls its listeners when a new generation is set. It knows
nothing of gRPC: the server asks it for snapshots, the stream state machines decide what to send.
What it keeps per identity is bounded by the identities in use: an identity no stream holds any
more is forgotten (here and in the builder) after a grace period.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshxds import memory
from meshxds.identity import ProxyIdentity

__all__ = [
    "DEFAULT_GRACE_S",
    "PUSH_ORDER",
    "TYPE_CLUSTER",
    "TYPE_ENDPOINT",
    "TYPE_LISTENER",
    "TYPE_ROUTE",
    "TYPE_SECRET",
    "CachedResource",
    "IdentityState",
    "InconsistentSnapshot",
    "Selection",
    "Snapshot",
    "SnapshotCache",
    "delta_response",
    "sotw_response",
    "version_of",
    "wire_field",
]

log = logging.getLogger(__name__)

TYPE_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
TYPE_ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
TYPE_ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
TYPE_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
PUSH_ORDER: tuple[str, ...] = (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, TYPE_SECRET)
"""The order updates go out in (go-control-plane's ADS order): what is referenced before what refers."""

_TYPE_PREFIX = "type.googleapis.com/"
_HCM_TYPE = _TYPE_PREFIX + http_connection_manager_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_DOWNSTREAM_TLS_TYPE = _TYPE_PREFIX + tls_pb2.DownstreamTlsContext.DESCRIPTOR.full_name
_UPSTREAM_TLS_TYPE = _TYPE_PREFIX + tls_pb2.UpstreamTlsContext.DESCRIPTOR.full_name
_VERSION_CHARS = 16


class InconsistentSnapshot(Exception):
    """A snapshot refers to EDS/RDS/SDS names it does not hold, or holds EDS/RDS nobody refers to."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        """Every problem found, one sentence each."""
        super().__init__("; ".join(self.problems))


# Field numbers of envoy.service.discovery.v3 messages, for byte-level assembly.
_ANY_TYPE_URL, _ANY_VALUE = 1, 2
_RESPONSE_VERSION, _RESPONSE_RESOURCES, _RESPONSE_TYPE_URL, _RESPONSE_NONCE = 1, 2, 4, 5
_RESOURCE_VERSION, _RESOURCE_RESOURCE, _RESOURCE_NAME = 1, 2, 3
_DELTA_REMOVED = 6
# A memo past this many entries is dropped whole: keys are few in practice (one per distinct
# subscription or push), so this only bounds a pathological client.
_MEMO_LIMIT = 256


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def wire_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (string, bytes or sub-message) as wire bytes."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _sotw_body(*, version: str, entries: Iterable[bytes], type_url: str) -> bytes:
    """A ``DiscoveryResponse`` without its nonce, fields in number order (as protobuf writes them)."""
    return b"".join(
        (
            wire_field(_RESPONSE_VERSION, version.encode()),
            *entries,
            wire_field(_RESPONSE_TYPE_URL, type_url.encode()),
        )
    )


def sotw_response(*, body: bytes, nonce: str) -> bytes:
    """A serialized ``DiscoveryResponse``: ``body`` (from ``Selection.sotw_body``) plus the nonce."""
    return body + wire_field(_RESPONSE_NONCE, nonce.encode())


def delta_response(
    *, version: str, entries: bytes, type_url: str, nonce: str, removed: Iterable[str] = ()
) -> bytes:
    """A serialized ``DeltaDiscoveryResponse`` from pre-serialized ``Resource`` entries.

    Fields go in field-number order, so the bytes equal protobuf's deterministic serialization.
    """
    return b"".join(
        (
            wire_field(_RESPONSE_VERSION, version.encode()),
            entries,
            wire_field(_RESPONSE_TYPE_URL, type_url.encode()),
            wire_field(_RESPONSE_NONCE, nonce.encode()),
            *(wire_field(_DELTA_REMOVED, name.encode()) for name in removed),
        )
    )


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_VERSION_CHARS]


def version_of(pairs: Iterable[tuple[str, str]]) -> str:
    """Version of a set of ``(name, version)`` pairs: stable, order-independent, never empty."""
    # NUL and newline cannot appear in resource names, so the encoding is unambiguous; one
    # buffer hashed once (a digest update per pair costs more than the hashing).
    text = "".join([f"{name}\0{version}\n" for name, version in sorted(pairs)])
    return hashlib.sha256(text.encode()).hexdigest()[:_VERSION_CHARS]


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedResource:
    """One resource, serialized once; shared by every subscriber and never mutated."""

    name: str
    """The xDS resource name (cluster name, listener name, ...)."""
    type_url: str
    """``type.googleapis.com/<full proto name>``."""
    version: str
    """Hex SHA-256 (first 16 chars) of the serialized bytes: changes only when the bytes change."""
    any: any_pb2.Any
    """The packed resource, built once; treat as read-only."""
    _sotw_entry: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _delta_entry: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def sotw_entry(self) -> bytes:
        """This resource as one ``DiscoveryResponse.resources`` field; built on first use, then shared."""
        entry = self._sotw_entry
        if entry is None:
            entry = wire_field(_RESPONSE_RESOURCES, self._any_bytes())
            object.__setattr__(self, "_sotw_entry", entry)
        return entry

    @property
    def delta_entry(self) -> bytes:
        """This resource as one ``DeltaDiscoveryResponse.resources`` field (a ``Resource``)."""
        entry = self._delta_entry
        if entry is None:
            resource = b"".join(
                (
                    wire_field(_RESOURCE_VERSION, self.version.encode()),
                    wire_field(_RESOURCE_RESOURCE, self._any_bytes()),
                    wire_field(_RESOURCE_NAME, self.name.encode()),
                )
            )
            entry = wire_field(_RESPONSE_RESOURCES, resource)
            object.__setattr__(self, "_delta_entry", entry)
        return entry

    def _any_bytes(self) -> bytes:
        return wire_field(_ANY_TYPE_URL, self.type_url.encode()) + wire_field(_ANY_VALUE, self.any.value)

    @classmethod
    def from_message(cls, name: str, message: Message) -> CachedResource:
        return cls._from_bytes(
            name,
            _TYPE_PREFIX + message.DESCRIPTOR.full_name,
            message.SerializeToString(deterministic=True),
        )

    @classmethod
    def _from_bytes(cls, name: str, type_url: str, data: bytes) -> CachedResource:
        return cls(
            name=name,
            type_url=type_url,
            version=_hash(data),
            any=any_pb2.Any(type_url=type_url, value=data),
        )


_EMPTY: Mapping[str, CachedResource] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Some resources of one type of a snapshot, with what a response carrying them needs.

    Memoized by ``Snapshot.select``: every stream with the same subscription shares it, so its
    sorted names, version and serialized entries are computed once.
    """

    type_url: str
    resources: Mapping[str, CachedResource]
    """``name -> resource``; read-only (streams keep it as what they sent)."""
    names: tuple[str, ...]
    """The names, sorted: the order of the entries."""
    version: str
    """``version_of`` the ``(name, version)`` pairs."""
    _sotw_body: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _delta_entries: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _versions: dict[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def versions(self) -> dict[str, str]:
        """A fresh ``name -> version`` dict (a Delta stream's new ``held`` entries): a C-level copy."""
        versions = self._versions
        if versions is None:
            versions = {name: resource.version for name, resource in self.resources.items()}
            object.__setattr__(self, "_versions", versions)
        return versions.copy()

    @property
    def sotw_body(self) -> bytes:
        """A ``DiscoveryResponse`` of exactly these resources, without its nonce."""
        body = self._sotw_body
        if body is None:
            body = _sotw_body(
                version=self.version,
                entries=(self.resources[name].sotw_entry for name in self.names),
                type_url=self.type_url,
            )
            object.__setattr__(self, "_sotw_body", body)
        return body

    @property
    def delta_entries(self) -> bytes:
        """The ``DeltaDiscoveryResponse.resources`` fields of these resources, in name order."""
        entries = self._delta_entries
        if entries is None:
            entries = b"".join(self.resources[name].delta_entry for name in self.names)
            object.__setattr__(self, "_delta_entries", entries)
        return entries

    @classmethod
    def of(cls, type_url: str, resources: Mapping[str, CachedResource]) -> Selection:
        names = tuple(sorted(resources))
        version = version_of((name, resources[name].version) for name in names)
        return cls(
            type_url=type_url, resources=MappingProxyType(dict(resources)), names=names, version=version
        )


_serials = itertools.count(1)


def _frozen(type_url: str, by_name: Mapping[str, CachedResource]) -> Mapping[str, CachedResource]:
    """A read-only copy of one type's resources, each filed under its own name and type."""
    for name, resource in by_name.items():
        if resource.name != name or resource.type_url != type_url:
            raise ValueError(f"resource {resource.type_url}/{resource.name} filed as {type_url}/{name}")
    return MappingProxyType(dict(by_name))


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """Everything one proxy identity should have, per type; immutable."""

    resources: Mapping[str, Mapping[str, CachedResource]]
    """``type_url -> name -> resource``; every type of ``PUSH_ORDER`` is present (maybe empty)."""
    _versions: Mapping[str, str] = field(init=False, repr=False, compare=False)
    _serial: int = field(init=False, repr=False, compare=False)
    # Results many streams ask for alike; the memos are caches and never change what is served.
    _selections: dict[tuple[str, frozenset[str] | None], Selection] = field(
        init=False, repr=False, compare=False
    )
    _changes: dict[tuple[int, str], frozenset[str]] = field(init=False, repr=False, compare=False)
    _entries: dict[tuple[str, tuple[str, ...]], bytes] = field(init=False, repr=False, compare=False)
    _partials: dict[tuple[str, tuple[str, ...], str], bytes] = field(init=False, repr=False, compare=False)
    _shared: dict[object, tuple[tuple[object, ...], int, bytes]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        frozen: dict[str, Mapping[str, CachedResource]] = {t: _EMPTY for t in PUSH_ORDER}
        for type_url, by_name in self.resources.items():
            frozen[type_url] = _frozen(type_url, by_name)
        versions = {
            t: version_of((n, r.version) for n, r in by_name.items()) for t, by_name in frozen.items()
        }
        self._setup(frozen, versions)

    def replacing(self, type_url: str, by_name: Mapping[str, CachedResource]) -> Snapshot:
        """This snapshot with the resources of one type replaced (the endpoint fast path): the
        other types, and their versions, are shared rather than checked and hashed again."""
        frozen = dict(self.resources)
        frozen[type_url] = _frozen(type_url, by_name)
        versions = dict(self._versions)
        versions[type_url] = version_of((n, r.version) for n, r in frozen[type_url].items())
        snapshot: Snapshot = object.__new__(Snapshot)
        snapshot._setup(frozen, versions)
        return snapshot

    def _setup(self, frozen: dict[str, Mapping[str, CachedResource]], versions: dict[str, str]) -> None:
        object.__setattr__(self, "resources", MappingProxyType(frozen))
        object.__setattr__(self, "_versions", MappingProxyType(versions))
        # A serial, not id(): ids are reused once a snapshot is collected, serials never.
        object.__setattr__(self, "_serial", next(_serials))
        object.__setattr__(self, "_selections", {})
        object.__setattr__(self, "_changes", {})
        object.__setattr__(self, "_entries", {})
        object.__setattr__(self, "_partials", {})
        object.__setattr__(self, "_shared", {})

    def select(self, type_url: str, names: frozenset[str] | None) -> Selection:
        """The resources of ``type_url`` among ``names`` (``None``: all of them), memoized."""
        key = (type_url, names)
        selection = self._selections.get(key)
        if selection is None:
            present = self.get(type_url)
            chosen = present if names is None else {n: present[n] for n in names if n in present}
            selection = Selection.of(type_url, chosen)
            _remember(self._selections, key, selection)
        return selection

    def changed_since(self, old: Snapshot, type_url: str) -> frozenset[str]:
        """Names of ``type_url`` added, removed or re-versioned from ``old`` to this snapshot.

        Computed once per pair and type, and shared by every stream moving between the two.
        """
        if old is self:
            return frozenset()
        key = (old._serial, type_url)
        changed = self._changes.get(key)
        if changed is None:
            before, after = old.get(type_url), self.get(type_url)
            names = [n for n in before if n not in after]
            for name, resource in after.items():
                was = before.get(name)
                # Reused objects (Snapshot.from_messages(previous=...)) skip the version compare.
                if was is not resource and (was is None or was.version != resource.version):
                    names.append(name)
            changed = frozenset(names)
            _remember(self._changes, key, changed)
        return changed

    def delta_entries(self, type_url: str, names: tuple[str, ...]) -> bytes:
        """``DeltaDiscoveryResponse.resources`` fields of ``names`` (all present), memoized.

        A push sends the same changed names to every stream of the identity: built once.
        """
        key = (type_url, names)
        entries = self._entries.get(key)
        if entries is None:
            present = self.get(type_url)
            entries = b"".join(present[name].delta_entry for name in names)
            _remember(self._entries, key, entries)
        return entries

    def sotw_partial_body(self, type_url: str, names: tuple[str, ...], version: str) -> bytes:
        """A ``DiscoveryResponse`` (without nonce) carrying only ``names`` (all present) under
        ``version``, the version of everything the client holds once it applies it; memoized.

        SotW lets EDS, RDS and SDS responses leave out what did not change (the client keeps
        what a response omits), as the floor does: a push sends the changed names only.
        """
        key = (type_url, names, version)
        body = self._partials.get(key)
        if body is None:
            present = self.get(type_url)
            body = _sotw_body(
                version=version, entries=(present[name].sotw_entry for name in names), type_url=type_url
            )
            _remember(self._partials, key, body)
        return body

    def shared_response(self, key: tuple[object, ...]) -> tuple[int, bytes] | None:
        """The latest response built under ``key`` (mode, type, ...) from this snapshot, with its
        nonce; one is kept per mode and type, which is what a push fans out."""
        slot = self._shared.get(key[:2])
        if slot is None or slot[0] != key:
            return None
        return slot[1], slot[2]

    def share_response(self, key: tuple[object, ...], nonce: int, response: bytes) -> None:
        self._shared[key[:2]] = (key, nonce, response)

    def version(self, type_url: str) -> str:
        """Hash of the sorted ``(name, version)`` pairs of that type (an empty type has its own version)."""
        return self._versions.get(type_url) or version_of(())

    def names(self, type_url: str) -> frozenset[str]:
        return frozenset(self.resources.get(type_url, _EMPTY))

    def get(self, type_url: str) -> Mapping[str, CachedResource]:
        """The resources of one type (empty for a type this snapshot does not know)."""
        return self.resources.get(type_url, _EMPTY)

    @classmethod
    def from_messages(
        cls,
        by_type: Mapping[str, Iterable[tuple[str, Message]]],
        *,
        previous: Snapshot | None = None,
    ) -> Snapshot:
        """Serialize every message once; reuse ``previous``'s resource objects whose bytes are unchanged."""
        resources: dict[str, dict[str, CachedResource]] = {}
        for type_url, items in by_type.items():
            old = previous.get(type_url) if previous is not None else _EMPTY
            by_name: dict[str, CachedResource] = {}
            for name, message in items:
                actual = _TYPE_PREFIX + message.DESCRIPTOR.full_name
                if actual != type_url:
                    raise ValueError(f"{name!r}: a {actual} given as {type_url}")
                if name in by_name:
                    raise ValueError(f"duplicate {type_url} resource {name!r}")
                data = message.SerializeToString(deterministic=True)
                reused = old.get(name)
                by_name[name] = (
                    reused
                    if reused is not None and reused.any.value == data
                    else CachedResource._from_bytes(name, type_url, data)
                )
            resources[type_url] = by_name
        return cls(resources=resources)

    def check_consistent(self) -> None:
        """Raise ``InconsistentSnapshot`` listing every dangling or unreferenced EDS/RDS/SDS name."""
        eds_refs: set[str] = set()
        rds_refs: set[str] = set()
        sds_refs: set[str] = set()
        for cached in self.get(TYPE_CLUSTER).values():
            cluster = cluster_pb2.Cluster.FromString(cached.any.value)
            if (
                cluster.WhichOneof("cluster_discovery_type") == "type"
                and cluster.type == cluster_pb2.Cluster.EDS
            ):
                eds_refs.add(cluster.eds_cluster_config.service_name or cluster.name)
            sockets = [
                cluster.transport_socket,
                *(m.transport_socket for m in cluster.transport_socket_matches),
            ]
            for socket in sockets:
                sds_refs.update(_sds_names(socket.typed_config))
        for cached in self.get(TYPE_LISTENER).values():
            listener = listener_pb2.Listener.FromString(cached.any.value)
            chains = list(listener.filter_chains)
            if listener.HasField("default_filter_chain"):
                chains.append(listener.default_filter_chain)
            for chain in chains:
                sds_refs.update(_sds_names(chain.transport_socket.typed_config))
                for network_filter in chain.filters:
                    if network_filter.typed_config.type_url != _HCM_TYPE:
                        continue
                    hcm = http_connection_manager_pb2.HttpConnectionManager.FromString(
                        network_filter.typed_config.value
                    )
                    if hcm.HasField("rds"):
                        rds_refs.add(hcm.rds.route_config_name)
        problems = [
            *_dangling("cluster", "ClusterLoadAssignment", eds_refs, self.names(TYPE_ENDPOINT)),
            *_unreferenced("ClusterLoadAssignment", self.names(TYPE_ENDPOINT), eds_refs),
            *_dangling("listener", "RouteConfiguration", rds_refs, self.names(TYPE_ROUTE)),
            *_unreferenced("RouteConfiguration", self.names(TYPE_ROUTE), rds_refs),
            *_dangling("TLS context", "Secret", sds_refs, self.names(TYPE_SECRET)),
        ]
        if problems:
            raise InconsistentSnapshot(problems)


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def _dangling(referrer: str, kind: str, refs: set[str], present: frozenset[str]) -> Iterator[str]:
    for name in sorted(refs - present):
        yield f"a {referrer} refers to {kind} {name!r}, which the snapshot lacks"


def _unreferenced(kind: str, present: frozenset[str], refs: set[str]) -> Iterator[str]:
    for name in sorted(present - refs):
        yield f"{kind} {name!r} is not referenced by any resource"


def _sds_names(typed_config: any_pb2.Any) -> Iterator[str]:
    """Names of the ADS-delivered secrets a TLS transport socket asks for."""
    if typed_config.type_url == _DOWNSTREAM_TLS_TYPE:
        common = tls_pb2.DownstreamTlsContext.FromString(typed_config.value).common_tls_context
    elif typed_config.type_url == _UPSTREAM_TLS_TYPE:
        common = tls_pb2.UpstreamTlsContext.FromString(typed_config.value).common_tls_context
    else:
        return
    configs = list(common.tls_certificate_sds_secret_configs)
    if common.HasField("validation_context_sds_secret_config"):
        configs.append(common.validation_context_sds_secret_config)
    if common.combined_validation_context.HasField("validation_context_sds_secret_config"):
        configs.append(common.combined_validation_context.validation_context_sds_secret_config)
    for sds in configs:
        # No sds_config means a static bootstrap secret; another source (file, other server) is not ours.
        if sds.sds_config.WhichOneof("config_source_specifier") == "ads":
            yield sds.name


Builder = Callable[[ProxyIdentity], Snapshot]

DEFAULT_GRACE_S = 60.0
"""How long the snapshot of an identity outlives its last stream: long enough for a proxy
that reconnects (a restart, a control-plane hiccup, a load balancer's idle timeout) to resync
from what is built, short enough that a rollout's old label sets do not pile up."""

_TRIM_DELAY_S = 0.5
# Releases come one by one as a rollout's pods leave: one trim (tens of ms at hundreds of MB)
# covers every release of the last half second.


@runtime_checkable
class IdentityState(Protocol):
    """A builder that keeps per-identity state of its own (``pipeline.SnapshotBuilder``): the
    cache tells it which identities to forget."""

    def identities(self) -> Collection[ProxyIdentity]:
        """Every identity it keeps something for."""
        ...

    def forget(self, identities: Iterable[ProxyIdentity]) -> None:
        """Drop what it keeps for ``identities``; they are built again if asked for."""
        ...


@runtime_checkable
class Prebuilt(Protocol):
    """A builder that may have built an identity's snapshot already (``pipeline.SnapshotBuilder``
    builds the identities with streams before it is published): the cache takes such a snapshot
    on the loop, without a worker thread's round trip for every stream of a push."""

    def ready(self, identity: ProxyIdentity) -> Snapshot | None:
        """The snapshot of ``identity`` if built (and checked for consistency), else ``None``."""
        ...


class SnapshotCache:
    """The current builder and one memoized snapshot per identity per generation; no gRPC.

    All methods run on the event loop; mutations are synchronous, so no ``await`` separates a
    read from a write (``snapshot`` builds in a thread, then writes on the loop).

    Identities are held by the tasks that ask for them through ``snapshot``: the server runs
    each stream (and each fetch) in a task of its own, so "a task that asked is still running"
    is "the identity has a stream", without the cache knowing gRPC. An identity no task holds
    is released ``grace`` seconds later (Istio drops a proxy's state when its stream closes;
    the grace lets a reconnecting proxy resync from what is built): its snapshot, its last good
    snapshot and the builder's state for it (``IdentityState``). Asked for again, it is built
    again, with the same resource versions, so a Delta resync still sends only what differs.
    """

    def __init__(self, builder: Builder | None = None, *, grace: float = DEFAULT_GRACE_S) -> None:
        self._builder = builder
        self._ready: Callable[[ProxyIdentity], Snapshot | None] | None = (
            builder.ready if isinstance(builder, Prebuilt) else None
        )
        self._generation = 0 if builder is None else 1
        self._memo: dict[ProxyIdentity, Snapshot | None] = {}
        # The last snapshot each identity was served, the fallback when a builder fails.
        self._last_good: dict[ProxyIdentity, Snapshot] = {}
        # Called on every new generation (the streams' wake-ups): one call each, no task per stream.
        self._listeners: dict[int, Callable[[], None]] = {}
        self._listener_ids = itertools.count(1)
        # Builds running in worker threads, by generation and identity, shared by the streams
        # that ask for the same identity meanwhile.
        self._pending: dict[tuple[int, ProxyIdentity], asyncio.Future[Snapshot | None]] = {}
        self._grace = grace
        # Holders: the running tasks that asked for an identity, and how many hold each.
        self._holders: dict[asyncio.Task[Any], ProxyIdentity] = {}
        self._held: dict[ProxyIdentity, int] = {}
        # Identities nobody holds, with the monotonic time they go at; the grace is constant, so
        # insertion order is deadline order and a sweep stops at the first one still due later.
        self._idle: dict[ProxyIdentity, float] = {}
        self._sweep_timer: asyncio.TimerHandle | None = None
        self._trim_timer: asyncio.TimerHandle | None = None
        self._trimming: asyncio.Future[bool] | None = None

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def grace(self) -> float:
        return self._grace

    def identities(self) -> frozenset[ProxyIdentity]:
        """Every identity the cache (or its builder) keeps something for: held, or in grace."""
        kept = set(self._memo) | set(self._last_good) | set(self._held) | set(self._idle)
        if isinstance(self._builder, IdentityState):
            kept.update(self._builder.identities())
        return frozenset(kept)

    def held(self) -> frozenset[ProxyIdentity]:
        """The identities a running task (a stream) holds."""
        return frozenset(self._held)

    def set_builder(self, builder: Builder) -> None:
        """Start a new configuration generation and call every listener."""
        self._builder = builder
        self._ready = builder.ready if isinstance(builder, Prebuilt) else None
        self._memo.clear()
        self._generation += 1
        # A new builder may carry identities released while it was made (it copied the previous
        # builder's state in a worker thread): forget those now.
        if isinstance(builder, IdentityState):
            builder.forget([i for i in builder.identities() if i not in self._held and i not in self._idle])
        for listener in tuple(self._listeners.values()):
            try:
                listener()
            except Exception:
                log.exception("generation listener %r failed", listener)
        log.debug("snapshot generation=%d", self._generation)

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (on the loop, synchronously) on every new generation; returns the
        function that stops it. A push to thousands of streams wakes each handler directly,
        instead of waking a watcher task per stream that then wakes the handler."""
        key = next(self._listener_ids)
        self._listeners[key] = listener

        def stop() -> None:
            self._listeners.pop(key, None)

        return stop

    def snapshot_for(self, identity: ProxyIdentity) -> Snapshot | None:
        """The snapshot of ``identity`` for this generation, built at most once.

        A builder that raises, or returns an inconsistent snapshot, is logged and the identity
        keeps its previous snapshot: a broken generation never reaches a proxy. This does not
        hold ``identity``: unless a stream holds it, it is released after the grace period.
        """
        self._sweep()
        try:
            return self._memo[identity]
        except KeyError:
            pass
        snapshot = self._build(identity)
        self._memo[identity] = snapshot
        if snapshot is not None:
            self._last_good[identity] = snapshot
        self._settle(identity)
        return snapshot

    async def snapshot(self, identity: ProxyIdentity) -> Snapshot | None:
        """``snapshot_for`` for the event loop: a snapshot not built yet is built in a worker
        thread (at 10,000 Services, one takes a quarter of a second), so the loop keeps serving
        every other stream meanwhile; streams asking for the same identity share the build.

        The calling task holds ``identity`` until it ends (see the class docstring)."""
        self._hold(identity)
        self._sweep()
        if identity in self._memo:
            return self._memo[identity]
        builder, generation = self._builder, self._generation
        if builder is None:
            return None
        if self._ready is not None:
            ready = self._ready(identity)
            if ready is not None:
                self._memo[identity] = self._last_good[identity] = ready
                return ready
        key = (generation, identity)
        pending = self._pending.get(key)
        if pending is None:
            build = asyncio.to_thread(self._build_with, builder, identity, generation)
            pending = asyncio.ensure_future(build)
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._built(key))
        snapshot = await asyncio.shield(pending)
        if generation != self._generation:
            return snapshot  # a newer generation woke the stream already; it will ask again
        if identity not in self._memo:
            self._memo[identity] = snapshot
            if snapshot is not None:
                self._last_good[identity] = snapshot
        return self._memo[identity]

    def _built(self, key: tuple[int, ProxyIdentity]) -> None:
        self._pending.pop(key, None)
        # Its streams may all have gone meanwhile: what the build left in the builder is theirs.
        self._settle(key[1])

    def _hold(self, identity: ProxyIdentity) -> None:
        """Count the current task as a holder of ``identity`` until it ends."""
        try:
            task = asyncio.current_task()
        except RuntimeError:
            task = None
        if task is None:
            return
        held = self._holders.get(task)
        if held == identity:
            return
        if held is None:
            task.add_done_callback(self._task_done)
        else:
            self._unhold(held)  # a task serves one stream, so one identity: keep the latest
        self._holders[task] = identity
        self._held[identity] = self._held.get(identity, 0) + 1
        self._idle.pop(identity, None)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        identity = self._holders.pop(task, None)
        if identity is not None:
            self._unhold(identity)

    def _unhold(self, identity: ProxyIdentity) -> None:
        left = self._held.get(identity, 0) - 1
        if left > 0:
            self._held[identity] = left
            return
        self._held.pop(identity, None)
        self._settle(identity)

    def _settle(self, identity: ProxyIdentity) -> None:
        """Start the grace period of ``identity`` if nobody holds it (and it has not started)."""
        if identity in self._held or identity in self._idle:
            return
        self._idle[identity] = time.monotonic() + self._grace
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        if self._sweep_timer is not None or not self._idle:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): the next call sweeps
        delay = max(0.0, next(iter(self._idle.values())) - time.monotonic())
        self._sweep_timer = loop.call_later(delay, self._on_sweep_timer)

    def _on_sweep_timer(self) -> None:
        self._sweep_timer = None
        self._sweep()

    def _sweep(self) -> None:
        """Release every identity whose grace period is over."""
        if not self._idle:
            return
        now = time.monotonic()
        due: list[ProxyIdentity] = []
        for identity, deadline in self._idle.items():
            if deadline > now:
                break
            due.append(identity)
        if due:
            for identity in due:
                del self._idle[identity]
                self._memo.pop(identity, None)
                self._last_good.pop(identity, None)
            if isinstance(self._builder, IdentityState):
                self._builder.forget(due)
            log.debug("released identities=%d idle=%d held=%d", len(due), len(self._idle), len(self._held))
            self._trim_soon()
        self._schedule_sweep()

    def _trim_soon(self) -> None:
        """Give what the released snapshots freed back to the OS, in a worker thread, at most
        once per ``_TRIM_DELAY_S``."""
        if self._trim_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._trim_timer = loop.call_later(_TRIM_DELAY_S, self._trim, loop)

    def _trim(self, loop: asyncio.AbstractEventLoop) -> None:
        self._trim_timer = None
        if self._trimming is not None:
            self._trim_soon()  # one at a time; this release's turn comes next
            return
        self._trimming = trimming = loop.run_in_executor(None, memory.trim)
        trimming.add_done_callback(lambda _: setattr(self, "_trimming", None))

    def _build(self, identity: ProxyIdentity) -> Snapshot | None:
        if self._builder is None:
            return None
        return self._build_with(self._builder, identity, self._generation)

    def _build_with(self, builder: Builder, identity: ProxyIdentity, generation: int) -> Snapshot | None:
        try:
            with memory.building():  # a snapshot is a big build too (see meshxds.memory)
                snapshot = builder(identity)
            snapshot.check_consistent()
        except Exception:
            log.exception(
                "snapshot build failed identity=%s generation=%d; keeping the previous snapshot",
                identity,
                generation,
            )
            return self._last_good.get(identity)
        return snapshot
