"""XdsServer against the real Envoy, over ADS SotW (GRPC) and Delta (DELTA_GRPC).

The server runs in the test's event loop; every blocking admin call of Envoy goes through
``asyncio.to_thread`` so the server keeps answering while we wait. Envoy gets hand-built
snapshots: it syncs, NACKs an invalid cluster and keeps its old config, then drops a cluster.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import Message

from meshxds.testing.envoy import EnvoyProcess, render_bootstrap
from meshxds.testing.ports import free_port
from meshxds.xds.cache import (
    TYPE_CLUSTER,
    TYPE_ENDPOINT,
    TYPE_LISTENER,
    TYPE_ROUTE,
    Snapshot,
    SnapshotCache,
)
from meshxds.xds.registry import ConnectionRegistry
from meshxds.xds.server import XdsServer

T = TypeVar("T")
TIMEOUT = 15.0
NODE_ID = "gateway-1"


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def _address(port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address="127.0.0.1", port_value=port))


def cluster_name(service: str) -> str:
    return f"outbound|80||{service}.default.svc.cluster.local"


def build_snapshot(
    *, services: Iterable[str], route_to: str, listener_port: int, broken_cluster: bool = False
) -> Snapshot:
    """EDS clusters (endpoints on unused loopback ports), one listener whose route picks ``route_to``."""
    clusters: list[tuple[str, Message]] = []
    endpoints: list[tuple[str, Message]] = []
    for index, service in enumerate(sorted(services)):
        name = cluster_name(service)
        cluster = cluster_pb2.Cluster(
            name=name, type=cluster_pb2.Cluster.EDS, connect_timeout=duration_pb2.Duration(seconds=1)
        )
        cluster.eds_cluster_config.eds_config.CopyFrom(_ads())
        clusters.append((name, cluster))
        lb_endpoint = endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=_address(19900 + index))
        )
        endpoints.append(
            (
                name,
                endpoint_pb2.ClusterLoadAssignment(
                    cluster_name=name,
                    endpoints=[endpoint_components_pb2.LocalityLbEndpoints(lb_endpoints=[lb_endpoint])],
                ),
            )
        )
    if broken_cluster:
        # Envoy has no transport socket of this name: it rejects the cluster (a NACK).
        broken = cluster_pb2.Cluster(
            name="broken",
            type=cluster_pb2.Cluster.STATIC,
            connect_timeout=duration_pb2.Duration(seconds=1),
        )
        broken.transport_socket.name = "meshxds.test.no_such_transport_socket"
        broken.transport_socket.typed_config.CopyFrom(_pack(struct_pb2.Struct()))
        clusters.append(("broken", broken))
    route_name = f"http.{listener_port}"
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="ingress", rds=hcm_pb2.Rds(config_source=_ads(), route_config_name=route_name)
    )
    hcm.http_filters.add(name="envoy.filters.http.router").typed_config.CopyFrom(_pack(router_pb2.Router()))
    chain = listener_components_pb2.FilterChain()
    chain.filters.add(name="envoy.filters.network.http_connection_manager").typed_config.CopyFrom(_pack(hcm))
    listener_name = f"0.0.0.0_{listener_port}"
    listener = listener_pb2.Listener(
        name=listener_name, address=_address(listener_port), filter_chains=[chain]
    )
    route = route_pb2.RouteConfiguration(
        name=route_name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name="all",
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix="/"),
                        route=route_components_pb2.RouteAction(cluster=cluster_name(route_to)),
                    )
                ],
            )
        ],
    )
    return Snapshot.from_messages(
        {
            TYPE_CLUSTER: clusters,
            TYPE_ENDPOINT: endpoints,
            TYPE_LISTENER: [(listener_name, listener)],
            TYPE_ROUTE: [(route_name, route)],
        }
    )


@dataclass
class Setup:
    cache: SnapshotCache
    registry: ConnectionRegistry
    envoy: EnvoyProcess
    listener_port: int

    def serve(self, snapshot: Snapshot) -> None:
        self.cache.set_builder(lambda identity: snapshot)

    def types(self) -> Mapping[str, dict[str, Any]]:
        records = [r for r in self.registry.syncz() if r["node_id"] == NODE_ID]
        return records[-1]["types"] if records else {}

    async def envoy_until(self, predicate: Callable[[], T], what: str) -> T:
        """Poll Envoy's admin API in a thread (bounded) while the server keeps serving."""
        return await asyncio.to_thread(self.envoy.wait_for, predicate, timeout=TIMEOUT, what=what)

    async def registry_until(
        self, predicate: Callable[[Mapping[str, dict[str, Any]]], bool], what: str
    ) -> None:
        deadline = time.monotonic() + TIMEOUT
        for _ in range(int(TIMEOUT / 0.05) + 1):
            if predicate(self.types()):
                return
            if time.monotonic() > deadline or not self.envoy.running:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"registry never showed {what}: {self.types()}\n{self.envoy.log_tail(40)}")


@pytest.fixture(params=[False, True], ids=["sotw", "delta"])
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    cache, registry = SnapshotCache(), ConnectionRegistry()
    server = XdsServer(cache, registry)
    xds_port = await server.start("127.0.0.1:0")
    bootstrap = render_bootstrap(
        node_id=NODE_ID,
        namespace="edge",
        labels={"app": "gateway"},
        xds_port=xds_port,
        admin_port=free_port(),
        delta=request.param,
    )
    envoy = EnvoyProcess(bootstrap, log_level="warning")
    try:
        envoy.start()
        yield Setup(cache, registry, envoy, free_port())
    finally:
        # By PID: SIGTERM, a bounded wait, then SIGKILL.
        await asyncio.to_thread(envoy.stop)
        await server.stop(0)


def synced_at(snapshot: Snapshot) -> Callable[[Mapping[str, dict[str, Any]]], bool]:
    """Every subscribed type SYNCED; CDS and LDS acked at the snapshot's versions."""

    def check(types: Mapping[str, dict[str, Any]]) -> bool:
        expected = {TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE}
        return (
            expected <= types.keys()
            and all(t["state"] == "SYNCED" for t in types.values())
            and all(types[t]["version_acked"] == snapshot.version(t) for t in (TYPE_CLUSTER, TYPE_LISTENER))
        )

    return check


async def test_envoy_syncs_nacks_and_removes_clusters(setup: Setup) -> None:
    envoy, port = setup.envoy, setup.listener_port
    web, api = cluster_name("web"), cluster_name("api")
    first = build_snapshot(services=["web", "api"], route_to="api", listener_port=port)
    setup.serve(first)
    await asyncio.to_thread(envoy.wait_ready, TIMEOUT)
    await setup.envoy_until(lambda: envoy.cluster_names() == sorted([web, api]), "both clusters")
    await setup.envoy_until(lambda: envoy.listener_names() == [f"0.0.0.0_{port}"], "the listener")
    await setup.envoy_until(lambda: envoy.route_config_names() == [f"http.{port}"], "the route")
    await setup.registry_until(synced_at(first), "every type SYNCED")
    (record,) = setup.registry.syncz()
    assert (record["namespace"], record["labels"]) == ("edge", {"app": "gateway"})

    # An invalid cluster: Envoy NACKs with its reason and keeps the clusters it had.
    setup.serve(
        build_snapshot(services=["web", "api"], route_to="api", listener_port=port, broken_cluster=True)
    )
    await setup.registry_until(lambda t: t[TYPE_CLUSTER]["state"] == "NACKED", "the CDS NACK")
    cds = setup.types()[TYPE_CLUSTER]
    assert "no_such_transport_socket" in cds["last_nack"]
    assert cds["version_acked"] == first.version(TYPE_CLUSTER)
    assert "broken" not in envoy.cluster_names()
    assert envoy.cluster_names() == sorted([web, api])

    # Drop `api` while the route moves to `web`: the route goes first, the cluster after.
    last = build_snapshot(services=["web"], route_to="web", listener_port=port)
    setup.serve(last)
    await setup.registry_until(synced_at(last), "every type SYNCED after the removal")
    await setup.envoy_until(lambda: envoy.cluster_names() == [web], "the cluster removal")
    assert setup.types()[TYPE_CLUSTER]["last_nack"] is not None  # history stays visible
    dump = await asyncio.to_thread(envoy.config_dump)
    routes = [
        d["route_config"]
        for c in dump["configs"]
        if c["@type"].endswith("RoutesConfigDump")
        for d in c.get("dynamic_route_configs", ())
    ]
    assert routes[0]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == web
