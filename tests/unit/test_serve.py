"""``meshxds serve`` as a whole, in-process on 127.0.0.1: what an edit pushes, to whom, and that
streams are served while a translation runs (a grpc.aio client plays Envoy, Delta xDS)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import struct_pb2

from meshxds.pipeline import Pipeline, SnapshotBuilder
from meshxds.serve import ServeOptions, Service
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs, to_yaml
from meshxds.translators.gatewayapi import GATEWAY_NAME_LABEL, TranslateOptions
from meshxds.xds.cache import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE

TIMEOUT = 10.0
WATCHED = (TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE)


def write(path: Path, docs: list[dict[str, Any]]) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(to_yaml(docs), encoding="utf-8")
    os.replace(scratch, path)


def service_docs(
    name: str, gateway: str, *, addresses: tuple[str, ...] = ("127.0.0.1",)
) -> list[dict[str, Any]]:
    docs = routed_service_docs(
        name, upstream_port=9000, hostnames=[f"{name}.example.com"], gateway=("gateway-system", gateway)
    )
    docs[1]["endpoints"] = [{"addresses": [a], "conditions": {"ready": True}} for a in addresses]
    return docs


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    write(tmp_path / "gateways.yaml", [
        *gateway_api_docs([gateway_listener(8080)], name="a"),
        *gateway_api_docs([gateway_listener(8081)], name="b")[1:],
    ])  # fmt: skip
    write(tmp_path / "svc-a.yaml", service_docs("svc-a", "a"))
    write(tmp_path / "svc-b.yaml", service_docs("svc-b", "b"))
    return tmp_path


@pytest.fixture
async def service(manifests: Path) -> AsyncIterator[Service]:
    svc = Service(
        ServeOptions(
            config_dir=str(manifests),
            xds_address="127.0.0.1:0",
            admin_address="127.0.0.1:0",
            translate=TranslateOptions(listener_address="127.0.0.1"),
            debounce_s=0.02,
            debounce_max_s=0.2,
            grace_s=0.5,
        )
    )
    task = asyncio.create_task(svc.run(), name="serve")
    await until(lambda: svc.state.ready, what="first configuration served")
    yield svc
    svc.stop()
    await asyncio.wait_for(task, TIMEOUT)


async def until(predicate: Callable[[], Any], *, what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Proxy:
    """A Delta ADS client of one gateway that ACKs everything and records what it received."""

    def __init__(self, port: int, gateway: str) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        self.gateway = gateway
        self.received: list[discovery_pb2.DeltaDiscoveryResponse] = []
        self._requests: asyncio.Queue[discovery_pb2.DeltaDiscoveryRequest | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def node(self) -> base_pb2.Node:
        result = base_pb2.Node(id=f"proxy-{self.gateway}", cluster="test")
        metadata = struct_pb2.Struct()
        metadata.update({"namespace": "gateway-system", "labels": {GATEWAY_NAME_LABEL: self.gateway}})
        result.metadata.CopyFrom(metadata)
        return result

    async def _outgoing(self) -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
        for type_url in WATCHED:
            yield discovery_pb2.DeltaDiscoveryRequest(node=self.node(), type_url=type_url)
        while (request := await self._requests.get()) is not None:
            yield request

    async def _run(self) -> None:
        call = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel).DeltaAggregatedResources(
            self._outgoing()
        )
        async for response in call:
            self.received.append(response)
            await self._requests.put(
                discovery_pb2.DeltaDiscoveryRequest(type_url=response.type_url, response_nonce=response.nonce)
            )

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"proxy-{self.gateway}")

    def types(self, since: int = 0) -> set[str]:
        return {r.type_url for r in self.received[since:]}

    def resources(self, since: int = 0) -> list[str]:
        return [res.name for r in self.received[since:] for res in r.resources]

    async def close(self) -> None:
        await self._requests.put(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self._task
        await self.channel.close()


async def synced(proxy: Proxy) -> None:
    await until(lambda: proxy.types() >= set(WATCHED), what=f"gateway {proxy.gateway} synced")


@pytest.fixture
async def proxies(service: Service) -> AsyncIterator[tuple[Proxy, Proxy]]:
    """One synced proxy of gateway a and one of gateway b."""
    a, b = Proxy(service.xds_port, "a"), Proxy(service.xds_port, "b")
    try:
        for proxy in (a, b):
            proxy.start()
            await synced(proxy)
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_an_endpoint_edit_sends_eds_only_and_only_to_that_gateways_proxies(
    service: Service, manifests: Path, proxies: tuple[Proxy, Proxy]
) -> None:
    a, b = proxies
    seen_a, seen_b = len(a.received), len(b.received)
    write(manifests / "svc-a.yaml", service_docs("svc-a", "a", addresses=("127.0.0.1", "127.0.0.2")))
    await until(lambda: len(a.received) > seen_a, what="the new endpoints at gateway a")
    await asyncio.sleep(0.3)  # anything else the edit would send has had time to arrive
    assert a.types(seen_a) == {TYPE_ENDPOINT}
    assert a.resources(seen_a) == ["outbound|8080||svc-a.default.svc.cluster.local"]
    assert len(b.received) == seen_b
    assert service.pipeline.fast_updates == 1


async def test_a_route_edit_reaches_only_that_gateways_proxies(
    service: Service, manifests: Path, proxies: tuple[Proxy, Proxy]
) -> None:
    a, b = proxies
    seen_a, seen_b = len(a.received), len(b.received)
    docs = service_docs("svc-a", "a")
    docs[2]["spec"]["hostnames"] = ["renamed.example.com"]
    write(manifests / "svc-a.yaml", docs)
    await until(lambda: TYPE_ROUTE in a.types(seen_a), what="the new route at gateway a")
    await asyncio.sleep(0.3)
    assert a.types(seen_a) == {TYPE_ROUTE}
    assert len(b.received) == seen_b


async def test_streams_are_served_from_the_last_snapshot_while_a_translation_runs(
    service: Service, manifests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    entered = threading.Event()
    update = Pipeline.update

    def slow_update(self: Pipeline, *args: Any, **kwargs: Any) -> SnapshotBuilder:
        entered.set()
        release.wait(TIMEOUT)  # a 10k-service translation, as far as the loop can tell
        return update(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "update", slow_update)
    docs = service_docs("svc-a", "a")
    docs[2]["spec"]["hostnames"] = ["renamed.example.com"]
    write(manifests / "svc-a.yaml", docs)
    await until(entered.is_set, what="the translation to start")
    proxy = Proxy(service.xds_port, "a")
    try:
        proxy.start()
        await synced(proxy)  # while the translation is still held
        assert not release.is_set()
        seen = len(proxy.received)
        release.set()
        await until(lambda: TYPE_ROUTE in proxy.types(seen), what="the new route after the translation")
    finally:
        release.set()
        await proxy.close()
