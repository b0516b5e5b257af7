"""The ``grpc.aio`` xDS server: ADS (SotW and Delta), the per-type services, gRPC health.

Every RPC goes through one ``_serve_stream``: a reader task drains the request iterator into a
bounded queue, a watcher task turns new cache generations into wake-ups on the same queue, and
the handler alone feeds the sans-IO stream (``AdsStream``/``DeltaAdsStream``) and writes what it
says to send. Protocol decisions live in those state machines, not here.

Responses arrive as bytes (assembled from pre-serialized resources, shared across streams) and
are written as they are: the response serializer passes bytes through.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshxds.xds.cache import (
    TYPE_CLUSTER,
    TYPE_ENDPOINT,
    TYPE_LISTENER,
    TYPE_ROUTE,
    TYPE_SECRET,
    SnapshotCache,
)
from meshxds.xds.status import (
    Ack,
    Action,
    Connection,
    ConnectionRegistry,
    Nack,
    Send,
    Stale,
    StreamObserver,
    XdsProtocolError,
    XdsStream,
)
from meshxds.xds.stream_delta import DeltaAdsStream
from meshxds.xds.stream_sotw import AdsStream

__all__ = ["ADS_SERVICE", "XdsServer"]

log = logging.getLogger(__name__)

ADS_SERVICE: Final = "envoy.service.discovery.v3.AggregatedDiscoveryService"
# Per-type services: (service, method stem, type). Methods are Stream<stem>, Delta<stem>, Fetch<stem>.
_TYPED_SERVICES: Final = (
    ("envoy.service.cluster.v3.ClusterDiscoveryService", "Clusters", TYPE_CLUSTER),
    ("envoy.service.endpoint.v3.EndpointDiscoveryService", "Endpoints", TYPE_ENDPOINT),
    ("envoy.service.listener.v3.ListenerDiscoveryService", "Listeners", TYPE_LISTENER),
    ("envoy.service.route.v3.RouteDiscoveryService", "Routes", TYPE_ROUTE),
    ("envoy.service.secret.v3.SecretDiscoveryService", "Secrets", TYPE_SECRET),
)


@dataclass(frozen=True, slots=True)
class _Wake:
    """A new cache generation: ask the cache for this proxy's snapshot again."""


@dataclass(frozen=True, slots=True)
class _Closed:
    """The request stream ended (``error`` is ``None`` on a clean half-close)."""

    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Abort:
    """End the stream with this gRPC status."""

    code: grpc.StatusCode
    details: str


_Event: TypeAlias = "Message | _Wake | _Closed"
_StreamFactory = Callable[[], XdsStream]
_Context = Any  # grpc.aio.ServicerContext; grpc ships no type information mypy follows
_Servicer = Callable[[AsyncIterator[Message], _Context], Awaitable[None]]


def _short(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


def _passthrough(response: bytes | Message) -> bytes:
    """Responses are serialized by the stream state machines; a message (an empty fetch) is not yet."""
    return response if isinstance(response, bytes) else response.SerializeToString()


class XdsServer:
    """Serve snapshots from ``cache`` over gRPC; report every stream to ``registry``."""

    def __init__(
        self,
        cache: SnapshotCache,
        registry: ConnectionRegistry,
        *,
        observers: Sequence[StreamObserver] = (),
        queue_size: int = 16,
        write_timeout: float = 30.0,
        max_pending_requests: int = 10_000,
        max_pending_requests_hard_limit: int = 20_000,
        max_receive_message_length: int = 16 * 1024 * 1024,
        max_send_message_length: int = -1,
    ) -> None:
        """``observers`` get every stream event after the registry (metrics, tests).

        ``queue_size`` bounds the requests buffered per stream; ``write_timeout`` ends a stream
        whose client stops reading.

        ``max_pending_requests`` (grpc core's ``grpc.server.max_pending_requests``) is how many new
        calls grpc queues before the application picks them up; beyond it, up to the hard limit,
        it cancels calls at random. grpc's default of 1000 failed 5-10% of 2,000 Envoys
        connecting at once (a control-plane restart), so the default here is 10x that.
        ``max_receive_message_length`` bounds a request (grpc's default, 4 MiB, is about 50,000
        EDS names in one request); ``max_send_message_length`` a response (-1: unbounded, a
        full CDS can be tens of MB).
        """
        self._cache = cache
        self._registry = registry
        self._observers: tuple[StreamObserver, ...] = (registry, *observers)
        self._queue_size = queue_size
        self._write_timeout = write_timeout
        self._grpc_options: tuple[tuple[str, int], ...] = (
            ("grpc.server.max_pending_requests", max_pending_requests),
            ("grpc.server.max_pending_requests_hard_limit", max_pending_requests_hard_limit),
            ("grpc.max_receive_message_length", max_receive_message_length),
            ("grpc.max_send_message_length", max_send_message_length),
        )
        self._ids = itertools.count(1)
        self._server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        """The ``grpc.health.v1`` servicer: SERVING once started, NOT_SERVING from ``stop``."""

    @property
    def registry(self) -> ConnectionRegistry:
        return self._registry

    async def start(self, address: str) -> int:
        """Listen on ``address`` (``127.0.0.1:0`` picks a free port); return the bound port."""
        if self._server is not None:
            raise RuntimeError("XdsServer already started")
        server = grpc.aio.server(options=self._grpc_options)
        server.add_generic_rpc_handlers(self._handlers())
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        port = int(server.add_insecure_port(address))
        if port == 0:
            raise OSError(f"cannot bind the xDS server to {address}")
        await server.start()
        self._server = server
        for service in ("", ADS_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info("xDS server listening address=%s port=%d", address, port)
        return port

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, then end every stream within ``grace`` seconds."""
        server, self._server = self._server, None
        if server is None:
            return
        await self.health.enter_graceful_shutdown()
        await server.stop(grace)
        log.info("xDS server stopped")

    def _handlers(self) -> tuple[grpc.GenericRpcHandler, ...]:
        def sotw(type_url: str | None) -> grpc.RpcMethodHandler:
            return grpc.stream_stream_rpc_method_handler(
                self._servicer(lambda: AdsStream(type_url=type_url)),
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_passthrough,
            )

        def delta(type_url: str | None) -> grpc.RpcMethodHandler:
            return grpc.stream_stream_rpc_method_handler(
                self._servicer(lambda: DeltaAdsStream(type_url=type_url)),
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=_passthrough,
            )

        handlers = [
            grpc.method_handlers_generic_handler(
                ADS_SERVICE,
                {"StreamAggregatedResources": sotw(None), "DeltaAggregatedResources": delta(None)},
            )
        ]
        for service, stem, type_url in _TYPED_SERVICES:
            fetch = grpc.unary_unary_rpc_method_handler(
                self._fetcher(type_url),
                request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
                response_serializer=_passthrough,
            )
            methods = {
                f"Stream{stem}": sotw(type_url),
                f"Delta{stem}": delta(type_url),
                f"Fetch{stem}": fetch,
            }
            handlers.append(grpc.method_handlers_generic_handler(service, methods))
        return tuple(handlers)

    def _servicer(self, factory: _StreamFactory) -> _Servicer:
        async def serve(requests: AsyncIterator[Message], context: _Context) -> None:
            await self._serve_stream(factory(), requests, context)

        return serve

    def _fetcher(
        self, type_url: str
    ) -> Callable[[discovery_pb2.DiscoveryRequest, _Context], Awaitable[bytes | Message]]:
        async def fetch(request: discovery_pb2.DiscoveryRequest, context: _Context) -> bytes | Message:
            # REST-style fetch: a one-request SotW stream answered from the current snapshot.
            stream = AdsStream(type_url=type_url)
            request.ClearField("response_nonce")  # a fetch answers no earlier response
            try:
                stream.on_request(request)
            except XdsProtocolError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
            assert stream.identity is not None
            snapshot = await self._cache.snapshot(stream.identity)
            if snapshot is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "no configuration yet")
            assert snapshot is not None
            for action in stream.on_snapshot(snapshot):
                if isinstance(action, Send):
                    return action.response
            return discovery_pb2.DiscoveryResponse(type_url=type_url, version_info=snapshot.version(type_url))

        return fetch

    async def _serve_stream(
        self,
        stream: XdsStream,
        requests: AsyncIterator[Message],
        context: _Context,
    ) -> None:
        """Run one xDS stream until the client goes away, the server stops, or a protocol error."""
        conn = Connection(id=next(self._ids), stream=stream, peer=context.peer() or "")
        events: asyncio.Queue[_Event] = asyncio.Queue(maxsize=self._queue_size)
        tasks = (
            asyncio.create_task(self._read(requests, events), name=f"xds-read-{conn.id}"),
            asyncio.create_task(self._watch(events), name=f"xds-watch-{conn.id}"),
        )
        self._notify(lambda o: o.on_stream_open(conn))
        log.debug("stream open id=%d mode=%s peer=%s", conn.id, stream.mode, conn.peer)
        try:
            abort = await self._run(conn, events, context)
        finally:
            # Synchronous cleanup first: gRPC may cancel this handler again while it awaits below.
            for task in tasks:
                task.cancel()
            self._notify(lambda o: o.on_stream_close(conn))
            log.info("stream closed id=%d node=%s mode=%s", conn.id, conn.node_id, stream.mode)
            await asyncio.gather(*tasks, return_exceptions=True)
        if abort is not None:
            # Outside the try: abort raises, and the cleanup above must not see that as a failure.
            await context.abort(abort.code, abort.details)

    async def _run(
        self,
        conn: Connection,
        events: asyncio.Queue[_Event],
        context: _Context,
    ) -> _Abort | None:
        """The handler loop: the only place that feeds the state machine and writes."""
        stream = conn.stream
        while True:
            event = await events.get()
            if isinstance(event, _Closed):
                if event.error is not None and not isinstance(event.error, asyncio.CancelledError):
                    log.info("stream read failed id=%d node=%s: %r", conn.id, conn.node_id, event.error)
                return None
            actions: list[Action] = []
            if isinstance(event, Message):
                try:
                    actions = stream.on_request(event)
                except XdsProtocolError as exc:
                    log.warning("protocol error id=%d node=%s: %s", conn.id, conn.node_id, exc.message)
                    return _Abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
                self._notify_request(conn, str(getattr(event, "type_url", "")))
            if stream.identity is not None:
                # Memoized per identity and generation, so asking on every event is cheap.
                snapshot = await self._cache.snapshot(stream.identity)
                if snapshot is not None and snapshot is not stream.snapshot:
                    actions.extend(stream.on_snapshot(snapshot))
            try:
                for action in actions:
                    await self._apply(conn, action, context)
            except TimeoutError:
                # A client that stops reading would pin its responses in memory forever.
                log.warning("write timed out id=%d node=%s; closing the stream", conn.id, conn.node_id)
                return _Abort(
                    grpc.StatusCode.UNAVAILABLE, f"response not read within {self._write_timeout:g}s"
                )

    async def _apply(self, conn: Connection, action: Action, context: _Context) -> None:
        node, type_name = conn.node_id, _short(action.type_url)
        if isinstance(action, Send):
            async with asyncio.timeout(self._write_timeout):
                await context.write(action.response)
            log.info(
                "push node=%s type=%s version=%s nonce=%s resources=%d removed=%d",
                node, type_name, action.version, action.nonce, len(action.resources), len(action.removed),
            )  # fmt: skip
            self._notify(lambda o: o.on_response(conn, action))
        elif isinstance(action, Ack):
            log.info("ACK node=%s type=%s version=%s nonce=%s", node, type_name, action.version, action.nonce)
            self._notify(lambda o: o.on_ack(conn, action))
        elif isinstance(action, Nack):
            if action.log:  # rate-limited per stream and type; the message is already truncated
                log.info(
                    "NACK node=%s type=%s version=%s nonce=%s suppressed=%d error=%s",
                    node, type_name, action.version, action.nonce, action.suppressed, action.message,
                )  # fmt: skip
            self._notify(lambda o: o.on_nack(conn, action))
        elif isinstance(action, Stale):
            log.debug("stale request ignored node=%s type=%s nonce=%s", node, type_name, action.nonce)

    @staticmethod
    async def _read(requests: AsyncIterator[Message], events: asyncio.Queue[_Event]) -> None:
        """Drain the request iterator into ``events``; the only reader of the iterator."""
        error: BaseException | None = None
        try:
            async for request in requests:
                await events.put(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client reset the stream, a decode error, ...
            error = exc
        await events.put(_Closed(error))

    async def _watch(self, events: asyncio.Queue[_Event]) -> None:
        """Turn each new cache generation into one wake-up of the handler."""
        generation = self._cache.generation
        while True:
            generation = await self._cache.wait_for_generation(generation)
            await events.put(_Wake())

    def _notify_request(self, conn: Connection, type_url: str) -> None:
        self._notify(lambda observer: observer.on_request(conn, type_url))

    def _notify(self, call: Callable[[StreamObserver], None]) -> None:
        for observer in self._observers:
            try:
                call(observer)
            except Exception:
                # An observer (metrics) must never break a stream.
                log.exception("stream observer %r failed", observer)
