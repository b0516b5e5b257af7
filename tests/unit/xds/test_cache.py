"""xds/cache.py: serialize-once resources, snapshot versions and consistency, the snapshot cache."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterable

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message
from xds_protos import (
    cluster_name,
    eds_cluster,
    listener,
    load_assignment,
    mesh_snapshot,
    route_configuration,
    static_cluster,
    tls_secret,
)

from meshxds.identity import ProxyIdentity
from meshxds.xds.cache import (
    PUSH_ORDER,
    TYPE_CLUSTER,
    TYPE_ENDPOINT,
    TYPE_LISTENER,
    TYPE_ROUTE,
    TYPE_SECRET,
    CachedResource,
    InconsistentSnapshot,
    Snapshot,
    SnapshotCache,
    delta_response,
    sotw_response,
    version_of,
    wire_field,
)

WEB = cluster_name("web")


# --- CachedResource -------------------------------------------------------------------------------


def test_cached_resource_packs_deterministic_bytes_and_hashes_them() -> None:
    message = eds_cluster(WEB)
    resource = CachedResource.from_message(WEB, message)
    data = message.SerializeToString(deterministic=True)
    assert resource.name == WEB
    assert resource.type_url == TYPE_CLUSTER
    assert resource.any.type_url == TYPE_CLUSTER
    assert resource.any.value == data
    assert resource.version == hashlib.sha256(data).hexdigest()[:16]
    assert cluster_pb2.Cluster.FromString(resource.any.value) == message


def test_cached_resource_version_changes_only_with_the_bytes() -> None:
    first = CachedResource.from_message("a", load_assignment("a", 9000))
    same = CachedResource.from_message("a", load_assignment("a", 9000))
    other = CachedResource.from_message("a", load_assignment("a", 9001))
    assert first.version == same.version
    assert first.version != other.version


# --- wire bytes: responses joined from pre-serialized entries ---------------------------------------


def _padded_cluster(name: str, pad: int) -> cluster_pb2.Cluster:
    cluster = eds_cluster(name)
    cluster.metadata.filter_metadata["pad"].fields["x"].string_value = "x" * pad
    return cluster


# Sizes around every varint length boundary (1, 2 and 3 bytes) of the length prefixes.
PADS = (0, 100, 127, 128, 300, 16_383, 16_384, 70_000)


@pytest.mark.parametrize("pad", PADS, ids=lambda p: f"pad-{p}")
def test_wire_field_matches_protobuf(pad: int) -> None:
    payload = "v" * (pad + 1)  # proto3 omits an empty string; we never write one
    assert (
        wire_field(1, payload.encode())
        == discovery_pb2.DiscoveryResponse(version_info=payload).SerializeToString()
    )


@pytest.mark.parametrize("pad", PADS, ids=lambda p: f"pad-{p}")
def test_resource_entries_are_what_protobuf_builds(pad: int) -> None:
    resource = CachedResource.from_message(WEB, _padded_cluster(WEB, pad))
    sotw = discovery_pb2.DiscoveryResponse(resources=[resource.any])
    assert resource.sotw_entry == sotw.SerializeToString(deterministic=True)
    delta = discovery_pb2.DeltaDiscoveryResponse(
        resources=[discovery_pb2.Resource(name=WEB, version=resource.version, resource=resource.any)]
    )
    assert resource.delta_entry == delta.SerializeToString(deterministic=True)
    assert resource.sotw_entry is resource.sotw_entry  # built once, then shared


def test_sotw_body_plus_nonce_is_the_response_protobuf_builds() -> None:
    resources = {
        name: CachedResource.from_message(name, _padded_cluster(name, pad))
        for name, pad in zip((cluster_name(s) for s in ("web", "api", "db")), (10, 200, 20_000), strict=True)
    }
    snapshot = Snapshot(resources={TYPE_CLUSTER: resources})
    selection = snapshot.select(TYPE_CLUSTER, None)
    data = sotw_response(body=selection.sotw_body, nonce="17")
    expected = discovery_pb2.DiscoveryResponse(
        version_info=snapshot.version(TYPE_CLUSTER),
        resources=[resources[n].any for n in sorted(resources)],
        type_url=TYPE_CLUSTER,
        nonce="17",
    )
    assert data == expected.SerializeToString(deterministic=True)
    assert discovery_pb2.DiscoveryResponse.FromString(data) == expected
    assert selection.version == snapshot.version(TYPE_CLUSTER)
    assert selection.names == tuple(sorted(resources))


def test_delta_response_is_what_protobuf_builds() -> None:
    snapshot = mesh_snapshot(services=["web", "api", "db"])
    names = (cluster_name("api"), cluster_name("web"))
    present = snapshot.get(TYPE_ENDPOINT)
    data = delta_response(
        version="v1",
        entries=snapshot.delta_entries(TYPE_ENDPOINT, names),
        type_url=TYPE_ENDPOINT,
        nonce="3",
        removed=["gone-1", "gone-2"],
    )
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="v1",
        resources=[
            discovery_pb2.Resource(name=n, version=present[n].version, resource=present[n].any) for n in names
        ],
        type_url=TYPE_ENDPOINT,
        nonce="3",
        removed_resources=["gone-1", "gone-2"],
    )
    assert data == expected.SerializeToString(deterministic=True)
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(data) == expected
    assert snapshot.delta_entries(TYPE_ENDPOINT, names) is snapshot.delta_entries(TYPE_ENDPOINT, names)


def test_select_is_memoized_per_subscription_and_keeps_only_present_names() -> None:
    snapshot = mesh_snapshot(services=["web", "api"])
    api = cluster_name("api")
    subset = snapshot.select(TYPE_ENDPOINT, frozenset({WEB, "missing"}))
    assert subset is snapshot.select(TYPE_ENDPOINT, frozenset({"missing", WEB}))
    assert subset.names == (WEB,) and dict(subset.resources) == {WEB: snapshot.get(TYPE_ENDPOINT)[WEB]}
    assert subset.version == version_of([(WEB, snapshot.get(TYPE_ENDPOINT)[WEB].version)])
    everything = snapshot.select(TYPE_ENDPOINT, None)
    assert everything.names == tuple(sorted((WEB, api))) and everything.version == snapshot.version(
        TYPE_ENDPOINT
    )
    versions = everything.versions
    versions.clear()  # a copy: a stream may mutate its held versions
    assert everything.versions == {n: r.version for n, r in snapshot.get(TYPE_ENDPOINT).items()}


def test_changed_since_names_added_removed_and_re_versioned_once_per_pair() -> None:
    api, db = cluster_name("api"), cluster_name("db")
    old = mesh_snapshot(services=["web", "api"])
    same_bytes = mesh_snapshot(services=["web", "api"])  # new objects, equal versions
    assert same_bytes.changed_since(old, TYPE_ENDPOINT) == frozenset()
    new = mesh_snapshot(services=["web", "db"], endpoint_port=9001, previous=old)
    changed = new.changed_since(old, TYPE_ENDPOINT)
    assert changed == {WEB, api, db}
    assert new.changed_since(old, TYPE_ENDPOINT) is changed  # shared by every stream
    unchanged_clusters = mesh_snapshot(services=["web", "api"], endpoint_port=9001, previous=old)
    assert unchanged_clusters.changed_since(old, TYPE_CLUSTER) == frozenset()
    assert unchanged_clusters.changed_since(old, TYPE_ENDPOINT) == {WEB, api}
    assert old.changed_since(old, TYPE_ENDPOINT) == frozenset()


# --- Snapshot -----------------------------------------------------------------------------------


def test_snapshot_has_every_type_even_when_empty() -> None:
    snapshot = Snapshot(resources={})
    assert set(snapshot.resources) == set(PUSH_ORDER)
    assert all(snapshot.names(t) == frozenset() for t in PUSH_ORDER)
    assert snapshot.version(TYPE_SECRET) != ""


def test_snapshot_version_is_order_independent_and_tracks_content() -> None:
    a = CachedResource.from_message("a", load_assignment("a", 1))
    b = CachedResource.from_message("b", load_assignment("b", 2))
    forward = Snapshot(resources={TYPE_ENDPOINT: {"a": a, "b": b}})
    backward = Snapshot(resources={TYPE_ENDPOINT: {"b": b, "a": a}})
    assert forward.version(TYPE_ENDPOINT) == backward.version(TYPE_ENDPOINT)
    assert forward.names(TYPE_ENDPOINT) == {"a", "b"}
    only_a = Snapshot(resources={TYPE_ENDPOINT: {"a": a}})
    assert only_a.version(TYPE_ENDPOINT) != forward.version(TYPE_ENDPOINT)
    assert Snapshot(resources={}).version(TYPE_ENDPOINT) != only_a.version(TYPE_ENDPOINT)


def test_snapshot_is_read_only() -> None:
    snapshot = mesh_snapshot()
    with pytest.raises(TypeError):
        snapshot.resources[TYPE_CLUSTER]["x"] = snapshot.resources[TYPE_CLUSTER][WEB]  # type: ignore[index]


def test_snapshot_rejects_a_resource_filed_under_another_name() -> None:
    resource = CachedResource.from_message("a", load_assignment("a", 1))
    with pytest.raises(ValueError, match="filed as"):
        Snapshot(resources={TYPE_ENDPOINT: {"b": resource}})


def test_from_messages_reuses_unchanged_resources_of_the_previous_snapshot() -> None:
    first = mesh_snapshot(services=["web", "api"])
    second = mesh_snapshot(services=["web", "api"], route_prefix="/v2", previous=first)
    for type_url in (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER):
        for name, resource in second.resources[type_url].items():
            assert resource is first.resources[type_url][name]
        assert second.version(type_url) == first.version(type_url)
    route = second.resources[TYPE_ROUTE]["http.8080"]
    assert route is not first.resources[TYPE_ROUTE]["http.8080"]
    assert second.version(TYPE_ROUTE) != first.version(TYPE_ROUTE)


def test_from_messages_rejects_a_message_of_the_wrong_type() -> None:
    with pytest.raises(ValueError, match="given as"):
        Snapshot.from_messages({TYPE_CLUSTER: [("a", load_assignment("a", 1))]})


def test_from_messages_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Snapshot.from_messages(
            {TYPE_ENDPOINT: [("a", load_assignment("a", 1)), ("a", load_assignment("a", 2))]}
        )


# --- check_consistent ---------------------------------------------------------------------------


def test_consistent_mesh_snapshot_passes() -> None:
    mesh_snapshot(
        services=["web", "api"], listeners={8080: "web", 9090: "api"}, secrets=["cert"]
    ).check_consistent()


def test_eds_service_name_names_the_load_assignment() -> None:
    Snapshot.from_messages(
        {
            TYPE_CLUSTER: [(WEB, eds_cluster(WEB, service_name="web-eds"))],
            TYPE_ENDPOINT: [("web-eds", load_assignment("web-eds", 1))],
        }
    ).check_consistent()


def test_static_clusters_need_no_endpoints() -> None:
    Snapshot.from_messages({TYPE_CLUSTER: [("s", static_cluster("s", 9000))]}).check_consistent()


@pytest.mark.parametrize(
    ("by_type", "problem"),
    [
        pytest.param(
            {TYPE_CLUSTER: [(WEB, eds_cluster(WEB))]},
            "ClusterLoadAssignment 'outbound|80||web",
            id="cluster-eds-missing-load-assignment",
        ),
        pytest.param(
            {TYPE_CLUSTER: [(WEB, eds_cluster(WEB, service_name="web-eds"))]},
            "'web-eds', which the snapshot lacks",
            id="cluster-eds-service-name-is-the-reference",
        ),
        pytest.param(
            {TYPE_ENDPOINT: [("orphan", load_assignment("orphan", 1))]},
            "ClusterLoadAssignment 'orphan' is not referenced",
            id="endpoint-extra-unreferenced",
        ),
        pytest.param(
            {TYPE_LISTENER: [("l", listener("l", 8080, "http.8080"))]},
            "RouteConfiguration 'http.8080', which the snapshot lacks",
            id="listener-rds-missing-route",
        ),
        pytest.param(
            {TYPE_LISTENER: [("l", listener("l", 8080, "http.8080", default_chain=True))]},
            "RouteConfiguration 'http.8080', which the snapshot lacks",
            id="listener-default-chain-rds-missing-route",
        ),
        pytest.param(
            {TYPE_ROUTE: [("http.1", route_configuration("http.1", WEB))]},
            "RouteConfiguration 'http.1' is not referenced",
            id="route-extra-unreferenced",
        ),
        pytest.param(
            {
                TYPE_LISTENER: [("l", listener("l", 8443, "http.8443", server_secret="cert"))],
                TYPE_ROUTE: [("http.8443", route_configuration("http.8443", WEB))],
            },
            "Secret 'cert', which the snapshot lacks",
            id="listener-tls-missing-secret",
        ),
        pytest.param(
            {
                TYPE_CLUSTER: [(WEB, eds_cluster(WEB, upstream_secret="ca"))],
                TYPE_ENDPOINT: [(WEB, load_assignment(WEB, 1))],
            },
            "Secret 'ca', which the snapshot lacks",
            id="cluster-tls-missing-secret",
        ),
    ],
)
def test_inconsistent_snapshots_name_every_problem(
    by_type: dict[str, list[tuple[str, Message]]], problem: str
) -> None:
    snapshot = Snapshot.from_messages(by_type)
    with pytest.raises(InconsistentSnapshot, match=problem) as caught:
        snapshot.check_consistent()
    assert len(caught.value.problems) == 1


def test_referenced_secrets_present_is_consistent_and_extra_secrets_are_fine() -> None:
    Snapshot.from_messages(
        {
            TYPE_CLUSTER: [(WEB, eds_cluster(WEB, upstream_secret="ca"))],
            TYPE_ENDPOINT: [(WEB, load_assignment(WEB, 1))],
            TYPE_SECRET: [("ca", tls_secret("ca")), ("spare", tls_secret("spare"))],
        }
    ).check_consistent()


def test_a_secret_from_another_source_is_not_required() -> None:
    cluster = eds_cluster(WEB, upstream_secret="ca")
    context = tls_pb2.UpstreamTlsContext()
    cluster.transport_socket.typed_config.Unpack(context)
    context.common_tls_context.validation_context_sds_secret_config.sds_config.path_config_source.path = "/x"
    cluster.transport_socket.typed_config.Pack(context)
    Snapshot.from_messages(
        {TYPE_CLUSTER: [(WEB, cluster)], TYPE_ENDPOINT: [(WEB, load_assignment(WEB, 1))]}
    ).check_consistent()


# --- SnapshotCache ------------------------------------------------------------------------------

WEST = ProxyIdentity.of(namespace="west", labels={"app": "gw"})
EAST = ProxyIdentity.of(namespace="east")


class CountingBuilder:
    def __init__(self) -> None:
        self.calls: list[ProxyIdentity] = []
        self.fail = False

    def __call__(self, identity: ProxyIdentity) -> Snapshot:
        self.calls.append(identity)
        if self.fail:
            raise RuntimeError("translation blew up")
        return mesh_snapshot(services=[identity.namespace])


def test_no_snapshot_before_a_builder() -> None:
    cache = SnapshotCache()
    assert cache.generation == 0
    assert cache.snapshot_for(WEST) is None


def test_snapshot_is_built_once_per_identity_per_generation() -> None:
    builder = CountingBuilder()
    cache = SnapshotCache(builder)
    first = cache.snapshot_for(WEST)
    assert first is not None
    assert cache.snapshot_for(ProxyIdentity.of(namespace="west", labels={"app": "gw"})) is first
    assert cache.snapshot_for(EAST) is not first
    assert builder.calls == [WEST, EAST]
    cache.set_builder(builder)
    assert cache.snapshot_for(WEST) is not first
    assert builder.calls == [WEST, EAST, WEST]


def test_set_builder_bumps_the_generation() -> None:
    cache = SnapshotCache(CountingBuilder())
    assert cache.generation == 1
    cache.set_builder(CountingBuilder())
    cache.set_builder(CountingBuilder())
    assert cache.generation == 3


def test_a_failing_builder_keeps_the_previous_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    builder = CountingBuilder()
    cache = SnapshotCache(builder)
    good = cache.snapshot_for(WEST)
    builder.fail = True
    cache.set_builder(builder)
    with caplog.at_level(logging.ERROR, logger="meshxds.xds.cache"):
        assert cache.snapshot_for(WEST) is good
        assert cache.snapshot_for(WEST) is good  # memoized: built (and logged) once
        assert cache.snapshot_for(EAST) is None  # nothing good to fall back on
    assert builder.calls.count(WEST) == 2
    assert sum("snapshot build failed" in r.getMessage() for r in caplog.records) == 2


def test_an_inconsistent_snapshot_is_never_served(caplog: pytest.LogCaptureFixture) -> None:
    good = mesh_snapshot()
    cache = SnapshotCache(lambda identity: good)
    assert cache.snapshot_for(WEST) is good
    dangling = Snapshot.from_messages({TYPE_CLUSTER: [(WEB, eds_cluster(WEB))]})
    cache.set_builder(lambda identity: dangling)
    with caplog.at_level(logging.ERROR, logger="meshxds.xds.cache"):
        assert cache.snapshot_for(WEST) is good
    assert "lacks" in caplog.text


def test_listeners_are_called_on_every_new_generation_until_stopped() -> None:
    cache = SnapshotCache()
    calls: list[int] = []
    stop = cache.listen(lambda: calls.append(cache.generation))
    cache.set_builder(CountingBuilder())
    cache.set_builder(CountingBuilder())
    stop()
    cache.set_builder(CountingBuilder())
    assert calls == [1, 2]


def test_a_failing_listener_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    cache = SnapshotCache()
    calls: list[int] = []

    def broken() -> None:
        raise RuntimeError("boom")

    cache.listen(broken)
    cache.listen(lambda: calls.append(cache.generation))
    with caplog.at_level(logging.ERROR, logger="meshxds.xds.cache"):
        cache.set_builder(CountingBuilder())
    assert calls == [1]
    assert "generation listener" in caplog.text


class PrebuiltBuilder(CountingBuilder):
    """A builder that has ``WEST`` built already (as ``SnapshotBuilder.prebuild`` leaves it)."""

    def __init__(self) -> None:
        super().__init__()
        self.prebuilt = mesh_snapshot()

    def ready(self, identity: ProxyIdentity) -> Snapshot | None:
        return self.prebuilt if identity == WEST else None


async def test_a_prebuilt_snapshot_is_taken_without_building() -> None:
    builder = PrebuiltBuilder()
    cache = SnapshotCache(builder)
    assert await cache.snapshot(WEST) is builder.prebuilt
    assert builder.calls == []  # neither built again nor sent through a worker thread
    assert await cache.snapshot(EAST) is not None
    assert builder.calls == [EAST]


def test_cache_module_does_not_import_grpc() -> None:
    code = "import sys, meshxds.xds.cache; sys.exit(1 if 'grpc' in sys.modules else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()


def test_endpoint_type_constant_matches_the_proto() -> None:
    assert TYPE_ENDPOINT.endswith(endpoint_pb2.ClusterLoadAssignment.DESCRIPTOR.full_name)


async def test_a_build_runs_in_a_worker_thread_shared_by_the_streams_asking() -> None:
    import threading

    slow, fast = ProxyIdentity.of(namespace="slow"), ProxyIdentity.of(namespace="fast")
    built = Snapshot(resources={})
    release = threading.Event()
    calls: list[ProxyIdentity] = []

    def builder(identity: ProxyIdentity) -> Snapshot:
        calls.append(identity)
        if identity == slow:
            release.wait(5)  # a 10k-service gateway, as far as the loop can tell
        return built

    cache = SnapshotCache(builder)
    first = asyncio.ensure_future(cache.snapshot(slow))
    second = asyncio.ensure_future(cache.snapshot(slow))
    # The loop is free while the slow build runs: another identity is served meanwhile.
    assert await asyncio.wait_for(cache.snapshot(fast), 2) is built
    assert not first.done() and not second.done()
    release.set()
    assert await asyncio.wait_for(first, 5) is built
    assert await asyncio.wait_for(second, 5) is built
    assert calls.count(slow) == 1
    assert cache.snapshot_for(slow) is built  # memoized for the generation


# --- Bounded identities: released after the grace period once no stream holds them -------------


class ForgetfulBuilder(CountingBuilder):
    """A builder with per-identity state of its own, as ``pipeline.SnapshotBuilder`` has."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[ProxyIdentity, Snapshot] = {}

    def __call__(self, identity: ProxyIdentity) -> Snapshot:
        snapshot = self.kept.get(identity)
        if snapshot is None:
            snapshot = self.kept[identity] = super().__call__(identity)
        return snapshot

    def identities(self) -> frozenset[ProxyIdentity]:
        return frozenset(self.kept)

    def forget(self, identities: Iterable[ProxyIdentity]) -> None:
        for identity in identities:
            self.kept.pop(identity, None)


class Streams:
    """Each stream a task that asks the cache for its identity, then stays until told to leave
    (the server runs every xDS stream in a task of its own)."""

    def __init__(self, cache: SnapshotCache) -> None:
        self.cache = cache
        self._open: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._ids = itertools.count()
        self.got: dict[int, Snapshot | None] = {}

    async def connect(self, identity: ProxyIdentity) -> int:
        stream_id, leave, asked = next(self._ids), asyncio.Event(), asyncio.Event()

        async def run() -> None:
            self.got[stream_id] = await self.cache.snapshot(identity)
            asked.set()
            await leave.wait()

        task = asyncio.create_task(run(), name=f"stream-{stream_id}")
        self._open[stream_id] = (task, leave)
        await asyncio.wait_for(asked.wait(), 5)
        return stream_id

    async def leave(self, stream_id: int) -> None:
        task, leave = self._open.pop(stream_id)
        leave.set()
        await asyncio.wait_for(task, 5)

    async def close(self) -> None:
        for stream_id in list(self._open):
            await self.leave(stream_id)


async def until_true(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_identities_without_streams_are_released_after_the_grace_period() -> None:
    builder = ForgetfulBuilder()
    cache = SnapshotCache(builder, grace=0.05)
    streams = Streams(cache)
    assert cache.identities() == frozenset()
    kept = await streams.connect(WEST)
    churn = [ProxyIdentity.of(namespace="east", labels={"pod-template-hash": f"h{i}"}) for i in range(20)]
    ids = [await streams.connect(identity) for identity in churn]
    assert cache.identities() == {WEST, *churn} == builder.identities()
    assert cache.held() == {WEST, *churn}
    for stream_id in ids:
        await streams.leave(stream_id)
    await until_true(lambda: cache.identities() == {WEST}, "the departed identities to be released")
    assert builder.identities() == {WEST}
    assert cache._memo.keys() == cache._last_good.keys() == {WEST}
    assert not cache._idle and not cache._pending
    # The connected identity kept its snapshot: asked again, nothing is built.
    await asyncio.sleep(0.1)  # well past the grace period
    assert await cache.snapshot(WEST) is streams.got[kept]
    assert builder.calls.count(WEST) == 1
    await streams.close()


async def test_an_identity_stays_while_any_of_its_streams_is_open() -> None:
    builder = ForgetfulBuilder()
    cache = SnapshotCache(builder, grace=0.02)
    streams = Streams(cache)
    first, second = await streams.connect(EAST), await streams.connect(EAST)
    await streams.leave(first)
    await asyncio.sleep(0.1)
    assert cache.identities() == {EAST} and cache.held() == {EAST}
    assert streams.got[first] is streams.got[second]
    await streams.leave(second)
    await until_true(lambda: not cache.identities(), "EAST to be released")
    assert builder.calls == [EAST]


async def test_a_stream_back_within_the_grace_period_gets_the_same_snapshot() -> None:
    builder = ForgetfulBuilder()
    cache = SnapshotCache(builder, grace=60)
    streams = Streams(cache)
    before = await streams.connect(WEST)
    await streams.leave(before)
    assert cache.held() == frozenset() and cache.identities() == {WEST}  # in its grace period
    again = await streams.connect(WEST)
    assert streams.got[again] is streams.got[before]
    assert builder.calls == [WEST]
    await streams.close()


async def test_a_released_identity_is_built_again_with_the_same_versions() -> None:
    builder = ForgetfulBuilder()
    cache = SnapshotCache(builder, grace=0)
    streams = Streams(cache)
    await streams.leave(first := await streams.connect(WEST))
    await until_true(lambda: not cache.identities(), "WEST to be released")
    second = await streams.connect(WEST)
    old, new = streams.got[first], streams.got[second]
    assert old is not None and new is not None and new is not old
    assert builder.calls == [WEST, WEST]
    assert all(old.version(t) == new.version(t) for t in PUSH_ORDER)
    await streams.close()


async def test_a_new_builder_forgets_identities_released_while_it_was_made() -> None:
    """The pipeline makes the next builder in a worker thread from the current one's state; an
    identity released meanwhile must not come back with it."""
    old_builder = ForgetfulBuilder()
    cache = SnapshotCache(old_builder, grace=0)
    streams = Streams(cache)
    stay = await streams.connect(WEST)
    await streams.leave(await streams.connect(EAST))
    carried = ForgetfulBuilder()
    carried.kept = dict(old_builder.kept)  # copied before EAST goes
    await until_true(lambda: EAST not in old_builder.identities(), "EAST to be released")
    cache.set_builder(carried)
    assert carried.identities() == {WEST} == cache.identities()
    assert streams.got[stay] is carried(WEST)
    await streams.close()


async def test_a_build_finishing_after_its_streams_left_is_released_too() -> None:
    import threading

    class HeldBack(ForgetfulBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()

        def __call__(self, identity: ProxyIdentity) -> Snapshot:
            self.release.wait(5)  # a big build, still running when its proxy leaves
            return super().__call__(identity)

    builder = HeldBack()
    cache = SnapshotCache(builder, grace=0)
    stream = asyncio.create_task(cache.snapshot(EAST))
    await asyncio.sleep(0.05)
    stream.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await stream
    await until_true(lambda: not cache.identities(), "EAST to be released")  # before the build ends
    builder.release.set()
    await until_true(lambda: builder.calls == [EAST] and not cache._pending, "the build to finish")
    # What the build left in the builder after the release is released in turn.
    await until_true(lambda: not builder.identities() and not cache.identities(), "EAST released again")


def test_a_synchronous_caller_does_not_hold_an_identity() -> None:
    builder = ForgetfulBuilder()
    cache = SnapshotCache(builder, grace=0)
    assert cache.snapshot_for(WEST) is not None
    assert cache.held() == frozenset()
    # No loop to time the grace period: the next call releases what is due.
    cache.snapshot_for(EAST)
    assert WEST not in cache.identities()


def test_replacing_one_type_equals_building_the_snapshot_afresh() -> None:
    before = mesh_snapshot(services=["web", "api"])
    moved = mesh_snapshot(services=["web", "api"], endpoint_port=9001)
    replaced = before.replacing(TYPE_ENDPOINT, moved.get(TYPE_ENDPOINT))
    fresh = Snapshot(resources={**before.resources, TYPE_ENDPOINT: moved.get(TYPE_ENDPOINT)})
    for type_url in PUSH_ORDER:
        assert replaced.version(type_url) == fresh.version(type_url)
        assert dict(replaced.get(type_url)) == dict(fresh.get(type_url))
    assert replaced.get(TYPE_CLUSTER) is before.get(TYPE_CLUSTER)  # shared, not copied
    assert replaced.changed_since(before, TYPE_ENDPOINT) == {WEB, cluster_name("api")}
    assert replaced.changed_since(before, TYPE_CLUSTER) == frozenset()
    with pytest.raises(ValueError, match="filed as"):
        before.replacing(TYPE_ENDPOINT, {"other": moved.get(TYPE_ENDPOINT)[WEB]})
