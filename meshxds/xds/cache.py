"""Versioned, serialize-once xDS snapshots and the per-identity snapshot cache.

A ``Snapshot`` is an immutable ``type_url -> name -> CachedResource`` map. Each resource is
serialized once (deterministically) into an ``Any`` shared by every subscriber; its version is
the hash of those bytes, so a version changes only when the bytes change.

``SnapshotCache`` holds the current *builder* (identity -> snapshot), memoizes one snapshot per
``ProxyIdentity`` per generation and wakes waiters when a new generation is set. It knows
nothing of gRPC: the server asks it for snapshots, the stream state machines decide what to send.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import any_pb2
from google.protobuf.message import Message

from meshxds.identity import ProxyIdentity

__all__ = [
    "PUSH_ORDER",
    "TYPE_CLUSTER",
    "TYPE_ENDPOINT",
    "TYPE_LISTENER",
    "TYPE_ROUTE",
    "TYPE_SECRET",
    "CachedResource",
    "InconsistentSnapshot",
    "Snapshot",
    "SnapshotCache",
    "version_of",
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


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_VERSION_CHARS]


def version_of(pairs: Iterable[tuple[str, str]]) -> str:
    """Version of a set of ``(name, version)`` pairs: stable, order-independent, never empty."""
    digest = hashlib.sha256()
    for name, version in sorted(pairs):
        # NUL and newline cannot appear in resource names, so the encoding is unambiguous.
        digest.update(f"{name}\0{version}\n".encode())
    return digest.hexdigest()[:_VERSION_CHARS]


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
class Snapshot:
    """Everything one proxy identity should have, per type; immutable."""

    resources: Mapping[str, Mapping[str, CachedResource]]
    """``type_url -> name -> resource``; every type of ``PUSH_ORDER`` is present (maybe empty)."""
    _versions: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        frozen: dict[str, Mapping[str, CachedResource]] = {t: _EMPTY for t in PUSH_ORDER}
        for type_url, by_name in self.resources.items():
            for name, resource in by_name.items():
                if resource.name != name or resource.type_url != type_url:
                    raise ValueError(
                        f"resource {resource.type_url}/{resource.name} filed as {type_url}/{name}"
                    )
            frozen[type_url] = MappingProxyType(dict(by_name))
        object.__setattr__(self, "resources", MappingProxyType(frozen))
        versions = {
            t: version_of((n, r.version) for n, r in by_name.items()) for t, by_name in frozen.items()
        }
        object.__setattr__(self, "_versions", MappingProxyType(versions))

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


class SnapshotCache:
    """The current builder and one memoized snapshot per identity per generation; no gRPC.

    All methods run on the event loop; mutations are synchronous, so no ``await`` separates a
    read from a write.
    """

    def __init__(self, builder: Builder | None = None) -> None:
        self._builder = builder
        self._generation = 0 if builder is None else 1
        self._memo: dict[ProxyIdentity, Snapshot | None] = {}
        # The last snapshot each identity was served, the fallback when a builder fails.
        self._last_good: dict[ProxyIdentity, Snapshot] = {}
        self._changed = asyncio.Event()

    @property
    def generation(self) -> int:
        return self._generation

    def set_builder(self, builder: Builder) -> None:
        """Start a new configuration generation and wake every waiter."""
        self._builder = builder
        self._memo.clear()
        self._generation += 1
        # Swap the event so a waiter that wakes late still sees a set event, then new waiters block.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        log.debug("snapshot generation=%d", self._generation)

    def snapshot_for(self, identity: ProxyIdentity) -> Snapshot | None:
        """The snapshot of ``identity`` for this generation, built at most once.

        A builder that raises, or returns an inconsistent snapshot, is logged and the identity
        keeps its previous snapshot: a broken generation never reaches a proxy.
        """
        try:
            return self._memo[identity]
        except KeyError:
            pass
        snapshot = self._build(identity)
        self._memo[identity] = snapshot
        if snapshot is not None:
            self._last_good[identity] = snapshot
        return snapshot

    def _build(self, identity: ProxyIdentity) -> Snapshot | None:
        if self._builder is None:
            return None
        try:
            snapshot = self._builder(identity)
            snapshot.check_consistent()
        except Exception:
            log.exception(
                "snapshot build failed identity=%s generation=%d; keeping the previous snapshot",
                identity,
                self._generation,
            )
            return self._last_good.get(identity)
        return snapshot

    async def wait_for_generation(self, after: int) -> int:
        """Return the current generation as soon as it is greater than ``after``."""
        while self._generation <= after:
            await self._changed.wait()
        return self._generation
