"""The Kubernetes source as the serving loop sees it: one complete read once every kind is listed,
then one read per debounced burst (100 ms after the last event, 1 s at most); a CRD installed
later is picked up; an invalid object is skipped and reported; after a cut watch, a 410 or an
outage, the read equals what a fresh list gives; statuses handed over are written back."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from meshxds.cli import main
from meshxds.conditions import ObjectStatus
from meshxds.errors import ManifestErrors
from meshxds.model import core, gatewayapi
from meshxds.model.manifests import KINDS, ResourceSet
from meshxds.sources.kube import KubeOptions, KubeSource, debounce, default_namespace, kube_options
from meshxds.sources.kube_store import KubeResourceSet
from meshxds.sources.kube_watch import WatchSettings
from meshxds.testing.fake_apiserver import FakeApiServer

GW = "gateway.networking.k8s.io"
FAST = WatchSettings(
    timeout_s=30, read_timeout_s=10, backoff_initial_s=0.05, backoff_max_s=0.5, discovery_interval_s=30
)


def service(name: str, port: int = 8080, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"port": port, "appProtocol": "http2"}]},
    }


def route(name: str, port: Any = 8080) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": name, "port": port}]}]},
    }


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval_s=0.2) as api:
        api.install_kinds(m for m in KINDS.values() if m.API_GROUP == GW)
        yield api


class Reads:
    """Collects what ``source.reads()`` yields, in a task."""

    def __init__(self, source: KubeSource) -> None:
        self.source = source
        self.stop = asyncio.Event()
        self.items: list[tuple[float, ResourceSet | ManifestErrors]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for read in self.source.reads(self.stop):
            self.items.append((time.monotonic(), read))

    @property
    def last(self) -> KubeResourceSet:
        read = self.items[-1][1]
        assert isinstance(read, KubeResourceSet)
        return read

    async def until(
        self, predicate: Callable[[KubeResourceSet], bool], what: str, timeout: float = 5.0
    ) -> KubeResourceSet:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.items and predicate(self.last):
                return self.last
            await asyncio.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; last read: {self.items[-1:]!r}")

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def reads(fake: FakeApiServer, tmp_path: Path) -> AsyncIterator[Callable[..., Reads]]:
    started: list[Reads] = []

    def start(**options: Any) -> Reads:
        kubeconfig = str(fake.write_kubeconfig(tmp_path / "kubeconfig"))
        source = KubeSource(KubeOptions(kubeconfig=kubeconfig, watch=FAST, **options))
        started.append(Reads(source))
        return started[-1]

    yield start
    for r in started:
        await r.close()


def names(read: ResourceSet, model: Any) -> list[str]:
    return [o.name for o in read.all(model)]


def refs(read: ResourceSet) -> set[str]:
    return {o.ref for o in read if not isinstance(o, core.Namespace)}


def fresh_refs(fake: FakeApiServer) -> set[str]:
    out = set()
    for group, kind in (("", "Service"), (GW, "HTTPRoute"), (GW, "Gateway")):
        for o in fake.objects(group, kind):
            out.add(f"{kind}/{o['metadata']['namespace']}/{o['metadata']['name']}")
    return out


async def test_debounce_waits_for_quiet_but_not_forever() -> None:
    changed = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await debounce(changed, quiet_s=0.1, max_s=1.0)
    assert 0.09 < loop.time() - started < 0.3

    async def keep_changing() -> None:
        while True:
            changed.set()
            await asyncio.sleep(0.03)

    ticker = asyncio.create_task(keep_changing())
    started = loop.time()
    await debounce(changed, quiet_s=0.1, max_s=1.0)
    ticker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await ticker
    assert 0.95 < loop.time() - started < 1.3


async def test_first_read_is_complete_and_absent_kinds_do_not_block_it(
    fake: FakeApiServer, reads: Any
) -> None:
    fake.apply(service("a"))
    fake.apply(route("a"))
    r = reads()
    first = await r.until(lambda read: True, "a first read")
    assert names(first, core.Service) == ["a"] and names(first, gatewayapi.HTTPRoute) == ["a"]
    assert first.origins["Service/default/a"] == "/api/v1/namespaces/default/services/a"
    assert len(r.items) == 1
    assert r.source.resource_of(KINDS[("gateway.kgateway.dev", "Backend")]) is None  # no CRD: absent
    assert r.source.resource_of(core.Service) is not None


async def test_a_burst_of_changes_becomes_one_read_100ms_after_the_last(
    fake: FakeApiServer, reads: Any
) -> None:
    r = reads()
    await r.until(lambda read: True, "a first read")
    count = len(r.items)
    for i in range(10):
        fake.apply(service(f"s{i}"))
        await asyncio.sleep(0.02)
    last_event = time.monotonic()
    read = await r.until(lambda read: len(names(read, core.Service)) == 10, "all ten")
    assert len(r.items) == count + 1
    delay = r.items[-1][0] - last_event
    assert 0.08 < delay < 0.5, delay
    assert names(read, core.Service) == sorted(f"s{i}" for i in range(10))


async def test_steady_changes_still_give_a_read_every_second(fake: FakeApiServer, reads: Any) -> None:
    r = reads()
    await r.until(lambda read: True, "a first read")
    count = len(r.items)
    started = time.monotonic()
    i = 0
    while time.monotonic() - started < 2.6:
        fake.apply(service("ticker", port=1000 + i))
        i += 1
        await asyncio.sleep(0.05)
    times = [t for t, _ in r.items[count:]]
    assert 2 <= len(times) <= 4, times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.9 < g < 1.3 for g in gaps), gaps


async def test_a_crd_installed_later_is_picked_up(fake: FakeApiServer, reads: Any) -> None:
    r = reads()
    await r.until(lambda read: True, "a first read")
    fake.install_crd("gateway.kgateway.dev", "Backend", versions=("v1alpha1",))
    fake.apply(
        {
            "apiVersion": "gateway.kgateway.dev/v1alpha1",
            "kind": "Backend",
            "metadata": {"name": "b", "namespace": "default"},
            "spec": {"type": "Static", "static": {"hosts": [{"host": "127.0.0.1", "port": 80}]}},
        }
    )
    started = time.monotonic()
    backend = KINDS[("gateway.kgateway.dev", "Backend")]
    await r.until(lambda read: names(read, backend) == ["b"], "the Backend", timeout=5)
    assert time.monotonic() - started < 2  # the CRD watch wakes discovery at once


async def test_an_invalid_object_is_skipped_and_reported(fake: FakeApiServer, reads: Any) -> None:
    fake.apply(service("good"))
    fake.apply(service("bad", port=99999))  # the fake does not check schemas; a real server would
    r = reads()
    read = await r.until(lambda read: True, "a first read")
    assert names(read, core.Service) == ["good"]
    (error,) = read.errors
    assert (error.path, error.ref, error.field_path) == (
        "/api/v1/namespaces/default/services/bad",
        "Service/default/bad",
        "spec.ports[0].port",
    )


async def test_after_cut_watches_410_and_an_outage_a_read_equals_a_fresh_list(
    fake: FakeApiServer, reads: Any
) -> None:
    for name in ("a", "b", "c"):
        fake.apply(service(name))
        fake.apply(route(name))
    r = reads()
    await r.until(lambda read: refs(read) == fresh_refs(fake), "first read")
    # A cut connection with changes meanwhile.
    fake.drop_watches()
    fake.delete("v1", "Service", "default", "a")
    fake.apply(route("d"))
    await r.until(lambda read: refs(read) == fresh_refs(fake), "after a cut")
    # 410: history compacted while changes happened.
    fake.drop_watches()
    fake.delete(f"{GW}/v1", "HTTPRoute", "default", "b")
    fake.apply(service("e"))
    fake.expire()
    await r.until(lambda read: refs(read) == fresh_refs(fake), "after 410")
    # The API server down for a while, changes meanwhile.
    fake.stop()
    count = len(r.items)
    fake.apply(service("made-while-down"))
    fake.delete(f"{GW}/v1", "HTTPRoute", "default", "c")
    await asyncio.sleep(1.5)
    assert len(r.items) == count  # nothing read while down: the last good set stays
    fake.start()
    await r.until(lambda read: refs(read) == fresh_refs(fake), "after the outage", timeout=5)


async def test_published_statuses_are_written_back(fake: FakeApiServer, reads: Any) -> None:
    fake.apply(
        {
            "apiVersion": f"{GW}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "meshxds"},
            "spec": {"controllerName": "meshxds.io/gateway-controller"},
        }
    )
    r = reads()
    await r.until(lambda read: names(read, gatewayapi.GatewayClass) == ["meshxds"], "the class")
    stop = asyncio.Event()
    background = asyncio.create_task(r.source.run(stop))
    try:
        status = {
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "Ok.",
                    "observedGeneration": 1,
                }
            ]
        }
        r.source.published([ObjectStatus(kind="GatewayClass", namespace="", name="meshxds", status=status)])
        for _ in range(100):
            if fake.status_writes():
                break
            await asyncio.sleep(0.02)
        stored = fake.get(f"{GW}/v1", "GatewayClass", "", "meshxds")
        assert stored is not None and stored["status"]["conditions"][0]["type"] == "Accepted"
        # Our own write comes back through the watch: no new read, no second write.
        await asyncio.sleep(0.5)
        assert len(fake.status_writes()) == 1
    finally:
        stop.set()
        await asyncio.wait_for(background, 5)


# --- the command line -----------------------------------------------------------------------------


def test_lease_namespace_defaults(
    fake: FakeApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = str(fake.write_kubeconfig(tmp_path / "kc", namespace="team-a", context="ctx"))
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert default_namespace(kubeconfig=kubeconfig, context=None, in_cluster=False) == "team-a"
    assert default_namespace(kubeconfig=kubeconfig, context="ctx", in_cluster=False) == "team-a"
    assert (
        default_namespace(kubeconfig=str(tmp_path / "missing"), context=None, in_cluster=False) == "default"
    )
    monkeypatch.setenv("POD_NAMESPACE", "from-downward-api")
    assert default_namespace(kubeconfig=kubeconfig, context=None, in_cluster=False) == "from-downward-api"


def test_kube_options_from_flags() -> None:
    flags: dict[str, Any] = {
        "kubeconfig": "kc",
        "context": None,
        "in_cluster": False,
        "lease_namespace": "ns",
        "lease_name": "lead",
        "lease_duration_s": 3.0,
        "controller_name": "x/y",
    }
    elected = kube_options(leader_elect=True, write_status=True, **flags)
    assert elected.leader_election is not None
    assert (elected.leader_election.namespace, elected.leader_election.name) == ("ns", "lead")
    assert elected.leader_election.renew_deadline_s == 2.0 and elected.controller_name == "x/y"
    assert kube_options(leader_elect=False, write_status=True, **flags).leader_election is None
    assert (
        kube_options(leader_elect=True, write_status=False, **flags).leader_election is None
    )  # nothing to guard


def test_serve_refuses_kube_flags_without_a_kube_source(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config-dir", ".", "--leader-elect"]) == 2
    assert "--kubeconfig or --in-cluster" in capsys.readouterr().err


def test_serve_with_an_unreadable_kubeconfig_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", "--kubeconfig", str(tmp_path / "missing"), "--xds-address", "127.0.0.1:0"]
    assert main([*argv, "--admin-address", "127.0.0.1:0"]) == 1
    assert "cannot load kubeconfig" in capsys.readouterr().err
