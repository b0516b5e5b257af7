"""Watching one kind of the Kubernetes API, in kopf's three layers, each in a thread of its own:

- ``watch_once``: one watch request from the cursor's resourceVersion; applies every event to
  the sink and advances the cursor per event (bookmarks included), until the stream ends.
- ``continuous_watch``: list first, then watch from the list's resourceVersion, again and again:
  a stream that ended (``timeoutSeconds``) or broke (a cut connection) is re-watched from the
  last resourceVersion, ``410 Gone`` relists. Errors back off exponentially (``tenacity``),
  keeping the resourceVersion, so an outage costs no event. Returns when the kind is gone (404).
- ``infinite_watch``: discovery first (which version and plural the server serves the kind
  under; a kind with no CRD is skipped with one warning and picked up when the CRD appears),
  then ``continuous_watch``, until stopped.

Every loop ends when the stop event is set; ``iterations`` bounds them further in tests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from tenacity import RetryCallState, Retrying, retry_if_exception, wait_exponential, wait_random

from meshxds.errors import SourceError, WatchExpired
from meshxds.sources.kube_api import ApiError, ApiResource, ApiUnavailable, Forbidden, KubeApi, NotFound

__all__ = [
    "CRD_GROUP",
    "Cursor",
    "Discovery",
    "Interrupt",
    "Sink",
    "WatchSettings",
    "WatchThread",
    "continuous_watch",
    "infinite_watch",
    "watch_once",
]

log = logging.getLogger(__name__)

CRD_GROUP = "apiextensions.k8s.io"
JSON = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchSettings:
    timeout_s: int = 300
    """``timeoutSeconds`` of each watch request (client-go uses 5 to 10 minutes)."""
    read_timeout_s: float = 360.0
    """Give up on a silent connection after this long (half-open TCP after a network cut)."""
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    """Exponential backoff between failed attempts, with jitter; also bounds catch-up after an
    outage (the API server is retried at least this often)."""
    discovery_interval_s: float = 30.0
    """How often a kind with no CRD is looked for again when CRDs cannot be watched."""


class Sink(Protocol):
    """Where one kind's objects go."""

    def listed(self, items: list[JSON]) -> None:
        """A complete list: replaces everything known about the kind."""

    def event(self, event_type: str, obj: JSON) -> None:
        """ADDED, MODIFIED or DELETED."""

    def absent(self) -> None:
        """The kind is not served."""


class Discovery:
    """Which version and plural the server serves each kind under; cached until ``invalidate()``
    (a CRD changed) or ``max_age_s``. Thread-safe; waiters wake on every invalidation."""

    def __init__(self, api: KubeApi, *, max_age_s: float = 30.0) -> None:
        self._api = api
        self._max_age_s = max_age_s
        self._cond = threading.Condition()
        self._groups: dict[str, list[str]] | None = None
        self._fetched_at = 0.0
        self._resources: dict[tuple[str, str], list[ApiResource] | None] = {}
        self.generation = 0

    def invalidate(self) -> None:
        with self._cond:
            self._groups = None
            self._resources.clear()
            self.generation += 1
            self._cond.notify_all()

    def wait_changed(self, since: int, timeout_s: float, stop: threading.Event) -> None:
        """Until ``invalidate()`` after generation ``since``, ``timeout_s`` or stop (polled briefly)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.generation == since and not stop.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(min(remaining, 0.5))

    def resolve(self, group: str, kind: str, versions: tuple[str, ...]) -> ApiResource | None:
        """The first of ``versions`` (the model's preference order) that serves ``kind``."""
        with self._cond:
            if self._groups is None or time.monotonic() - self._fetched_at > self._max_age_s:
                self._groups = self._api.group_versions()
                self._fetched_at = time.monotonic()
                self._resources.clear()
            served = self._groups.get(group, [])
            for version in versions:
                if version not in served:
                    continue
                if (group, version) not in self._resources:
                    try:
                        self._resources[(group, version)] = self._api.resources(group, version)
                    except NotFound:  # listed in /apis but not served yet (a CRD being established)
                        self._resources[(group, version)] = None
                for res in self._resources[(group, version)] or ():
                    if res.kind == kind:
                        return res
            return None


class Interrupt:
    """The watch response in flight, so another thread can cut it (``stop`` ends a watch at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._response: Any = None

    def set(self, response: Any) -> None:
        with self._lock:
            self._response = response

    def cut(self) -> None:
        with self._lock:
            response = self._response
        if response is None:
            return
        try:
            shutdown = getattr(response, "shutdown", None)  # urllib3 >= 2.3
            if shutdown is not None:
                shutdown()
            else:
                response.close()
        except Exception:  # already closed, or closing races the reader: either way it stops
            log.debug("cutting a watch response failed", exc_info=True)


def _event_rv(obj: Mapping[str, Any], default: str) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or default)


@dataclass(slots=True)
class Cursor:
    """Where a watch resumes: the newest resourceVersion applied to the sink ("" = list first).
    Advanced per event, so a connection cut mid-stream resumes after the last event applied."""

    rv: str = ""


def watch_once(
    api: KubeApi,
    res: ApiResource,
    sink: Sink,
    *,
    cursor: Cursor,
    settings: WatchSettings,
    stop: threading.Event,
    interrupt: Interrupt | None = None,
) -> int:
    """One watch request from ``cursor.rv`` until the stream ends; returns how many events came."""
    events = api.watch(
        res,
        resource_version=cursor.rv,
        timeout_s=settings.timeout_s,
        read_timeout_s=settings.read_timeout_s,
        on_open=interrupt.set if interrupt is not None else lambda response: None,
    )
    count = 0
    try:
        for event in events:
            count += 1
            event_type = str(event.get("type", ""))
            obj = event.get("object")
            if not isinstance(obj, dict):
                log.warning("watch %s: event %s without an object; ignored", res.path(), event_type)
                continue
            if event_type in ("ADDED", "MODIFIED", "DELETED"):
                sink.event(event_type, obj)
                cursor.rv = _event_rv(obj, cursor.rv)
            elif event_type == "BOOKMARK":
                cursor.rv = _event_rv(obj, cursor.rv)
            elif event_type == "ERROR":
                code = int(obj.get("code") or 0)
                message = f"watch {res.path()}: {obj.get('reason', '')}: {obj.get('message', '')}"
                if code == 410:
                    raise WatchExpired(message)
                if code == 0 or code == 429 or code >= 500:
                    raise ApiUnavailable(message)
                raise ApiError(code, message)
            else:
                log.warning("watch %s: unknown event type %r; ignored", res.path(), event_type)
            if stop.is_set():
                break
    finally:
        if interrupt is not None:
            interrupt.set(None)
        events.close()
    return count


def _retrying(
    what: str, settings: WatchSettings, stop: threading.Event, give_up: tuple[type[BaseException], ...]
) -> Retrying:
    def retryable(exc: BaseException) -> bool:
        return isinstance(exc, ApiUnavailable | ApiError) and not isinstance(exc, give_up)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        # The first failure and every tenth are worth a warning; the rest of an outage is noise.
        first = state.attempt_number == 1 or state.attempt_number % 10 == 0
        level = logging.WARNING if first else logging.DEBUG
        log.log(
            level, "%s failed (attempt #%d): %s; retrying in %.1fs", what, state.attempt_number, exc, wait
        )

    def sleep(seconds: float) -> None:
        stop.wait(seconds)  # a stop ends the wait at once

    return Retrying(
        retry=retry_if_exception(retryable),
        # Jitter spreads the retries of every kind's thread after a shared outage.
        wait=wait_exponential(multiplier=settings.backoff_initial_s, max=settings.backoff_max_s)
        + wait_random(0, settings.backoff_initial_s),
        stop=lambda state: stop.is_set(),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


def continuous_watch(
    api: KubeApi,
    res: ApiResource,
    sink: Sink,
    *,
    settings: WatchSettings,
    stop: threading.Event,
    interrupt: Interrupt | None = None,
    give_up: tuple[type[BaseException], ...] = (NotFound,),
    iterations: int | None = None,
) -> None:
    """List, then watch forever from the newest resourceVersion; relist on 410. Returns when
    stopped, after ``iterations`` list/watch requests, or raises what ``give_up`` names (404:
    the kind went away)."""
    cursor = Cursor()
    done = 0
    while not stop.is_set() and (iterations is None or done < iterations):
        try:
            what = f"{'watch' if cursor.rv else 'list'} {res.path()}"
            for attempt in _retrying(what, settings, stop, give_up):
                with attempt:
                    done += 1
                    if not cursor.rv:
                        items, rv = api.list(res)
                        sink.listed(items)
                        cursor.rv = rv
                        log.debug("listed %s: %d objects at resourceVersion %s", res.path(), len(items), rv)
                    else:
                        started = time.monotonic()
                        count = watch_once(
                            api, res, sink, cursor=cursor, settings=settings, stop=stop, interrupt=interrupt
                        )
                        if count == 0 and time.monotonic() - started < 1.0:
                            # Ended at once with nothing new: do not spin on a server that does this.
                            stop.wait(settings.backoff_initial_s)
        except WatchExpired as exc:
            log.info("%s; relisting", exc)
            cursor.rv = ""
        except SourceError:
            if stop.is_set():
                return
            raise


def infinite_watch(
    api: KubeApi,
    discovery: Discovery,
    *,
    group: str,
    kind: str,
    versions: tuple[str, ...],
    sink: Sink,
    settings: WatchSettings,
    stop: threading.Event,
    interrupt: Interrupt | None = None,
    on_resource: Callable[[ApiResource | None], None] = lambda res: None,
    iterations: int | None = None,
) -> None:
    """Discover the kind, watch it while it is served, wait for it while it is not; until stopped."""
    name = f"{group or 'core'}/{kind}"
    warned = False
    rounds = 0
    while not stop.is_set() and (iterations is None or rounds < iterations):
        rounds += 1
        since = discovery.generation
        res: ApiResource | None = None
        try:
            for attempt in _retrying(f"discovery of {name}", settings, stop, ()):
                with attempt:
                    res = discovery.resolve(group, kind, versions)
        except SourceError:
            if stop.is_set():
                return
            raise
        on_resource(res)
        if res is None:
            if not warned:
                log.warning(
                    "%s (%s) is not served by the API server (CRD not installed?); skipped until it is",
                    name,
                    ", ".join(versions),
                )
                warned = True
            sink.absent()
            discovery.wait_changed(since, settings.discovery_interval_s, stop)
            continue
        if warned:
            log.info("%s is served now as %s; watching it", name, res.api_version)
            warned = False
        try:
            continuous_watch(
                api,
                res,
                sink,
                settings=settings,
                stop=stop,
                interrupt=interrupt,
                give_up=(NotFound, Forbidden),
            )
        except NotFound as exc:
            log.warning("%s went away (%s); looking for it again", name, exc)
            discovery.invalidate()
        except Forbidden as exc:
            # Treated as absent, so the rest is served; RBAC may be fixed later.
            log.warning("%s: %s; skipped, trying again in %.0fs", name, exc, settings.discovery_interval_s)
            sink.absent()
            discovery.wait_changed(discovery.generation, settings.discovery_interval_s, stop)


class WatchThread:
    """``infinite_watch`` of one kind in a daemon thread, stoppable at once."""

    def __init__(self, name: str, target: Callable[[Interrupt], None]) -> None:
        self.interrupt = Interrupt()
        self._target = target
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.failed: BaseException | None = None

    def _run(self) -> None:
        try:
            self._target(self.interrupt)
        except BaseException as exc:  # a bug must be visible, not a silently dead thread
            self.failed = exc
            log.exception("%s stopped", self._thread.name)

    def start(self) -> None:
        self._thread.start()

    def cut(self) -> None:
        self.interrupt.cut()

    def join(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
