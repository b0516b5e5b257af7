"""The Kubernetes source: every kind meshxds reads, listed and watched through the official
``kubernetes`` client (a kubeconfig, or the pod's service account), handed to the pipeline as
complete, consistent sets; and the Gateway API status meshxds computes, written back.

The kinds are :data:`meshxds.model.manifests.KINDS`, so a kind added to the model is watched
without a change here; discovery maps each to the version and plural the server serves. Each
kind has a watch thread (:mod:`meshxds.sources.kube_watch`) feeding one
:class:`~meshxds.sources.kube_store.ObjectStore`; the serving loop takes a snapshot of it once
every kind has been listed, and again after changes, debounced: 100 ms after the last event, at
most 1 s after the first. During an API outage nothing new is read and the last good config
keeps being served; on recovery the watches resume from their resourceVersions (or relist on
410), so the next snapshot equals what a fresh list would give.

Objects are validated one by one (:mod:`meshxds.sources.kube_store` explains why an invalid one
is skipped rather than rejecting the read). Status is written by
:class:`~meshxds.sources.kube_status.StatusWriter`, by the leader only when
:class:`~meshxds.sources.leader.LeaderElector` is on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes.config import list_kube_config_contexts
from kubernetes.config.config_exception import ConfigException

from meshxds.conditions import ObjectStatus
from meshxds.errors import ManifestErrors
from meshxds.model.base import Resource
from meshxds.model.manifests import KINDS, ResourceSet
from meshxds.options import CONTROLLER_NAME
from meshxds.sources.kube_api import ApiResource, Forbidden, KubeApi, NotFound, connect
from meshxds.sources.kube_status import StatusWriter
from meshxds.sources.kube_store import KubeResourceSet, ObjectStore
from meshxds.sources.kube_watch import (
    CRD_GROUP,
    Discovery,
    Interrupt,
    WatchSettings,
    WatchThread,
    continuous_watch,
    infinite_watch,
)
from meshxds.sources.leader import LeaderElector, LeaseSettings, default_identity

__all__ = ["KubeOptions", "KubeSource", "debounce", "default_namespace", "kube_options"]

log = logging.getLogger(__name__)

JSON = dict[str, Any]
_STOP_JOIN_S = 3.0
_SYNC_LOG_S = 10.0
_SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeOptions:
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    debounce_s: float = 0.1
    """Translate this long after the last event..."""
    debounce_max_s: float = 1.0
    """...but no later than this after the first."""
    watch: WatchSettings = field(default_factory=WatchSettings)
    write_status: bool = True
    controller_name: str = CONTROLLER_NAME
    leader_election: LeaseSettings | None = None
    """``None``: write status without electing a leader (a single replica)."""


def default_namespace(*, kubeconfig: str | None, context: str | None, in_cluster: bool) -> str:
    """Where our Lease lives unless told: ``$POD_NAMESPACE``, the pod's namespace in a cluster,
    the kubeconfig context's namespace, else ``default``."""
    if namespace := os.environ.get("POD_NAMESPACE"):
        return namespace
    if in_cluster:
        with contextlib.suppress(OSError):
            return _SA_NAMESPACE.read_text().strip() or "default"
        return "default"
    with contextlib.suppress(ConfigException, OSError, TypeError, KeyError):
        contexts, current = list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
        chosen = next((c for c in contexts if c.get("name") == context), None) if context else current
        return str(((chosen or {}).get("context") or {}).get("namespace") or "default")
    return "default"


def kube_options(
    *,
    kubeconfig: str | None,
    context: str | None,
    in_cluster: bool,
    leader_elect: bool,
    lease_namespace: str | None,
    lease_name: str,
    lease_duration_s: float,
    write_status: bool,
    controller_name: str,
    debounce_s: float = 0.1,
    debounce_max_s: float = 1.0,
) -> KubeOptions:
    """``KubeOptions`` from the ``meshxds serve`` flags."""
    lease = None
    if leader_elect and write_status:
        lease = LeaseSettings.scaled(
            namespace=lease_namespace
            or default_namespace(kubeconfig=kubeconfig, context=context, in_cluster=in_cluster),
            name=lease_name,
            identity=default_identity(),
            lease_duration_s=lease_duration_s,
        )
    return KubeOptions(
        kubeconfig=kubeconfig,
        context=context,
        in_cluster=in_cluster,
        write_status=write_status,
        controller_name=controller_name,
        leader_election=lease,
        debounce_s=debounce_s,
        debounce_max_s=debounce_max_s,
    )


class _StoreSink:
    """One kind's watch events into the store, each object named by its API path."""

    def __init__(self, source: KubeSource, model: type[Resource]) -> None:
        self._source = source
        self._model = model

    def _origin(self, obj: JSON) -> str:
        res = self._source.resource_of(self._model)
        meta = obj.get("metadata") or {}
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        return res.path(namespace, name) if res is not None else f"{self._model.KIND}/{namespace}/{name}"

    def listed(self, items: list[JSON]) -> None:
        self._source.store.replace(self._model, [(item, self._origin(item)) for item in items])

    def event(self, event_type: str, obj: JSON) -> None:
        self._source.store.apply(self._model, event_type, obj, self._origin(obj))

    def absent(self) -> None:
        self._source.store.mark_absent(self._model)


class _CrdSink:
    """CRD changes: look for absent kinds again at once."""

    def __init__(self, discovery: Discovery) -> None:
        self._discovery = discovery

    def listed(self, items: list[JSON]) -> None:
        self._discovery.invalidate()

    def event(self, event_type: str, obj: JSON) -> None:
        self._discovery.invalidate()

    def absent(self) -> None:
        pass


async def debounce(changed: asyncio.Event, *, quiet_s: float, max_s: float) -> None:
    """Return once ``changed`` stayed unset for ``quiet_s``, or ``max_s`` after the call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_s
    while (remaining := deadline - loop.time()) > 0:
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), timeout=min(quiet_s, remaining))
        except TimeoutError:
            return


async def _wait_any(*events: asyncio.Event, timeout: float | None = None) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class KubeSource:
    """``async for read in source.reads(stop)`` alongside ``await source.run(stop)``."""

    def __init__(
        self,
        options: KubeOptions,
        *,
        api: KubeApi | None = None,
        models: Iterable[type[Resource]] | None = None,
    ) -> None:
        self.options = options
        self.api = (
            api
            if api is not None
            else connect(
                kubeconfig=options.kubeconfig, context=options.context, in_cluster=options.in_cluster
            )
        )
        self.models = tuple(models if models is not None else KINDS.values())
        self.store = ObjectStore(self.models)
        self.discovery = Discovery(self.api, max_age_s=options.watch.discovery_interval_s)
        self._resources: dict[type[Resource], ApiResource | None] = {}
        self._stop = threading.Event()
        self._threads: list[WatchThread] = []
        self.elector: LeaderElector | None = None
        self.status: StatusWriter | None = None
        if options.leader_election is not None:
            self.elector = LeaderElector(self.api, options.leader_election, on_change=self._leadership)
        if options.write_status:
            elector = self.elector
            self.status = StatusWriter(
                self.api,
                self.store,
                resource_of=self.resource_of,
                controller_name=options.controller_name,
                may_write=(lambda: elector.is_leader) if elector is not None else (lambda: True),
            )
            self.store.on_status = self.status.poke

    def resource_of(self, model: type[Resource]) -> ApiResource | None:
        """How the server serves ``model`` now (``None``: not served, or not discovered yet)."""
        return self._resources.get(model)

    def _leadership(self, leader: bool) -> None:
        if leader and self.status is not None:
            self.status.poke()  # a new leader writes at once, not at the next change

    # -- threads -----------------------------------------------------------------------------------
    def _watch_kind(self, model: type[Resource], interrupt: Interrupt) -> None:
        def found(res: ApiResource | None) -> None:
            self._resources[model] = res

        infinite_watch(
            self.api,
            self.discovery,
            group=model.API_GROUP,
            kind=model.KIND,
            versions=model.API_VERSIONS,
            sink=_StoreSink(self, model),
            settings=self.options.watch,
            stop=self._stop,
            interrupt=interrupt,
            on_resource=found,
        )

    def _watch_crds(self, interrupt: Interrupt) -> None:
        """Watch CRDs so a kind is picked up as soon as its CRD appears; without the permission
        (or the API), absent kinds are looked for every ``discovery_interval_s`` instead."""
        res = ApiResource(CRD_GROUP, "v1", "CustomResourceDefinition", "customresourcedefinitions", False)
        try:
            continuous_watch(
                self.api,
                res,
                _CrdSink(self.discovery),
                settings=self.options.watch,
                stop=self._stop,
                interrupt=interrupt,
                give_up=(NotFound, Forbidden),
            )
        except (NotFound, Forbidden) as exc:
            log.warning(
                "cannot watch CRDs (%s); looking for missing kinds every %.0fs",
                exc,
                self.options.watch.discovery_interval_s,
            )

    def start(self) -> None:
        if self._threads:
            return
        self._threads.append(WatchThread("watch-crds", self._watch_crds))
        for model in self.models:

            def target(interrupt: Interrupt, model: type[Resource] = model) -> None:
                self._watch_kind(model, interrupt)

            self._threads.append(WatchThread(f"watch-{model.API_GROUP or 'core'}/{model.KIND}", target))
        for thread in self._threads:
            thread.start()
        log.info("watching %d kinds at %s", len(self.models), self.api.host)

    def close(self) -> None:
        """Stop every watch thread (cutting open watches) and wait for them, briefly."""
        self._stop.set()
        self.discovery.invalidate()  # wakes threads waiting for a CRD
        for thread in self._threads:
            thread.cut()
        deadline = time.monotonic() + _STOP_JOIN_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t for t in self._threads if t.alive]
        if stuck:
            log.warning(
                "%d watch threads still running at shutdown (daemon threads; they end with us)", len(stuck)
            )
        else:
            self.api.close()

    # -- the serving loop's side -------------------------------------------------------------------
    def snapshot(self) -> KubeResourceSet:
        read = self.store.snapshot()
        for error in read.errors:
            log.error("invalid object skipped: %s", error)
        return read

    async def reads(self, stop: asyncio.Event) -> AsyncIterator[ResourceSet | ManifestErrors]:
        """A complete snapshot once every kind is listed, then one per debounced burst of changes."""
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def on_change() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(changed.set)

        self.store.on_change = on_change
        self.start()
        try:
            waiting_since = loop.time()
            while not self.store.synced:
                await _wait_any(stop, changed, timeout=_SYNC_LOG_S)
                if stop.is_set():
                    return
                changed.clear()
                if loop.time() - waiting_since >= _SYNC_LOG_S:
                    log.info("waiting for the first list of %s", ", ".join(self.store.pending()))
                    waiting_since = loop.time()
            read = self.snapshot()
            absent = sorted(f"{m.API_GROUP}/{m.KIND}" for m in self.store.absent())
            log.info(
                "initial sync: %d objects%s",
                len(read),
                f"; not served: {', '.join(absent)}" if absent else "",
            )
            yield read
            while not stop.is_set():
                await _wait_any(stop, changed)
                if stop.is_set():
                    return
                await debounce(changed, quiet_s=self.options.debounce_s, max_s=self.options.debounce_max_s)
                yield self.snapshot()
        finally:
            self.close()

    def published(self, statuses: Sequence[ObjectStatus]) -> None:
        """A translation of our reads is being served: its status is what to write."""
        if self.status is not None:
            self.status.submit(statuses)

    async def run(self, stop: asyncio.Event) -> None:
        """Leader election and status writing, until ``stop``."""
        async with asyncio.TaskGroup() as tasks:
            if self.elector is not None:
                tasks.create_task(self.elector.run(stop), name="leader-election")
            if self.status is not None:
                tasks.create_task(self.status.run(stop), name="status-writer")
