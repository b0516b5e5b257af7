"""Leader election with a ``coordination.k8s.io/v1`` Lease, as client-go's ``leaderelection`` does it.

Every replica serves xDS; only the leader writes status. Each round (``retry_period_s``) a
replica reads the Lease and, if it holds it or the holder let it expire, writes itself in with a
conditional update (the Lease's resourceVersion): of two replicas racing, one gets 409 Conflict.

Expiry is judged by *our* clock, from when we last saw the Lease record change, never by the
holder's ``renewTime`` (clocks of different machines disagree). A leader holds leadership for
``renew_deadline_s`` after its last successful renewal, shorter than ``lease_duration_s``, the
time others wait before taking over: ``is_leader`` turns False by the clock alone, so a leader
cut off from the API server stops writing before anyone else may start. On shutdown the leader
releases the Lease, so a standby takes over without waiting for expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client import V1LeaseSpec

from meshxds.errors import SourceError
from meshxds.sources.kube_api import Conflict, KubeApi

__all__ = ["LeaderElector", "LeaseSettings", "default_identity"]

log = logging.getLogger(__name__)


def default_identity() -> str:
    """``$POD_NAME`` in a cluster, else host name; plus a random suffix, unique per process."""
    base = os.environ.get("POD_NAME") or socket.gethostname() or "meshxds"
    return f"{base}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseSettings:
    namespace: str
    name: str = "meshxds-leader"
    identity: str
    lease_duration_s: float = 15.0
    """How long others wait, after the Lease last changed, before taking it over."""
    renew_deadline_s: float = 10.0
    """How long a leader stays leader after its last successful renewal."""
    retry_period_s: float = 2.0
    """How often every replica tries to acquire or renew."""

    @classmethod
    def scaled(cls, *, namespace: str, name: str, identity: str, lease_duration_s: float) -> LeaseSettings:
        """client-go's defaults (15 s / 10 s / 2 s) scaled to another lease duration."""
        return cls(
            namespace=namespace,
            name=name,
            identity=identity,
            lease_duration_s=lease_duration_s,
            renew_deadline_s=lease_duration_s * 2 / 3,
            retry_period_s=lease_duration_s * 2 / 15,
        )

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


class LeaderElector:
    """``await elector.run(stop)``; ``elector.is_leader`` anywhere, any thread."""

    def __init__(
        self,
        api: KubeApi,
        settings: LeaseSettings,
        *,
        on_change: Callable[[bool], None] = lambda leader: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.settings = settings
        self._on_change = on_change
        self._clock = clock
        self._valid_until = 0.0
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._was_leader = False
        self.transitions = 0
        """How many times this replica became leader."""

    @property
    def identity(self) -> str:
        return self.settings.identity

    @property
    def is_leader(self) -> bool:
        return self._clock() < self._valid_until

    def try_acquire_or_renew(self) -> bool:
        """One round (blocking I/O): True if we hold the Lease now."""
        s = self.settings
        now = datetime.now(UTC)
        lease = self.api.read_lease(s.namespace, s.name)
        if lease is None:
            spec = V1LeaseSpec(
                holder_identity=s.identity,
                lease_duration_seconds=math.ceil(s.lease_duration_s),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            )
            try:
                self.api.create_lease(s.namespace, s.name, spec)
            except Conflict:
                return False  # another replica created it first
            self._observed = None
            return True
        spec_in = lease.get("spec") or {}
        meta = lease.get("metadata") or {}
        holder = str(spec_in.get("holderIdentity") or "")
        record = (
            holder,
            spec_in.get("renewTime"),
            spec_in.get("leaseDurationSeconds"),
            meta.get("resourceVersion"),
        )
        if record != self._observed:
            self._observed, self._observed_at = record, self._clock()
        duration = float(spec_in.get("leaseDurationSeconds") or s.lease_duration_s)
        if holder and holder != s.identity and self._clock() < self._observed_at + duration:
            return False  # held by another replica, which renewed it recently enough
        ours = holder == s.identity
        transitions = int(spec_in.get("leaseTransitions") or 0) + (0 if ours else 1)
        spec = V1LeaseSpec(
            holder_identity=s.identity,
            lease_duration_seconds=math.ceil(s.lease_duration_s),
            acquire_time=(_parse_time(spec_in.get("acquireTime")) or now) if ours else now,
            renew_time=now,
            lease_transitions=transitions,
        )
        try:
            self.api.replace_lease(
                s.namespace, s.name, spec, resource_version=str(meta.get("resourceVersion"))
            )
        except Conflict:
            return False  # someone else wrote it since we read it
        return True

    def _settle(self, held: bool | None, started: float) -> None:
        """Apply one round's outcome: True renews until the deadline; False (another holder, a lost
        race) ends leadership now; None (the API server did not answer) lets the clock decide."""
        if held is True:
            self._valid_until = started + self.settings.renew_deadline_s
        elif held is False:
            self._valid_until = 0.0
        leader = self.is_leader
        if leader == self._was_leader:
            return
        self._was_leader = leader
        s = self.settings
        if leader:
            self.transitions += 1
            log.info("became leader lease=%s/%s identity=%s", s.namespace, s.name, s.identity)
        else:
            log.warning("lost leadership lease=%s/%s identity=%s", s.namespace, s.name, s.identity)
        self._on_change(leader)

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire or renew every ``retry_period_s`` until ``stop``; then release if leader."""
        try:
            while not stop.is_set():
                started = self._clock()
                held: bool | None
                try:
                    held = await asyncio.to_thread(self.try_acquire_or_renew)
                except SourceError as exc:
                    log.warning("leader election round failed: %s", exc)
                    held = None
                self._settle(held, started)
                await _wait(stop, self.settings.retry_period_s)
        finally:
            await self.release()

    async def release(self) -> None:
        """Give the Lease up (holder empty), so a standby need not wait for it to expire."""
        if not self.is_leader:
            return
        self._valid_until = 0.0
        self._settle(None, 0.0)  # stop writing before the Lease is let go
        s = self.settings

        def release() -> None:
            lease = self.api.read_lease(s.namespace, s.name)
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != s.identity:
                return
            now = datetime.now(UTC)
            spec = V1LeaseSpec(
                holder_identity="",
                lease_duration_seconds=1,
                acquire_time=now,
                renew_time=now,
                lease_transitions=int((lease.get("spec") or {}).get("leaseTransitions") or 0),
            )
            self.api.replace_lease(
                s.namespace,
                s.name,
                spec,
                resource_version=str((lease.get("metadata") or {}).get("resourceVersion")),
            )

        try:
            await asyncio.wait_for(asyncio.to_thread(release), timeout=2.0)
            log.info("released lease=%s/%s identity=%s", s.namespace, s.name, s.identity)
        except (SourceError, TimeoutError) as exc:
            log.warning("could not release lease=%s/%s: %s", s.namespace, s.name, exc)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
