"""Write the Gateway API status meshxds computes back to the API server's ``status`` subresource.

Translators compute status as data (:class:`ObjectStatus`) without a clock; this module adds
``lastTransitionTime`` (kept from the stored condition while its status stays the same), and
writes an object only when what it would write differs from what the object already has. Each
write is a JSON merge patch carrying the object's resourceVersion, so a concurrent change
answers 409: the writer reads the object again, recomputes, and retries (a few times; then the
next cycle does).

Only our objects: the GatewayClasses whose controllerName is ours, their Gateways, and in each
route's ``status.parents`` only the entries for those Gateways (``controllerName`` ours) — other
controllers' entries are kept as they are. An entry we wrote for a Gateway a route no longer
attaches to is removed.

With leader election, only the leader writes, and it checks before every single request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from meshxds.conditions import ObjectStatus
from meshxds.errors import SourceError
from meshxds.model import gatewayapi
from meshxds.model.base import Resource
from meshxds.sources.kube_api import ApiResource, Conflict, KubeApi, NotFound
from meshxds.sources.kube_store import ObjectStore

__all__ = ["STATUS_MODELS", "StatusWriter", "WriteReport", "status_patch"]

log = logging.getLogger(__name__)

JSON = dict[str, Any]

STATUS_MODELS: dict[str, type[Resource]] = {
    m.KIND: m
    for m in (
        gatewayapi.GatewayClass,
        gatewayapi.Gateway,
        gatewayapi.HTTPRoute,
        gatewayapi.GRPCRoute,
        gatewayapi.TLSRoute,
        gatewayapi.TCPRoute,
        gatewayapi.BackendTLSPolicy,
    )
}
"""The kinds whose status meshxds writes (``ObjectStatus.kind`` → model): Gateway API only."""

_ROUTES = frozenset({"HTTPRoute", "GRPCRoute", "TLSRoute", "TCPRoute"})
_SHARED: dict[str, tuple[str, str]] = {
    **{kind: ("parents", "parentRef") for kind in _ROUTES},
    "BackendTLSPolicy": ("ancestors", "ancestorRef"),
}
"""Kinds whose status is a list other controllers write to as well: routes' ``parents``, a
policy's ``ancestors`` (each entry names its ``controllerName``); we touch only our entries."""
_CONFLICT_ATTEMPTS = 4
_RETRY_FAILED_S = (1.0, 30.0)  # first and longest wait before retrying writes that failed


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _timed(conditions: Iterable[Mapping[str, Any]], old: Any, now: str) -> list[JSON]:
    """Conditions with ``lastTransitionTime``: the old one while a type keeps its status."""
    before = {c.get("type"): c for c in old or () if isinstance(c, Mapping)}
    out = []
    for cond in conditions:
        prev = before.get(cond.get("type"))
        same = (
            prev is not None and prev.get("status") == cond.get("status") and prev.get("lastTransitionTime")
        )
        out.append({**cond, "lastTransitionTime": prev["lastTransitionTime"] if same and prev else now})
    return out


def _parent_key(ref: Mapping[str, Any], route_namespace: str) -> tuple[str, str, str, str, str, int]:
    return (
        str(ref.get("group", gatewayapi.GROUP) or gatewayapi.GROUP),
        str(ref.get("kind") or "Gateway"),
        str(ref.get("namespace") or route_namespace),
        str(ref.get("name") or ""),
        str(ref.get("sectionName") or ""),
        int(ref.get("port") or 0),
    )


def _canonical(value: Any) -> Any:
    """Order-insensitive form of a status: lists compare as sorted JSON."""
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted(json.dumps(_canonical(v), sort_keys=True) for v in value)
    return value


def status_patch(
    current: Mapping[str, Any], desired: Mapping[str, Any], *, kind: str, controller_name: str, now: str
) -> JSON | None:
    """The merge patch that makes ``current``'s status say ``desired``, or ``None`` if it does.

    ``desired`` is a translator's status (conditions without ``lastTransitionTime``). The patch
    names ``current``'s resourceVersion, so it applies only to that version.
    """
    old: Mapping[str, Any] = current.get("status") or {}
    meta = current.get("metadata") or {}
    new: JSON = {}
    if kind in _SHARED:
        list_key, ref_key = _SHARED[kind]
        namespace = str(meta.get("namespace") or "")
        parents = [p for p in old.get(list_key) or () if isinstance(p, Mapping)]
        others = [dict(p) for p in parents if p.get("controllerName") != controller_name]
        ours_before = {
            _parent_key(p.get(ref_key) or {}, namespace): p
            for p in parents
            if p.get("controllerName") == controller_name
        }
        ours = []
        for entry in desired.get(list_key) or ():
            prev = ours_before.get(_parent_key(entry.get(ref_key) or {}, namespace), {})
            ours.append(
                {**entry, "conditions": _timed(entry.get("conditions") or (), prev.get("conditions"), now)}
            )
        new[list_key] = others + ours
    else:
        for key, value in desired.items():
            if key == "conditions":
                new[key] = _timed(value, old.get("conditions"), now)
            elif key == "listeners":
                before = {
                    str(item.get("name")): item
                    for item in old.get("listeners") or ()
                    if isinstance(item, Mapping)
                }
                new[key] = [
                    {
                        **item,
                        "conditions": _timed(
                            item.get("conditions") or (),
                            before.get(str(item.get("name")), {}).get("conditions"),
                            now,
                        ),
                    }
                    for item in value
                ]
            elif value == [] and not old.get(key):
                continue  # nothing to say, and nothing said before: no write for an absent list
            elif value == []:
                new[key] = None  # a merge patch's null removes what we wrote earlier
            else:
                new[key] = value
    if _canonical(new) == _canonical({k: old.get(k) for k in new}):
        return None
    return {"metadata": {"resourceVersion": str(meta.get("resourceVersion") or "")}, "status": new}


@dataclass(frozen=True, slots=True)
class WriteReport:
    written: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: int = 0
    """Objects not (yet) in the store, or kinds not served."""


class StatusWriter:
    """Writes the newest computed statuses whenever they, the objects, or leadership change.

    ``submit()`` (from the serving loop) hands over a translation's statuses; ``poke()`` (any
    thread) says stored objects changed; ``run()`` does the writing in a worker thread.
    """

    def __init__(
        self,
        api: KubeApi,
        store: ObjectStore,
        *,
        resource_of: Callable[[type[Resource]], ApiResource | None],
        controller_name: str,
        may_write: Callable[[], bool] = lambda: True,
        clock: Callable[[], str] = now_rfc3339,
    ) -> None:
        self.api = api
        self.store = store
        self.resource_of = resource_of
        self.controller_name = controller_name
        self.may_write = may_write
        self._clock = clock
        self._latest: tuple[ObjectStatus, ...] | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # (kind, namespace, name) → (resourceVersion we patched, the object the patch returned):
        # until the watch brings that object, the store still shows the version we patched.
        self._written: dict[tuple[str, str, str], tuple[str, JSON]] = {}
        self.writes = 0
        """Successful writes so far."""

    # -- triggers ----------------------------------------------------------------------------------
    def submit(self, statuses: Sequence[ObjectStatus]) -> None:
        self._latest = tuple(statuses)
        self.poke()

    def poke(self) -> None:
        """Re-check soon (thread-safe)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closing
            loop.call_soon_threadsafe(wake.set)

    # -- what to write -----------------------------------------------------------------------------
    def desired(self, statuses: Iterable[ObjectStatus]) -> dict[tuple[str, str, str], JSON]:
        """``(kind, namespace, name)`` → the status to have, for our objects only."""
        statuses = [s for s in statuses if s.kind in STATUS_MODELS]
        ours = {(s.namespace, s.name) for s in statuses if s.kind == "Gateway"}
        out: dict[tuple[str, str, str], JSON] = {}
        for s in statuses:
            if s.kind in _SHARED:
                list_key, ref_key = _SHARED[s.kind]
                parents = [
                    p
                    for p in s.status.get(list_key) or ()
                    if _parent_key(p.get(ref_key) or {}, s.namespace)[2:4] in ours
                    and p.get("controllerName") == self.controller_name
                ]
                if not parents:
                    continue
                out[(s.kind, s.namespace, s.name)] = {**s.status, list_key: parents}
            else:
                out[(s.kind, s.namespace, s.name)] = dict(s.status)
        # Entries we wrote earlier for routes (policies) that no longer attach to our Gateways: remove them.
        watched = self.store.models
        for kind in sorted(_SHARED):
            list_key = _SHARED[kind][0]
            if STATUS_MODELS[kind] not in watched:  # a store that does not read the kind
                continue
            for body in self.store.bodies(STATUS_MODELS[kind]):
                meta = body.get("metadata") or {}
                key = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
                written = (body.get("status") or {}).get(list_key) or ()
                if key not in out and any(
                    isinstance(p, Mapping) and p.get("controllerName") == self.controller_name
                    for p in written
                ):
                    out[key] = {list_key: []}
        return out

    def _current(self, model: type[Resource], namespace: str, name: str) -> JSON | None:
        body = self.store.body(model, namespace, name)
        written = self._written.get((model.KIND, namespace, name))
        if body is not None and written is not None:
            patched_rv, result = written
            if str((body.get("metadata") or {}).get("resourceVersion")) == patched_rv:
                return result  # the store has not seen our write yet
            del self._written[(model.KIND, namespace, name)]  # it has (or something newer)
        return body

    # -- writing (blocking; runs in a worker thread) -----------------------------------------------
    def write(self, statuses: Iterable[ObjectStatus]) -> WriteReport:
        written = unchanged = failed = skipped = 0
        for (kind, namespace, name), status in sorted(self.desired(statuses).items()):
            if not self.may_write():
                log.info("not writing status: not the leader")
                break
            outcome = self._write_one(STATUS_MODELS[kind], namespace, name, status)
            written += outcome == "written"
            unchanged += outcome == "unchanged"
            failed += outcome == "failed"
            skipped += outcome == "skipped"
        return WriteReport(written, unchanged, failed, skipped)

    def _write_one(self, model: type[Resource], namespace: str, name: str, status: JSON) -> str:
        res = self.resource_of(model)
        if model not in self.store.models:
            return "skipped"  # a kind the store does not read (its CRD is not installed)
        current = self._current(model, namespace, name)
        if res is None or current is None:
            return "skipped"
        ref = f"{model.KIND}/{namespace}/{name}" if namespace else f"{model.KIND}/{name}"
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            patch = status_patch(
                current, status, kind=model.KIND, controller_name=self.controller_name, now=self._clock()
            )
            if patch is None:
                return "unchanged"
            if not self.may_write():  # leadership can end between two requests
                return "skipped"
            try:
                result = self.api.patch_status(res, namespace, name, patch)
            except Conflict:
                log.info("status of %s changed meanwhile (attempt #%d); reading it again", ref, attempt)
                try:
                    current = self.api.get(res, namespace, name, subresource="status")
                except NotFound:
                    return "skipped"
                except SourceError as exc:
                    log.warning("cannot read %s: %s", ref, exc)
                    return "failed"
                continue
            except NotFound:
                return "skipped"  # deleted meanwhile
            except SourceError as exc:
                log.warning("cannot write status of %s: %s", ref, exc)
                return "failed"
            patched_rv = str((current.get("metadata") or {}).get("resourceVersion"))
            self._written[(model.KIND, namespace, name)] = (patched_rv, result)
            self.writes += 1
            log.info(
                "status written %s generation=%s resourceVersion=%s",
                ref,
                (result.get("metadata") or {}).get("generation"),
                (result.get("metadata") or {}).get("resourceVersion"),
            )
            return "written"
        log.warning("status of %s: still conflicting after %d attempts; next round", ref, _CONFLICT_ATTEMPTS)
        return "failed"

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Write whenever poked, until ``stop``; failed writes are retried with growing delays."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._latest is not None:
            self._wake.set()  # submitted before we ran
        retry_s = _RETRY_FAILED_S[0]
        failing = False
        while not stop.is_set():
            waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
            try:
                await asyncio.wait(
                    waiters, timeout=retry_s if failing else None, return_when="FIRST_COMPLETED"
                )
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if stop.is_set():
                return
            self._wake.clear()
            statuses = self._latest
            if statuses is None or not self.may_write():
                continue
            report = await asyncio.to_thread(self.write, statuses)
            failing = report.failed > 0
            retry_s = min(retry_s * 2, _RETRY_FAILED_S[1]) if failing else _RETRY_FAILED_S[0]
            if report.written or report.failed:
                log.info(
                    "status round: written=%d unchanged=%d failed=%d skipped=%d",
                    report.written,
                    report.unchanged,
                    report.failed,
                    report.skipped,
                )
