"""``meshxds serve``: source → translation → cache → xDS server, plus the admin endpoint.

Every good read of the source that changes something becomes a new cache generation; a bad
read is reported (logs, ``/debug/config``, metrics) and the last good generation keeps being
served. Reading, translating and building the snapshots of every connected identity run in a
worker thread, so the event loop only serves streams; publishing happens on the loop.

Exposure rules (``check_exposure``, README "Security"): plaintext xDS off loopback needs
``insecure_xds``; the admin endpoint (unauthenticated) off loopback needs ``insecure_admin``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from meshxds.admin import AdminServer, AdminState
from meshxds.conditions import AnalysisMessage, Level
from meshxds.errors import ManifestErrors, MeshxdsError
from meshxds.identity import ProxyIdentity
from meshxds.memory import building
from meshxds.metrics import Metrics
from meshxds.model.manifests import ResourceSet
from meshxds.options import TranslateOptions
from meshxds.pipeline import Pipeline, SnapshotBuilder
from meshxds.sources import manifest_reader
from meshxds.sources.files import DirectorySource, watch_directory
from meshxds.xds.auth import XdsSecurity, XdsTransport, is_loopback
from meshxds.xds.cache import SnapshotCache
from meshxds.xds.registry import ConnectionRegistry
from meshxds.xds.render import snapshot_to_json
from meshxds.xds.server import XdsServer

if TYPE_CHECKING:
    from meshxds.sources.kube import KubeOptions, KubeSource

__all__ = ["ExposureError", "ServeOptions", "Service", "check_exposure", "serve"]

log = logging.getLogger(__name__)


class ExposureError(MeshxdsError):
    """The options expose xDS or admin beyond loopback without the flag that says so."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeOptions:
    config_dir: str | None = None
    kube: KubeOptions | None = None
    """The Kubernetes source instead of ``config_dir``."""
    xds_address: str = "127.0.0.1:18000"
    admin_address: str = "127.0.0.1:18080"
    translate: TranslateOptions = field(default_factory=TranslateOptions)
    grace_s: float = 5.0
    debounce_s: float = 0.1
    """A burst of changes is read this long after its last change..."""
    debounce_max_s: float = 1.0
    """...or this long after its first, whichever comes first."""
    security: XdsSecurity = field(default_factory=XdsSecurity)
    """TLS/mTLS of the xDS port, and whether unauthenticated streams get private keys."""
    insecure_xds: bool = False
    """Allow plaintext xDS on a non-loopback address."""
    insecure_admin: bool = False
    """Allow the (unauthenticated) admin endpoint on a non-loopback address."""


def check_exposure(options: ServeOptions) -> list[str]:
    """What the options expose without having said so explicitly; empty when they may run."""
    problems = []
    if (
        options.security.transport is XdsTransport.PLAINTEXT
        and not is_loopback(options.xds_address)
        and not options.insecure_xds
    ):
        problems.append(
            f"--xds-address {options.xds_address} is not loopback: serve TLS (--xds-tls-cert, "
            "--xds-tls-key, --xds-client-ca) or pass --insecure-xds to serve plaintext anyway"
        )
    if not is_loopback(options.admin_address) and not options.insecure_admin:
        problems.append(
            f"--admin-address {options.admin_address} is not loopback: the admin endpoint has no "
            "authentication (config dumps, status); pass --insecure-admin to expose it anyway"
        )
    return problems


class Service:
    """The running parts of one server; ``run`` until ``stop`` is called."""

    def __init__(self, options: ServeOptions, *, prefetch: manifest_reader.Prefetch | None = None) -> None:
        self.options = options
        # The config directory's YAML, already being read by a child process (``meshxds serve``
        # starts it before importing this module).
        self._prefetch = prefetch
        self.metrics = Metrics()
        self.registry = ConnectionRegistry()
        self.cache = SnapshotCache()
        self.state = AdminState()
        self.xds = XdsServer(self.cache, self.registry, observers=(self.metrics,), security=options.security)
        self.admin = AdminServer(
            state=self.state, registry=self.registry, metrics=self.metrics, config_dump=self.config_dump
        )
        self.pipeline = Pipeline(options=options.translate)
        self.xds_port = 0
        """The bound xDS port once ``run`` has started (``127.0.0.1:0`` picks one)."""
        self.admin_port = 0
        self._builder: SnapshotBuilder | None = None
        self._stop = asyncio.Event()
        self._kube: KubeSource | None = None
        self._skipped: frozenset[str] = frozenset()
        self._statuses: object = None
        self._logged: tuple[tuple[str, ...], tuple[AnalysisMessage, ...]] = ((), ())
        self._translation_errors: tuple[dict[str, str], ...] = ()

    def config_dump(self, node_id: str) -> dict[str, Any] | None:
        conn = self.registry.find(node_id)
        if conn is None or conn.stream.identity is None:
            return None
        return snapshot_to_json(self.cache.snapshot_for(conn.stream.identity))

    def publish(self, builder: SnapshotBuilder, read: ResourceSet | None = None) -> None:
        """Serve ``builder``'s generation (on the loop: no await in between), showing ``read``'s
        invalid objects. The same builder again means the read changed no object that is served:
        nothing is pushed, but its errors (perhaps fewer, perhaps more) are shown."""
        translation = builder.translation
        if builder is not self._builder:
            self._builder = builder
            self.cache.set_builder(builder)
            log.info(
                "config published generation=%d objects=%d", self.cache.generation, len(translation.resources)
            )
            warnings = translation.resources.warnings + translation.gateway_api.warnings
            if (warnings, translation.istio_messages) != self._logged:  # an endpoint edit keeps them
                for warning in warnings:
                    log.warning("%s", warning)
                for message in translation.istio_messages:
                    level = logging.ERROR if message.level is Level.ERROR else logging.WARNING
                    log.log(level, "%s code=%s reason=%s", message, message.type.code, message.type.name)
                self._logged = (warnings, translation.istio_messages)
            self._translation_errors = tuple(translation.error_entries())
            self.state.warnings = tuple(translation.warning_entries())
            if self._kube is not None:
                self._kube.published(translation.statuses)
        self.state.generation = self.cache.generation
        # Both sources leave invalid objects out (or keep serving their last good version) instead
        # of rejecting the read: show them, and log each once, when it appears.
        # The read's own: a read that changes only which objects are invalid keeps the builder.
        skipped = (read or translation.resources).errors
        self.state.errors = tuple(e.as_dict() for e in skipped) + self._translation_errors
        texts = frozenset(str(e) for e in skipped)
        for text in sorted(texts - self._skipped):
            log.error("manifest error (object not served): %s", text)
        self._skipped = texts
        self.metrics.config_errors.set(len(skipped))
        if translation.statuses is not self._statuses:
            # 30,000 dicts at 10k routes: not again for an endpoint edit (same statuses), on the loop.
            self._statuses = translation.statuses
            self.state.statuses = tuple(s.as_dict() for s in translation.statuses)
        self.state.ready = True
        self.metrics.config_loads.labels(result="ok").inc()
        self.metrics.config_generation.set(self.cache.generation)

    def reject(self, errors: ManifestErrors) -> None:
        self.state.errors = tuple(e.as_dict() for e in errors.errors)
        self.metrics.config_loads.labels(result="error").inc()
        for error in errors.errors:
            log.error("manifest error: %s", error)
        log.error(
            "configuration rejected (%d errors); still serving generation=%d",
            len(errors.errors),
            self.cache.generation,
        )

    async def _consume(self, reads: AsyncIterator[ResourceSet | ManifestErrors]) -> None:
        async for read in reads:
            if isinstance(read, ManifestErrors):
                self.reject(read)
                continue
            # Build now, for every identity connected now or in its grace period (a proxy that
            # reconnects, or a new one of a known gateway, then starts at once: building a large
            # gateway's first snapshot of a generation holds its stream for a third of a second),
            # so the loop only swaps generations.
            identities = {c.stream.identity for c in self.registry.connections if c.stream.identity}
            identities |= self.cache.identities()
            started = time.perf_counter()
            try:
                builder = await asyncio.to_thread(self._update, read, identities)
            except Exception:
                # A translator bug must not take the server down: keep the last good config.
                log.exception("translation failed; still serving generation=%d", self.cache.generation)
                self.metrics.config_loads.labels(result="error").inc()
                continue
            log.info(
                "update path=%s identities=%d took=%.3fs",
                self.pipeline.last_path,
                len(identities),
                time.perf_counter() - started,
            )
            self.publish(builder, read)

    def _update(self, read: ResourceSet, identities: set[ProxyIdentity]) -> SnapshotBuilder:
        with building():
            return self.pipeline.update(read, identities)

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        problems = check_exposure(self.options)
        if problems:
            raise ExposureError("; ".join(problems))
        if self.options.security.transport is not XdsTransport.MTLS and not is_loopback(
            self.options.xds_address
        ):
            log.warning(
                "xDS on %s is %s: any client reaching it may claim any proxy identity",
                self.options.xds_address,
                self.options.security.transport.value,
            )
        self.xds_port = xds_port = await self.xds.start(self.options.xds_address)
        self.admin_port = admin_port = await self.admin.start(self.options.admin_address)
        source = "kubernetes" if self.options.kube is not None else f"config_dir={self.options.config_dir}"
        log.info("serving xds_port=%d admin_port=%d source=%s", xds_port, admin_port, source)
        try:
            reads: AsyncIterator[ResourceSet | ManifestErrors]
            if self.options.kube is not None:
                from meshxds.sources.kube import KubeSource  # loads the kubernetes client only here

                self._kube = KubeSource(self.options.kube)
                reads = self._kube.reads(self._stop)
            elif self.options.config_dir is not None:
                prefetch, self._prefetch = self._prefetch, None
                reads = watch_directory(
                    self.options.config_dir,
                    debounce_ms=round(self.options.debounce_s * 1000),
                    max_wait_ms=round(self.options.debounce_max_s * 1000),
                    stop_event=self._stop,
                    source=DirectorySource(self.options.config_dir, prefetch=prefetch),
                )
            else:
                raise ValueError("ServeOptions needs config_dir or kube")
            async with asyncio.TaskGroup() as tasks:
                if self._kube is not None:
                    tasks.create_task(self._kube.run(self._stop), name="kube-status")
                watcher = tasks.create_task(self._consume(reads), name="source")
                await self._stop.wait()
                watcher.cancel()
        finally:
            if self._prefetch is not None:  # never used: do not leave the child behind
                self._prefetch.close()
            self.state.ready = False
            await self.xds.stop(self.options.grace_s)
            await self.admin.stop()


async def serve(options: ServeOptions, *, prefetch: manifest_reader.Prefetch | None = None) -> None:
    """Run until SIGINT/SIGTERM: health NOT_SERVING, drain streams, stop the source."""
    service = Service(options, prefetch=prefetch)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, service.stop)
    await service.run()
