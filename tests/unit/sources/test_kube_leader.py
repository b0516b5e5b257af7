"""Leader election on a ``coordination.k8s.io/v1`` Lease: one holder at a time; a standby takes
over once the Lease expired by its own clock, or at once when the leader releases it; a leader
that cannot renew (or sees another holder) stops being leader by the clock alone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshxds.sources.kube_api import KubeApi, connect
from meshxds.sources.leader import LeaderElector, LeaseSettings
from meshxds.testing.fake_apiserver import FakeApiServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as api:
        yield api


@pytest.fixture
def kube(fake: FakeApiServer, tmp_path: Path) -> Iterator[KubeApi]:
    api = connect(kubeconfig=str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    yield api
    api.close()


def settings(identity: str, lease_s: float = 15.0) -> LeaseSettings:
    return LeaseSettings.scaled(
        namespace="meshxds-system", name="lead", identity=identity, lease_duration_s=lease_s
    )


def holder(fake: FakeApiServer) -> str:
    lease = fake.get("coordination.k8s.io/v1", "Lease", "meshxds-system", "lead")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def test_settings_scale_client_go_defaults_and_check_their_order() -> None:
    s = settings("a", 15.0)
    assert (s.lease_duration_s, s.renew_deadline_s, s.retry_period_s) == (15.0, 10.0, 2.0)
    with pytest.raises(ValueError):
        LeaseSettings(namespace="n", identity="a", lease_duration_s=5, renew_deadline_s=6, retry_period_s=1)


def test_one_holder_and_takeover_only_after_expiry_by_the_standbys_clock(
    fake: FakeApiServer, kube: KubeApi
) -> None:
    clock_a, clock_b = Clock(), Clock()
    a = LeaderElector(kube, settings("a"), clock=clock_a)
    b = LeaderElector(kube, settings("b"), clock=clock_b)
    assert a.try_acquire_or_renew()
    a._settle(True, clock_a())
    assert a.is_leader and holder(fake) == "a"
    assert not b.try_acquire_or_renew()  # held, and just observed
    clock_b.now += 14.0
    assert not b.try_acquire_or_renew()  # not expired yet by b's clock
    # a renews: the record changes, so b's wait starts over.
    assert a.try_acquire_or_renew()
    clock_b.now += 14.0
    assert not b.try_acquire_or_renew()
    # a goes quiet (crashed); 15 s after b last saw a change, b takes over.
    clock_b.now += 15.5
    assert b.try_acquire_or_renew()
    assert holder(fake) == "b"
    lease = fake.get("coordination.k8s.io/v1", "Lease", "meshxds-system", "lead")
    assert lease is not None and lease["spec"]["leaseTransitions"] == 1
    # a comes back: it sees b holding a fresh lease and stops being leader at once.
    assert not a.try_acquire_or_renew()
    a._settle(False, clock_a())
    assert not a.is_leader


def test_leadership_ends_by_the_clock_when_renewal_fails(kube: KubeApi) -> None:
    clock = Clock()
    a = LeaderElector(kube, settings("a"), clock=clock)
    started = clock()
    assert a.try_acquire_or_renew()
    a._settle(True, started)
    clock.now += 9.9
    a._settle(None, clock())  # a round that got no answer keeps leadership until the deadline...
    assert a.is_leader
    clock.now += 0.2
    assert not a.is_leader  # ...and not a moment longer, whatever the loop does


def test_racing_creates_yield_one_leader(fake: FakeApiServer, kube: KubeApi) -> None:
    electors = [LeaderElector(kube, settings(f"r{i}")) for i in range(3)]
    results = [e.try_acquire_or_renew() for e in electors]
    assert results == [True, False, False]
    assert holder(fake) == "r0"


async def test_run_loop_fails_over_when_the_leader_stops(fake: FakeApiServer, kube: KubeApi) -> None:
    changes: list[tuple[str, bool]] = []
    stops = {name: asyncio.Event() for name in ("a", "b")}
    electors = {
        name: LeaderElector(
            kube, settings(name, lease_s=3.0), on_change=lambda leader, n=name: changes.append((n, leader))
        )
        for name in stops
    }
    tasks = {name: asyncio.create_task(e.run(stops[name])) for name, e in electors.items()}
    try:
        for _ in range(100):
            if any(e.is_leader for e in electors.values()):
                break
            await asyncio.sleep(0.05)
        leaders = [n for n, e in electors.items() if e.is_leader]
        assert len(leaders) == 1, leaders
        first = leaders[0]
        other = "b" if first == "a" else "a"
        # Several rounds: the standby never becomes leader while the leader renews.
        await asyncio.sleep(1.5)
        assert electors[first].is_leader and not electors[other].is_leader
        stops[first].set()  # graceful stop: releases the Lease
        await asyncio.wait_for(tasks[first], 5)
        assert not electors[first].is_leader
        for _ in range(60):
            if electors[other].is_leader:
                break
            await asyncio.sleep(0.05)
        assert electors[other].is_leader  # well before the 3 s lease would expire
        assert holder(fake) == other
        assert changes == [(first, True), (first, False), (other, True)]
    finally:
        for stop in stops.values():
            stop.set()
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def test_a_leader_cut_off_from_the_api_stops_being_leader(fake: FakeApiServer, kube: KubeApi) -> None:
    stop = asyncio.Event()
    elector = LeaderElector(kube, settings("a", lease_s=1.5))
    task = asyncio.create_task(elector.run(stop))
    try:
        for _ in range(60):
            if elector.is_leader:
                break
            await asyncio.sleep(0.05)
        assert elector.is_leader
        fake.stop()
        await asyncio.sleep(elector.settings.renew_deadline_s + 0.3)
        assert not elector.is_leader
        fake.start()
        for _ in range(100):
            if elector.is_leader:
                break
            await asyncio.sleep(0.05)
        assert elector.is_leader  # it held the Lease all along: it renews and leads again
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
