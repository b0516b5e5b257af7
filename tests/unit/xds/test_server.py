"""XdsServer over real gRPC on 127.0.0.1: a grpc.aio client plays Envoy (SotW and Delta)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.cluster.v3 import cds_pb2_grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from xds_protos import cluster_name, eds_cluster, load_assignment, mesh_snapshot, node

from meshxds.identity import ProxyIdentity
from meshxds.metrics import Metrics
from meshxds.xds.cache import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, Snapshot, SnapshotCache
from meshxds.xds.registry import ConnectionRegistry
from meshxds.xds.server import XdsServer
from meshxds.xds.stream import NACK_LOG_BURST, NACK_LOG_INTERVAL, NACK_MESSAGE_LIMIT

WEB, API, DB = cluster_name("web"), cluster_name("api"), cluster_name("db")
READ_TIMEOUT = 5.0

Req = TypeVar("Req")
Resp = TypeVar("Resp")


async def eventually(predicate: Callable[[], Any], *, timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` on the loop (so the server keeps running) until truthy; bounded."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.01) + 1):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Stream(Generic[Req, Resp]):
    """One bidi xDS call with bounded reads."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def send(self, request: Req) -> None:
        await asyncio.wait_for(self.call.write(request), READ_TIMEOUT)

    async def recv(self) -> Resp:
        response = await asyncio.wait_for(self.call.read(), READ_TIMEOUT)
        assert response is not grpc.aio.EOF, "stream ended"
        return response  # type: ignore[no-any-return]

    async def exchange(self, request: Req) -> Resp:
        await self.send(request)
        return await self.recv()


SotwStream = Stream[discovery_pb2.DiscoveryRequest, discovery_pb2.DiscoveryResponse]
DeltaStream = Stream[discovery_pb2.DeltaDiscoveryRequest, discovery_pb2.DeltaDiscoveryResponse]


@dataclass
class Harness:
    cache: SnapshotCache
    registry: ConnectionRegistry
    server: XdsServer
    channel: grpc.aio.Channel
    port: int
    builds: list[ProxyIdentity]

    def serve(self, snapshot: Snapshot) -> None:
        """A new configuration generation serving ``snapshot`` to every proxy."""

        def build(identity: ProxyIdentity) -> Snapshot:
            self.builds.append(identity)
            return snapshot

        self.cache.set_builder(build)

    def ads(self) -> SotwStream:
        return Stream(ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).StreamAggregatedResources())

    def delta(self) -> DeltaStream:
        return Stream(ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).DeltaAggregatedResources())

    def types(self, node_id: str = "proxy-1") -> dict[str, dict[str, Any]]:
        for record in self.registry.syncz():
            if record["node_id"] == node_id:
                return record["types"]  # type: ignore[no-any-return]
        return {}


@pytest.fixture
async def xds() -> AsyncIterator[Harness]:
    cache, registry = SnapshotCache(), ConnectionRegistry()
    server = XdsServer(cache, registry)
    port = await server.start("127.0.0.1:0")
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(cache, registry, server, channel, port, [])
    finally:
        await channel.close()
        await server.stop(0)


def sotw(
    type_url: str,
    names: Sequence[str] = (),
    *,
    ack: discovery_pb2.DiscoveryResponse | None = None,
    nonce: str | None = None,
    error: str | None = None,
    first: bool = False,
) -> discovery_pb2.DiscoveryRequest:
    request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)
    if ack is not None:
        request.response_nonce, request.version_info = ack.nonce, ack.version_info
    if nonce is not None:
        request.response_nonce = nonce
    if error is not None:
        request.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
    if first:
        request.node.CopyFrom(node("proxy-1", namespace="ns", app="gw"))
    return request


_MESSAGES = {
    TYPE_CLUSTER: cluster_pb2.Cluster,
    TYPE_ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    TYPE_LISTENER: listener_pb2.Listener,
    TYPE_ROUTE: route_pb2.RouteConfiguration,
}


def names_of(response: discovery_pb2.DiscoveryResponse | discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    if isinstance(response, discovery_pb2.DeltaDiscoveryResponse):
        return [r.name for r in response.resources]
    names = []
    for packed in response.resources:
        message = _MESSAGES[packed.type_url].FromString(packed.value)
        names.append(message.cluster_name if packed.type_url == TYPE_ENDPOINT else message.name)
    return names


async def connect_sotw(
    xds: Harness, snapshot: Snapshot
) -> tuple[SotwStream, dict[str, discovery_pb2.DiscoveryResponse]]:
    """Envoy's start over ADS: CDS, EDS, LDS, RDS, each acked."""
    xds.serve(snapshot)
    ads = xds.ads()
    last = {TYPE_CLUSTER: await ads.exchange(sotw(TYPE_CLUSTER, first=True))}
    await ads.send(sotw(TYPE_CLUSTER, ack=last[TYPE_CLUSTER]))
    for type_url, names in (
        (TYPE_ENDPOINT, sorted(snapshot.names(TYPE_ENDPOINT))),
        (TYPE_LISTENER, []),
        (TYPE_ROUTE, sorted(snapshot.names(TYPE_ROUTE))),
    ):
        last[type_url] = await ads.exchange(sotw(type_url, names))
        await ads.send(sotw(type_url, names, ack=last[type_url]))
    await eventually(
        lambda: all(t["state"] == "SYNCED" for t in xds.types().values()) and len(xds.types()) == 4
    )
    return ads, last


# --- SotW ---------------------------------------------------------------------------------------


async def test_sotw_ack_is_recorded_per_type(xds: Harness) -> None:
    snapshot = mesh_snapshot(services=["web", "api"])
    _, last = await connect_sotw(xds, snapshot)
    assert names_of(last[TYPE_CLUSTER]) == [API, WEB]
    assert last[TYPE_CLUSTER].version_info == snapshot.version(TYPE_CLUSTER)
    (record,) = xds.registry.syncz()
    assert (record["namespace"], record["labels"], record["mode"]) == ("ns", {"app": "gw"}, "sotw")
    for type_url, response in last.items():
        assert record["types"][type_url]["version_acked"] == response.version_info
    assert xds.builds == [ProxyIdentity.of(namespace="ns", labels={"app": "gw"})]


async def test_sotw_nack_is_recorded_with_the_message_and_acked_version_kept(xds: Harness) -> None:
    ads, last = await connect_sotw(xds, mesh_snapshot())
    xds.serve(mesh_snapshot(listeners={8080: "web", 8081: "web"}))
    bad = await ads.recv()
    assert bad.type_url == TYPE_LISTENER
    await ads.send(
        sotw(TYPE_LISTENER, ack=last[TYPE_LISTENER], nonce=bad.nonce, error="address already in use")
    )
    status = await eventually(
        lambda: xds.types()[TYPE_LISTENER]["state"] == "NACKED" and xds.types()[TYPE_LISTENER]
    )
    assert status["last_nack"] == "address already in use"
    assert status["version_acked"] == last[TYPE_LISTENER].version_info
    assert status["version_sent"] == bad.version_info


async def test_sotw_stale_nonce_is_ignored(xds: Harness) -> None:
    xds.serve(mesh_snapshot(services=["web"]))
    ads = xds.ads()
    first = await ads.exchange(sotw(TYPE_CLUSTER, first=True))
    xds.serve(mesh_snapshot(services=["web", "api"]))  # not sent: the client has not answered
    await ads.send(sotw(TYPE_CLUSTER, nonce="stale-nonce"))
    await ads.send(sotw(TYPE_CLUSTER, nonce="another", error="late NACK"))
    second = await ads.exchange(sotw(TYPE_CLUSTER, ack=first))
    # The very next response answers the real ACK: nothing answered the stale requests.
    assert int(second.nonce) == int(first.nonce) + 1
    assert names_of(second) == [API, WEB]
    assert xds.types()[TYPE_CLUSTER]["last_nack"] is None


async def test_sotw_snapshot_change_pushes_only_changed_types(xds: Harness) -> None:
    ads, _ = await connect_sotw(xds, mesh_snapshot())
    xds.serve(mesh_snapshot(route_prefix="/v2"))
    routes = await ads.recv()
    assert routes.type_url == TYPE_ROUTE
    await ads.send(sotw(TYPE_ROUTE, ["http.8080"], ack=routes))
    xds.serve(mesh_snapshot(route_prefix="/v2", endpoint_port=9001))
    # Had the first change pushed anything else, it would be read here before the endpoints.
    endpoints = await ads.recv()
    assert endpoints.type_url == TYPE_ENDPOINT
    assert int(endpoints.nonce) == int(routes.nonce) + 1


async def test_sotw_cluster_removal_waits_for_routes(xds: Harness) -> None:
    ads, last = await connect_sotw(xds, mesh_snapshot(services=["web", "api"], listeners={8080: "api"}))
    xds.serve(mesh_snapshot(services=["web", "db"], listeners={8080: "db"}))
    cds = await ads.recv()
    rds = await ads.recv()
    assert (cds.type_url, names_of(cds)) == (TYPE_CLUSTER, [API, DB, WEB])
    assert rds.type_url == TYPE_ROUTE
    await ads.send(sotw(TYPE_CLUSTER, ack=cds))
    eds = await ads.exchange(sotw(TYPE_ENDPOINT, [WEB, API, DB], ack=last[TYPE_ENDPOINT]))
    assert names_of(eds) == [API, DB, WEB]
    await ads.send(sotw(TYPE_ENDPOINT, [WEB, API, DB], ack=eds))
    await ads.send(sotw(TYPE_ROUTE, ["http.8080"], ack=rds))
    final = await ads.recv()
    assert (final.type_url, names_of(final)) == (TYPE_CLUSTER, [DB, WEB])


async def test_ads_request_without_type_url_is_invalid_argument(xds: Harness) -> None:
    xds.serve(mesh_snapshot())
    ads = xds.ads()
    await ads.send(discovery_pb2.DiscoveryRequest(node=node("proxy-1")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(ads.call.read(), READ_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await eventually(lambda: xds.registry.syncz() == [], what="the stream to unregister")


async def test_a_request_before_any_configuration_is_answered_once_there_is_one(xds: Harness) -> None:
    ads = xds.ads()
    await ads.send(sotw(TYPE_CLUSTER, first=True))
    await eventually(lambda: xds.types(), what="the stream to register")
    xds.serve(mesh_snapshot())
    assert names_of(await ads.recv()) == [WEB]


async def test_per_type_service_streams_one_type(xds: Harness) -> None:
    xds.serve(mesh_snapshot(services=["web", "api"]))
    cds: SotwStream = Stream(cds_pb2_grpc.ClusterDiscoveryServiceStub(xds.channel).StreamClusters())
    response = await cds.exchange(discovery_pb2.DiscoveryRequest(node=node("proxy-1")))
    assert (response.type_url, names_of(response)) == (TYPE_CLUSTER, [API, WEB])
    fetched = await asyncio.wait_for(
        cds_pb2_grpc.ClusterDiscoveryServiceStub(xds.channel).FetchClusters(
            discovery_pb2.DiscoveryRequest(node=node("proxy-2"))
        ),
        READ_TIMEOUT,
    )
    assert fetched.version_info == response.version_info and names_of(fetched) == [API, WEB]


async def test_disconnect_unregisters_and_cancels_the_stream_tasks(xds: Harness) -> None:
    ads, _ = await connect_sotw(xds, mesh_snapshot())
    assert any(t.get_name().startswith("xds-read-") for t in asyncio.all_tasks())
    ads.call.cancel()
    await eventually(lambda: xds.registry.syncz() == [], what="the stream to unregister")
    await eventually(
        lambda: not any(t.get_name().startswith("xds-read-") for t in asyncio.all_tasks()),
        what="the stream tasks to end",
    )


# --- Delta --------------------------------------------------------------------------------------


async def test_delta_initial_versions_removed_resources_and_ack(xds: Harness) -> None:
    snapshot = mesh_snapshot(services=["web", "api"])
    xds.serve(snapshot)
    delta = xds.delta()
    held = {WEB: snapshot.resources[TYPE_CLUSTER][WEB].version, "gone": "v0"}
    request = discovery_pb2.DeltaDiscoveryRequest(
        node=node("proxy-1", namespace="ns"), type_url=TYPE_CLUSTER, initial_resource_versions=held
    )
    first = await delta.exchange(request)
    assert names_of(first) == [API]
    assert list(first.removed_resources) == ["gone"]
    assert first.resources[0].version == snapshot.resources[TYPE_CLUSTER][API].version
    assert first.system_version_info == snapshot.version(TYPE_CLUSTER)
    await delta.send(discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_CLUSTER, response_nonce=first.nonce))
    await eventually(lambda: xds.types().get(TYPE_CLUSTER, {}).get("state") == "SYNCED")
    assert xds.registry.syncz()[0]["mode"] == "delta"

    xds.serve(mesh_snapshot(services=["web"]))
    removal = await delta.recv()
    assert (names_of(removal), list(removal.removed_resources)) == ([], [API])
    await delta.send(
        discovery_pb2.DeltaDiscoveryRequest(
            type_url=TYPE_CLUSTER,
            response_nonce=removal.nonce,
            error_detail=status_pb2.Status(code=3, message="nope"),
        )
    )
    status = await eventually(
        lambda: xds.types()[TYPE_CLUSTER]["state"] == "NACKED" and xds.types()[TYPE_CLUSTER]
    )
    assert (status["last_nack"], status["version_acked"]) == ("nope", first.system_version_info)


async def test_delta_cluster_removal_after_routes_are_acked(xds: Harness) -> None:
    xds.serve(mesh_snapshot(services=["web", "api"], listeners={8080: "api"}))
    delta = xds.delta()

    async def subscribe_and_ack(type_url: str, names: Sequence[str], **extra: Any) -> None:
        response = await delta.exchange(
            discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=names, **extra)
        )
        await delta.send(
            discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=response.nonce)
        )

    await subscribe_and_ack(TYPE_CLUSTER, [], node=node("proxy-1"))
    await subscribe_and_ack(TYPE_ENDPOINT, [WEB, API])
    await subscribe_and_ack(TYPE_LISTENER, [])
    await subscribe_and_ack(TYPE_ROUTE, ["http.8080"])
    await eventually(
        lambda: len(xds.types()) == 4 and all(t["state"] == "SYNCED" for t in xds.types().values())
    )

    xds.serve(mesh_snapshot(services=["web"], listeners={8080: "web"}))
    routes = await delta.recv()
    assert (routes.type_url, list(routes.removed_resources)) == (TYPE_ROUTE, [])
    await delta.send(discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_ROUTE, response_nonce=routes.nonce))
    clusters = await delta.recv()
    assert (clusters.type_url, list(clusters.removed_resources)) == (TYPE_CLUSTER, [API])


# --- health -------------------------------------------------------------------------------------


async def test_health_serving_then_not_serving_on_stop(xds: Harness) -> None:
    stub = health_pb2_grpc.HealthStub(xds.channel)
    check = await asyncio.wait_for(stub.Check(health_pb2.HealthCheckRequest(service="")), READ_TIMEOUT)
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    ads_health = await asyncio.wait_for(
        stub.Check(
            health_pb2.HealthCheckRequest(service="envoy.service.discovery.v3.AggregatedDiscoveryService")
        ),
        READ_TIMEOUT,
    )
    assert ads_health.status == health_pb2.HealthCheckResponse.SERVING
    watch = stub.Watch(health_pb2.HealthCheckRequest(service=""))
    first = await asyncio.wait_for(watch.read(), READ_TIMEOUT)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.create_task(xds.server.stop(2.0))
    changed = await asyncio.wait_for(watch.read(), READ_TIMEOUT)
    assert changed.status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()
    await asyncio.wait_for(stopping, READ_TIMEOUT)


# --- many streams at once, limits ---------------------------------------------------------------

FLEET = 2_000
FLEET_CHANNELS = 50  # 40 streams per TCP connection
FLEET_TIMEOUT = 60.0


@dataclass
class Fleet:
    """Outcome of ``FLEET`` proxies connecting at once."""

    synced: list[list[str]]
    """Per proxy that got both responses: the names received (CDS, then EDS)."""
    failed: list[BaseException]


async def _one_proxy(stub: Any, mode: str, index: int, fleet: Fleet, release: asyncio.Event) -> None:
    """Envoy's first two requests (CDS, then EDS) on one ADS stream, kept open until ``release``."""
    proxy = node(f"proxy-{index}", namespace="ns", app="gw")
    try:
        if mode == "delta":
            call = stub.DeltaAggregatedResources()
            await call.write(discovery_pb2.DeltaDiscoveryRequest(node=proxy, type_url=TYPE_CLUSTER))
            cds = await call.read()
            await call.write(
                discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_CLUSTER, response_nonce=cds.nonce)
            )
            await call.write(
                discovery_pb2.DeltaDiscoveryRequest(type_url=TYPE_ENDPOINT, resource_names_subscribe=[WEB])
            )
        else:
            call = stub.StreamAggregatedResources()
            await call.write(discovery_pb2.DiscoveryRequest(node=proxy, type_url=TYPE_CLUSTER))
            cds = await call.read()
            await call.write(sotw(TYPE_CLUSTER, ack=cds))
            await call.write(sotw(TYPE_ENDPOINT, [WEB]))
        eds = await call.read()
        assert cds is not grpc.aio.EOF and eds is not grpc.aio.EOF, "stream ended"
        fleet.synced.append([*names_of(cds), *names_of(eds)])
    except Exception as exc:
        fleet.failed.append(exc)
        return
    await release.wait()  # every stream stays open until all have their responses
    call.cancel()


async def _connect_fleet(xds: Harness, mode: str) -> Fleet:
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{xds.port}") for _ in range(FLEET_CHANNELS)]
    stubs = [ads_pb2_grpc.AggregatedDiscoveryServiceStub(c) for c in channels]
    fleet, release = Fleet([], []), asyncio.Event()
    tasks = [
        asyncio.create_task(_one_proxy(stubs[i % FLEET_CHANNELS], mode, i, fleet, release))
        for i in range(FLEET)
    ]
    try:
        await eventually(
            lambda: len(fleet.synced) + len(fleet.failed) == FLEET, timeout=FLEET_TIMEOUT, what="every proxy"
        )
        assert len(xds.registry.syncz()) == len(fleet.synced)  # all open at once
    finally:
        release.set()
        await asyncio.wait(tasks, timeout=READ_TIMEOUT)
        for task in tasks:
            task.cancel()
        for channel in channels:
            await channel.close()
    return fleet


@pytest.mark.parametrize("mode", ["delta", "sotw"])
async def test_two_thousand_proxies_connecting_at_once_all_get_their_config(xds: Harness, mode: str) -> None:
    # grpc's default grpc.server.max_pending_requests (1000) cancelled some of these streams.
    xds.serve(mesh_snapshot(services=["web", "api"]))
    started = time.monotonic()
    fleet = await _connect_fleet(xds, mode)
    assert fleet.failed == []
    assert len(fleet.synced) == FLEET
    assert all(names == [API, WEB, WEB] for names in fleet.synced)
    assert len(xds.builds) == 1  # one snapshot for the one identity
    assert time.monotonic() - started < FLEET_TIMEOUT


async def test_a_request_over_the_receive_limit_is_refused_and_fetch_answers_in_full() -> None:
    cache, registry = SnapshotCache(), ConnectionRegistry()
    server = XdsServer(cache, registry, max_receive_message_length=4096)
    port = await server.start("127.0.0.1:0")
    snapshot = mesh_snapshot(services=["web", "api"])
    cache.set_builder(lambda identity: snapshot)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            ads: SotwStream = Stream(
                ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            )
            huge = sotw(TYPE_ENDPOINT, [f"cluster-{i:05d}" for i in range(1000)], first=True)
            await ads.send(huge)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await asyncio.wait_for(ads.call.read(), READ_TIMEOUT)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # The unary fetch is written through the same bytes path: a complete response.
            fetched = await asyncio.wait_for(
                cds_pb2_grpc.ClusterDiscoveryServiceStub(channel).FetchClusters(
                    discovery_pb2.DiscoveryRequest(node=node("proxy-2"))
                ),
                READ_TIMEOUT,
            )
            assert fetched.type_url == TYPE_CLUSTER and fetched.nonce
            assert fetched.version_info == snapshot.version(TYPE_CLUSTER)
            assert list(fetched.resources) == [snapshot.get(TYPE_CLUSTER)[n].any for n in (API, WEB)]
    finally:
        await server.stop(0)


# --- bounded client input -----------------------------------------------------------------------

HUGE = 3_900_000  # the size of the NACK message that once wrote 78 MB of log in 1.6 s


def nack_records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("NACK")]


@contextlib.asynccontextmanager
async def metered_server() -> AsyncIterator[tuple[Harness, Metrics]]:
    """A server with the Prometheus observer, as ``meshxds serve`` runs it."""
    cache, registry, metrics = SnapshotCache(), ConnectionRegistry(), Metrics()
    server = XdsServer(cache, registry, observers=[metrics])
    port = await server.start("127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield Harness(cache, registry, server, channel, port, []), metrics
    finally:
        await server.stop(0)


async def test_a_huge_nack_message_is_truncated_in_the_log_and_in_syncz(
    xds: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="meshxds.xds")
    ads, last = await connect_sotw(xds, mesh_snapshot())
    xds.serve(mesh_snapshot(listeners={8080: "web", 8081: "web"}))
    bad = await ads.recv()
    message = "address already in use " + "x" * HUGE
    await ads.send(sotw(TYPE_LISTENER, ack=last[TYPE_LISTENER], nonce=bad.nonce, error=message))
    status = await eventually(
        lambda: xds.types()[TYPE_LISTENER]["state"] == "NACKED" and xds.types()[TYPE_LISTENER]
    )
    marker = f"... [truncated, {len(message)} characters in all]"
    assert status["last_nack"] == message[:NACK_MESSAGE_LIMIT] + marker
    assert len(json.dumps(xds.registry.syncz())) < 2 * NACK_MESSAGE_LIMIT
    (line,) = await eventually(lambda: nack_records(caplog), what="the NACK log line")
    assert "address already in use xxx" in line and line.endswith(marker)
    assert len(line) < NACK_MESSAGE_LIMIT + 512


async def test_a_nack_storm_is_logged_within_a_budget_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="meshxds.xds")
    storm = 3 * NACK_LOG_BURST
    started = time.monotonic()
    async with metered_server() as (xds, metrics):
        ads, _ = await connect_sotw(xds, mesh_snapshot())
        # Each request NACKs the latest EDS response (100 KB of error) and asks for other
        # names, so it gets a new response to NACK: a NACK per round trip.
        response = await ads.exchange(sotw(TYPE_ENDPOINT, [WEB, "other"]))
        for index in range(storm):
            names = [WEB] if index % 2 == 0 else [WEB, "other"]
            request = sotw(TYPE_ENDPOINT, names, nonce=response.nonce, error=f"e{index} " + "x" * 100_000)
            response = await ads.exchange(request)
        elapsed = time.monotonic() - started
        await eventually(
            lambda: (
                metrics.registry.get_sample_value("meshxds_xds_nacks_total", {"type_url": TYPE_ENDPOINT})
                == storm
            ),
            what="every NACK to be counted",
        )
        ads.call.cancel()
        await eventually(lambda: xds.registry.syncz() == [], what="the stream to close")
    lines = nack_records(caplog)
    logged = [line for line in lines if line.startswith("NACK node=")]
    # The budget: a burst, then one line per interval (however slowly this machine ran).
    assert NACK_LOG_BURST <= len(logged) <= NACK_LOG_BURST + int(elapsed / NACK_LOG_INTERVAL) + 1
    suppressed = [int(m) for line in lines for m in re.findall(r"suppressed=(\d+)", line)]
    (summary,) = [line for line in lines if line.startswith("NACK lines suppressed")]
    assert "node=proxy-1 type=ClusterLoadAssignment" in summary and "stream closed" in summary
    assert len(logged) + sum(suppressed) == storm  # every NACK is either logged or counted
    assert sum(len(line) for line in lines) < (len(logged) + 1) * (NACK_MESSAGE_LIMIT + 512)


def _metadata(**fields: object) -> base_pb2.Node:
    proxy = base_pb2.Node(id="proxy-1")
    proxy.metadata.update(fields)
    return proxy


_MALFORMED_NODES = [
    pytest.param(None, "the first request of a stream must carry node", id="no-node"),
    pytest.param(
        _metadata(labels="app=gw"), "labels must be a map of strings, not a string", id="labels-not-a-map"
    ),
    pytest.param(
        _metadata(namespace="ns", labels={"app": "gw", "version": 2}),
        "labels['version'] must be a string (quote it), not a number",
        id="label-value-not-a-string",
    ),
    pytest.param(
        _metadata(namespace=["ns"]), "namespace must be a string, not a list", id="namespace-not-a-string"
    ),
    pytest.param(base_pb2.Node(), "node.id is empty", id="no-node-id"),
]


@pytest.mark.parametrize(("proxy", "details"), _MALFORMED_NODES)
@pytest.mark.parametrize("mode", ["sotw", "delta", "fetch"])
async def test_a_missing_or_malformed_node_is_invalid_argument_not_the_sidecar_config(
    xds: Harness, mode: str, proxy: base_pb2.Node | None, details: str
) -> None:
    xds.serve(mesh_snapshot())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if mode == "fetch":
            request = discovery_pb2.DiscoveryRequest(node=proxy)
            stub = cds_pb2_grpc.ClusterDiscoveryServiceStub(xds.channel)
            await asyncio.wait_for(stub.FetchClusters(request), READ_TIMEOUT)
        else:
            call = xds.ads().call if mode == "sotw" else xds.delta().call
            message = (
                discovery_pb2.DiscoveryRequest if mode == "sotw" else discovery_pb2.DeltaDiscoveryRequest
            )
            await asyncio.wait_for(call.write(message(type_url=TYPE_CLUSTER, node=proxy)), READ_TIMEOUT)
            # No response comes first: the stream ends with the error.
            await asyncio.wait_for(call.read(), READ_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details in (caught.value.details() or "")
    assert xds.builds == []  # no snapshot was computed for anyone
    await eventually(lambda: xds.registry.syncz() == [], what="the stream to unregister")


# --- slow readers -------------------------------------------------------------------------------


async def test_a_client_that_stops_reading_is_dropped_after_the_write_timeout_and_others_are_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cache, registry = SnapshotCache(), ConnectionRegistry()
    server = XdsServer(cache, registry, write_timeout=0.5)
    port = await server.start("127.0.0.1:0")
    # A response larger than everything between the two (HTTP/2 windows, grpc's buffers, the
    # sockets' buffers): a client that never reads blocks the write.
    cluster = eds_cluster(WEB)
    cluster.alt_stat_name = "x" * 64_000_000
    big = Snapshot.from_messages(
        {TYPE_CLUSTER: [(WEB, cluster)], TYPE_ENDPOINT: [(WEB, load_assignment(WEB, 9000))]}
    )
    cache.set_builder(lambda identity: big)
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as stuck_channel,
            grpc.aio.insecure_channel(
                f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", -1)]
            ) as channel,
        ):
            stuck: SotwStream = Stream(
                ads_pb2_grpc.AggregatedDiscoveryServiceStub(stuck_channel).StreamAggregatedResources()
            )
            with caplog.at_level(logging.WARNING, logger="meshxds.xds.server"):
                await stuck.send(sotw(TYPE_CLUSTER, first=True))  # ... and never reads
                started = time.monotonic()
                await eventually(lambda: len(registry.syncz()) == 1, what="the stream to open")
                await eventually(lambda: registry.syncz() == [], what="the stuck stream to be dropped")
            # The watchdog wakes every write_timeout / 4: dropped between 0.5 and ~0.75 s.
            assert 0.4 < time.monotonic() - started < 3.0
            assert "write timed out" in caplog.text
            # grpc cannot end a call whose write is pending (no status may be sent until it is
            # read): the handler, its snapshot and its identity are released; the client learns
            # when it reads again or its connection goes. Meanwhile a client that reads is served.
            ads: SotwStream = Stream(
                ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
            )
            response = await ads.exchange(sotw(TYPE_CLUSTER, first=True))
            assert names_of(response) == [WEB]
            stuck.call.cancel()
    finally:
        await server.stop(0)
