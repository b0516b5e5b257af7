"""Watching one kind (kopf's layers): list then watch from the list's resourceVersion; a stream
that ends or breaks is re-watched from the newest resourceVersion (bookmarks included) without
relisting; 410 relists; errors back off and keep the resourceVersion; a kind without a CRD is
reported absent and picked up once discovery sees it. After each of these the sink holds what a
fresh list gives. Real ``kubernetes`` client, fake API server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from meshxds.errors import WatchExpired
from meshxds.sources.kube_api import ApiError, ApiResource, ApiUnavailable, KubeApi, NotFound, connect
from meshxds.sources.kube_watch import (
    Cursor,
    Discovery,
    Interrupt,
    WatchSettings,
    continuous_watch,
    infinite_watch,
    watch_once,
)
from meshxds.testing.fake_apiserver import FakeApiServer
from meshxds.testing.ports import wait_until

T = TypeVar("T")
SETTINGS = WatchSettings(
    timeout_s=30, read_timeout_s=10, backoff_initial_s=0.05, backoff_max_s=0.4, discovery_interval_s=0.5
)
NAMESPACES = ApiResource("", "v1", "Namespace", "namespaces", False)
VS = ("networking.istio.io", "VirtualService")


class RecordingSink:
    """What a kind's store would hold, plus how it got there."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.lists = 0
        self.events: list[tuple[str, str]] = []
        self.absent_calls = 0
        self._lock = threading.Lock()

    def listed(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self.objects = {i["metadata"]["name"]: i for i in items}
            self.lists += 1

    def event(self, event_type: str, obj: dict[str, Any]) -> None:
        with self._lock:
            name = obj["metadata"]["name"]
            self.events.append((event_type, name))
            if event_type == "DELETED":
                self.objects.pop(name, None)
            else:
                self.objects[name] = obj

    def absent(self) -> None:
        with self._lock:
            self.absent_calls += 1
            self.objects = {}

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self.objects)


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval_s=0.2) as api:
        yield api


@pytest.fixture
def kube(fake: FakeApiServer, tmp_path: Path) -> Iterator[KubeApi]:
    api = connect(kubeconfig=str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    yield api
    api.close()


class Running:
    """A watch function in a thread, stopped (and its watch cut) at teardown."""

    def __init__(self, target: Callable[[threading.Event, Interrupt], None]) -> None:
        self.stop = threading.Event()
        self.interrupt = Interrupt()
        self.error: BaseException | None = None

        def run() -> None:
            try:
                target(self.stop, self.interrupt)
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.interrupt.cut()
        self.thread.join(5)
        assert not self.thread.is_alive(), "the watch did not stop"


@pytest.fixture
def running() -> Iterator[Callable[[Callable[[threading.Event, Interrupt], None]], Running]]:
    started: list[Running] = []

    def start(target: Callable[[threading.Event, Interrupt], None]) -> Running:
        started.append(Running(target))
        return started[-1]

    yield start
    for r in started:
        r.close()


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def fresh_list(fake: FakeApiServer) -> list[str]:
    return [o["metadata"]["name"] for o in fake.objects("", "Namespace")]


def watch_namespaces(kube: KubeApi, sink: RecordingSink) -> Callable[[threading.Event, Interrupt], None]:
    def target(stop: threading.Event, interrupt: Interrupt) -> None:
        continuous_watch(kube, NAMESPACES, sink, settings=SETTINGS, stop=stop, interrupt=interrupt)

    return target


def until(predicate: Callable[[], T], what: str, timeout: float = 5.0) -> T:
    return wait_until(predicate, timeout=timeout, interval=0.02, what=what)


def watch_requests(fake: FakeApiServer) -> list[dict[str, str]]:
    return [
        dict(r.query)
        for r in fake.requests_for(method="GET", path="^/api/v1/namespaces$")
        if "watch" in r.query
    ]


def list_requests(fake: FakeApiServer) -> int:
    return sum(
        1 for r in fake.requests_for(method="GET", path="^/api/v1/namespaces$") if "watch" not in r.query
    )


def test_lists_then_watches_from_the_lists_version_with_bookmarks(
    fake: FakeApiServer, kube: KubeApi, running: Any
) -> None:
    fake.apply(namespace("a"))
    sink = RecordingSink()
    running(watch_namespaces(kube, sink))
    until(lambda: sink.lists == 1 and watch_requests(fake), "listed and watching")
    first = watch_requests(fake)[0]
    assert first["resourceVersion"] == str(fake.resource_version)
    assert first["allowWatchBookmarks"] == "true" and first["timeoutSeconds"] == "30"
    fake.apply(namespace("b"))
    fake.apply(namespace("a", team="x"))
    fake.delete("v1", "Namespace", "", "b")
    until(lambda: sink.events == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")], "three events")
    assert sink.objects["a"]["metadata"]["labels"] == {"team": "x"}


def test_a_stream_that_ends_is_watched_again_from_the_newest_version_without_relisting(
    fake: FakeApiServer, kube: KubeApi, running: Any
) -> None:
    sink = RecordingSink()
    running(watch_namespaces(kube, sink))
    until(lambda: watch_requests(fake), "watching")
    fake.apply(namespace("a"))
    until(lambda: sink.names() == ["a"], "event")
    # Other kinds move the global resourceVersion on; a bookmark carries it to this watch.
    fake.apply({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {}})
    bookmark_rv = str(fake.resource_version)
    time.sleep(0.5)  # > bookmark interval
    fake.end_watches()
    until(lambda: len(watch_requests(fake)) >= 2, "re-watch")
    assert watch_requests(fake)[1]["resourceVersion"] == bookmark_rv
    assert list_requests(fake) == 1


def test_a_cut_connection_is_rewatched_and_nothing_made_meanwhile_is_lost(
    fake: FakeApiServer, kube: KubeApi, running: Any
) -> None:
    fake.apply(namespace("a"))
    sink = RecordingSink()
    running(watch_namespaces(kube, sink))
    until(lambda: watch_requests(fake), "watching")
    for i in range(5):
        fake.drop_watches()
        fake.apply(namespace(f"n{i}"))
        fake.delete("v1", "Namespace", "", "a") if i == 2 else None
    until(lambda: sink.names() == fresh_list(fake), "caught up with a fresh list")
    assert list_requests(fake) == 1
    assert len(watch_requests(fake)) >= 2


def test_a_cut_mid_stream_resumes_after_the_last_event_applied(
    fake: FakeApiServer, kube: KubeApi, running: Any
) -> None:
    sink = RecordingSink()
    running(watch_namespaces(kube, sink))
    until(lambda: watch_requests(fake), "watching")
    fake.apply(namespace("a"))
    until(lambda: sink.names() == ["a"], "the event")
    applied_rv = str(fake.resource_version)
    fake.drop_watches()
    until(lambda: len(watch_requests(fake)) >= 2, "re-watch")
    assert watch_requests(fake)[1]["resourceVersion"] == applied_rv
    time.sleep(0.3)
    assert sink.events == [("ADDED", "a")]  # nothing replayed


def test_410_relists_and_ends_equal_to_a_fresh_list(fake: FakeApiServer, kube: KubeApi, running: Any) -> None:
    fake.apply(namespace("a"))
    sink = RecordingSink()
    running(watch_namespaces(kube, sink))
    until(lambda: watch_requests(fake), "watching")
    fake.drop_watches()
    fake.delete("v1", "Namespace", "", "a")
    fake.apply(namespace("b"))
    fake.expire()  # the history of the gap is gone: re-watching from the old version gets 410
    until(lambda: list_requests(fake) == 2, "relisted")
    until(lambda: sink.names() == fresh_list(fake) == ["b"], "equal to a fresh list")


def test_410_answered_as_http_also_relists(fake: FakeApiServer, kube: KubeApi, running: Any) -> None:
    fake.expired_as_http = True
    sink = RecordingSink()
    running(watch_namespaces(kube, sink))
    until(lambda: watch_requests(fake), "watching")
    fake.drop_watches()
    fake.apply(namespace("late"))
    fake.expire()
    until(lambda: list_requests(fake) == 2 and sink.names() == ["late"], "relisted")


def test_an_outage_backs_off_then_resumes_from_the_resource_version(
    fake: FakeApiServer, kube: KubeApi, running: Any
) -> None:
    fake.apply(namespace("a"))
    sink = RecordingSink()
    running(watch_namespaces(kube, sink))
    until(lambda: watch_requests(fake), "watching")
    fake.stop()
    fake.apply(namespace("made-while-down"))
    fake.delete("v1", "Namespace", "", "a")
    time.sleep(1.0)
    fake.start()
    started = time.monotonic()
    until(lambda: sink.names() == fresh_list(fake) == ["made-while-down"], "caught up")
    assert time.monotonic() - started < SETTINGS.backoff_max_s + 1.0
    assert list_requests(fake) == 1  # the history survived: no relist needed


def test_watch_once_maps_error_events() -> None:
    class OneEvent:
        def __init__(self, event: dict[str, Any]) -> None:
            self.event = event

        def watch(self, res: ApiResource, **kwargs: Any) -> Iterator[dict[str, Any]]:
            yield self.event

    def run(code: int) -> None:
        api: Any = OneEvent({"type": "ERROR", "object": {"kind": "Status", "code": code, "reason": "R"}})
        watch_once(
            api, NAMESPACES, RecordingSink(), cursor=Cursor("1"), settings=SETTINGS, stop=threading.Event()
        )

    with pytest.raises(WatchExpired):
        run(410)
    with pytest.raises(ApiUnavailable):
        run(500)
    with pytest.raises(ApiError) as other:
        run(400)
    assert other.value.status == 400


def test_iterations_bound_the_loop(fake: FakeApiServer, kube: KubeApi) -> None:
    sink = RecordingSink()
    started = time.monotonic()
    settings = WatchSettings(timeout_s=1, read_timeout_s=5, backoff_initial_s=0.05, backoff_max_s=0.1)
    continuous_watch(kube, NAMESPACES, sink, settings=settings, stop=threading.Event(), iterations=2)
    assert sink.lists == 1 and len(watch_requests(fake)) == 1
    assert time.monotonic() - started < 3


def test_a_kind_that_goes_away_returns_not_found(fake: FakeApiServer, kube: KubeApi) -> None:
    fake.install_crd(*VS)
    res = ApiResource(VS[0], "v1", VS[1], "virtualservices", True)
    threading.Timer(0.3, lambda: fake.uninstall_crd(*VS)).start()
    with pytest.raises(NotFound):
        continuous_watch(kube, res, RecordingSink(), settings=SETTINGS, stop=threading.Event())


def test_discovery_prefers_the_models_version_order(fake: FakeApiServer, kube: KubeApi) -> None:
    discovery = Discovery(kube)
    assert discovery.resolve(*VS, ("v1", "v1beta1")) is None
    fake.install_crd(*VS, versions=("v1beta1",))
    assert discovery.resolve(*VS, ("v1", "v1beta1")) is None  # cached until invalidated
    discovery.invalidate()
    assert discovery.resolve(*VS, ("v1", "v1beta1")) == ApiResource(
        VS[0], "v1beta1", VS[1], "virtualservices", True
    )
    core = discovery.resolve("", "Service", ("v1",))
    assert (
        core is not None
        and core.plural == "services"
        and core.path("ns", "x") == "/api/v1/namespaces/ns/services/x"
    )


def test_an_absent_kind_is_reported_once_and_picked_up_when_its_crd_appears(
    fake: FakeApiServer, kube: KubeApi, running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    discovery = Discovery(kube, max_age_s=60)
    sink = RecordingSink()
    found: list[ApiResource | None] = []

    def target(stop: threading.Event, interrupt: Interrupt) -> None:
        infinite_watch(
            kube,
            discovery,
            group=VS[0],
            kind=VS[1],
            versions=("v1", "v1beta1"),
            sink=sink,
            settings=SETTINGS,
            stop=stop,
            interrupt=interrupt,
            on_resource=found.append,
        )

    with caplog.at_level("WARNING"):
        running(target)
        until(lambda: sink.absent_calls >= 2, "absent, looked for again")  # polled every 0.5 s
    warnings = [r for r in caplog.records if "not served" in r.getMessage()]
    assert len(warnings) == 1
    fake.install_crd(*VS)
    fake.apply(
        {"apiVersion": f"{VS[0]}/v1", "kind": VS[1], "metadata": {"name": "vs", "namespace": "d"}, "spec": {}}
    )
    discovery.invalidate()  # what the CRD watch does
    until(lambda: sink.names() == ["vs"], "picked up")
    assert found[-1] is not None and found[-1].plural == "virtualservices"
