"""The ``grpc.aio`` xDS server: ADS (SotW and Delta), the per-type services, gRPC health.

Every RPC goes through one ``_serve_stream``: a reader task reads the requests, the cache's
generation listener puts a wake-up on a bounded queue, and the handler alone writes what the
sans-IO stream (``AdsStream``/``DeltaAdsStream``) says to send. Once the stream's identity is
checked, the reader feeds the state machine itself and queues only the responses (most requests
are ACKs); before, requests are queued for the handler. Protocol decisions live in those state
machines, not here. One watchdog task
ends the streams whose client stops reading (a write pending past ``write_timeout``).

Responses arrive as bytes (assembled from pre-serialized resources, shared across streams) and
are written as they are: the response serializer passes bytes through.

Security (``meshxds.xds.auth``): the port is plaintext, TLS or mTLS, the certificate files
re-read when they change. With mTLS every stream's claimed namespace is checked against its
client certificate before anything is sent (PERMISSION_DENIED otherwise); without it, private
Secrets are withheld unless ``XdsSecurity.allow_insecure_secrets``.
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

from meshxds.identity import ProxyIdentity
from meshxds.xds.auth import (
    PeerIdentity,
    PeerIdentityError,
    ReloadingTls,
    TlsMaterial,
    XdsSecurity,
    XdsTransport,
    peer_identity,
    refusal,
    without_private_secrets,
)
from meshxds.xds.cache import (
    TYPE_CLUSTER,
    TYPE_ENDPOINT,
    TYPE_LISTENER,
    TYPE_ROUTE,
    TYPE_SECRET,
    Snapshot,
    SnapshotCache,
)
from meshxds.xds.registry import Connection, ConnectionRegistry, StreamObserver
from meshxds.xds.stream import Ack, Action, Nack, Send, Stale, XdsProtocolError, XdsStream
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


_WAKE: Final = _Wake()


@dataclass(slots=True)
class _Waker:
    """The cache's generation listener for one stream: at most one wake-up queued at a time."""

    events: asyncio.Queue[_Event]
    pending: bool = False

    def __call__(self) -> None:
        if self.pending:
            return
        try:
            self.events.put_nowait(_WAKE)
        except asyncio.QueueFull:
            return  # the handler has events to take, and asks the cache for a snapshot after each
        self.pending = True


@dataclass(frozen=True, slots=True)
class _Closed:
    """The request stream ended (``error`` is ``None`` on a clean half-close)."""

    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _Abort:
    """End the stream with this gRPC status."""

    code: grpc.StatusCode
    details: str


@dataclass(slots=True)
class _Trust:
    """What one stream is trusted with: the certificate's identity (mTLS), once its claim is checked."""

    peer: PeerIdentity | None
    """With mTLS, what the client certificate proves; ``None`` otherwise."""
    checked: ProxyIdentity | None = None
    """The claimed identity, once accepted (the stream then holds a view of it, if any)."""
    withheld: tuple[str, ...] = ()
    """Private Secrets last withheld from this stream (logged when it changes)."""
    queued: int = 0
    """Requests the reader queued for the handler and the handler has not taken yet."""
    deciding: bool = False
    """The handler is between taking an event and writing what it decided (it may await a
    snapshot build meanwhile): a request read now must wait its turn, or its responses could
    be written before earlier ones."""


@dataclass(frozen=True, slots=True)
class _Sends:
    """Responses the reader's handling of a request produced, for the handler to write in order."""

    sends: tuple[Send, ...]


_Event: TypeAlias = "Message | _Wake | _Closed | _Sends | _Abort"
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
        security: XdsSecurity | None = None,
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

        ``security`` (default: plaintext, private keys withheld) says how the port is served
        and what an unauthenticated stream may receive.
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
        self._security = security or XdsSecurity()
        self._tls: ReloadingTls | None = None
        # Secret-less views of snapshots for unauthenticated streams, one per identity in use,
        # so the streams of an identity share it (and the responses built from it).
        self._views: dict[ProxyIdentity, tuple[Snapshot, Snapshot, tuple[str, ...]]] = {}
        self._view_users: dict[ProxyIdentity, int] = {}
        self._server: grpc.aio.Server | None = None
        # Handlers inside a write, with its deadline; those the watchdog cancelled for it.
        self._writes: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog_task: asyncio.Task[None] | None = None
        self.health = health.aio.HealthServicer()
        """The ``grpc.health.v1`` servicer: SERVING once started, NOT_SERVING from ``stop``."""

    @property
    def registry(self) -> ConnectionRegistry:
        return self._registry

    @property
    def security(self) -> XdsSecurity:
        return self._security

    async def start(self, address: str) -> int:
        """Listen on ``address`` (``127.0.0.1:0`` picks a free port); return the bound port."""
        if self._server is not None:
            raise RuntimeError("XdsServer already started")
        server = grpc.aio.server(options=self._grpc_options)
        server.add_generic_rpc_handlers(self._handlers())
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self._security.tls is None:
            port = int(server.add_insecure_port(address))
        else:
            port = int(server.add_secure_port(address, self._credentials()))
        if port == 0:
            raise OSError(f"cannot bind the xDS server to {address}")
        await server.start()
        self._server = server
        self._watchdog_task = asyncio.create_task(self._watchdog(), name="xds-write-watchdog")
        for service in ("", ADS_SERVICE):
            await self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "xDS server listening address=%s port=%d transport=%s private_keys=%s",
            address,
            port,
            self._security.transport.value,
            "withheld" if self._security.withholds_secrets else "served",
        )
        return port

    def _credentials(self) -> grpc.ServerCredentials:
        """TLS credentials whose files are re-read when they change (checked at each handshake)."""
        assert self._security.tls is not None
        self._tls = tls = ReloadingTls(self._security.tls)  # raises TlsConfigError on bad files

        def configuration(material: TlsMaterial) -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(material.key_pem, material.chain_pem)], root_certificates=material.client_ca_pem
            )

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by grpc core on a handshake, on one of its threads: never raise from here.
            try:
                material = tls.poll()
            except Exception:
                log.exception("xDS TLS reload failed; keeping the previous certificate")
                return None
            return configuration(material) if material is not None else None

        return grpc.dynamic_ssl_server_credentials(
            configuration(tls.current),
            fetch,
            require_client_authentication=self._security.transport is XdsTransport.MTLS,
        )

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, then end every stream within ``grace`` seconds."""
        server, self._server = self._server, None
        if server is None:
            return
        await self.health.enter_graceful_shutdown()
        await server.stop(grace)
        watchdog, self._watchdog_task = self._watchdog_task, None
        if watchdog is not None:
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
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
            trust = self._trust(context)
            if isinstance(trust, _Abort):
                await context.abort(trust.code, trust.details)
            assert isinstance(trust, _Trust)
            try:
                stream.on_request(request)
            except XdsProtocolError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)
            assert stream.identity is not None
            refused = self._check(trust, stream.identity, node_id=request.node.id, peer=context.peer())
            if refused is not None:
                await context.abort(refused.code, refused.details)
            snapshot = await self._cache.snapshot(stream.identity)
            if snapshot is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "no configuration yet")
            assert snapshot is not None
            if self._security.withholds_secrets:
                snapshot, withheld = without_private_secrets(snapshot)
                self._log_withheld(trust, withheld, node_id=request.node.id)
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
        trust = self._trust(context)
        if isinstance(trust, _Abort):
            # Before reading anything: a certificate that proves no namespace gets nothing.
            await context.abort(trust.code, trust.details)
        assert isinstance(trust, _Trust)
        conn = Connection(id=next(self._ids), stream=stream, peer=context.peer() or "")
        events: asyncio.Queue[_Event] = asyncio.Queue(maxsize=self._queue_size)
        waker = _Waker(events)
        stop_listening = self._cache.listen(waker)
        tasks = (asyncio.create_task(self._read(conn, requests, events, trust), name=f"xds-read-{conn.id}"),)
        self._notify(lambda o: o.on_stream_open(conn))
        log.debug("stream open id=%d mode=%s peer=%s", conn.id, stream.mode, conn.peer)
        try:
            abort = await self._run(conn, events, context, trust, waker)
        finally:
            # Synchronous cleanup first: gRPC may cancel this handler again while it awaits below.
            stop_listening()
            for task in tasks:
                task.cancel()
            self._notify(lambda o: o.on_stream_close(conn))
            if trust.checked is not None and self._security.withholds_secrets:
                self._release_view(trust.checked)
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
        trust: _Trust,
        waker: _Waker,
    ) -> _Abort | None:
        """The handler loop: the only place that writes, and that takes new snapshots."""
        stream = conn.stream
        while True:
            event = await events.get()
            trust.deciding = True
            actions: list[Action] = []
            if event is _WAKE:
                waker.pending = False
            elif isinstance(event, _Sends):
                actions.extend(event.sends)
            elif isinstance(event, _Closed):
                if event.error is not None and not isinstance(event.error, asyncio.CancelledError):
                    log.info("stream read failed id=%d node=%s: %r", conn.id, conn.node_id, event.error)
                return None
            elif isinstance(event, _Abort):
                return event
            else:
                trust.queued -= 1
                try:
                    actions = stream.on_request(event)
                except XdsProtocolError as exc:
                    return self._protocol_error(conn, exc)
                self._notify_request(conn, str(getattr(event, "type_url", "")))
            if stream.identity is not None and trust.checked is None:
                # The first request fixed the claimed identity: check it before anything is sent.
                refused = self._check(trust, stream.identity, node_id=conn.node_id, peer=conn.peer)
                if refused is not None:
                    return refused
                trust.checked = stream.identity
                if self._security.withholds_secrets:
                    self._view_users[stream.identity] = self._view_users.get(stream.identity, 0) + 1
            if stream.identity is not None:
                # Memoized per identity and generation, so asking on every event is cheap.
                snapshot = await self._cache.snapshot(stream.identity)
                if snapshot is not None and self._security.withholds_secrets:
                    snapshot = self._view(stream.identity, snapshot, trust, node_id=conn.node_id)
                if snapshot is not None and snapshot is not stream.snapshot:
                    actions.extend(stream.on_snapshot(snapshot))
            trust.deciding = False
            try:
                for action in actions:
                    await self._apply(conn, action, context)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task not in self._expired:
                    raise
                # The watchdog's cancellation, not gRPC's: a client that stops reading would pin
                # its responses in memory forever.
                self._expired.discard(task)
                log.warning("write timed out id=%d node=%s; closing the stream", conn.id, conn.node_id)
                raise

    def _trust(self, context: _Context) -> _Trust | _Abort:
        """With mTLS, what the client certificate proves (grpc verified it against the client CA)."""
        if self._security.transport is not XdsTransport.MTLS:
            return _Trust(peer=None)
        certs = (context.auth_context() or {}).get("x509_pem_cert") or ()
        if not certs:
            return _Abort(grpc.StatusCode.UNAUTHENTICATED, "xDS needs a client certificate")
        try:
            return _Trust(peer=peer_identity(certs[0], trust_domain=self._security.trust_domain))
        except PeerIdentityError as exc:
            log.warning("xDS client refused peer=%s: %s", context.peer(), exc)
            return _Abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))

    @staticmethod
    def _check(trust: _Trust, identity: ProxyIdentity, *, node_id: str, peer: str) -> _Abort | None:
        """PERMISSION_DENIED when the claimed identity is not the certificate's namespace."""
        if trust.peer is None:
            return None
        reason = refusal(trust.peer, identity)
        if reason is None:
            return None
        log.warning("xDS stream refused node=%s peer=%s claimed=%s: %s", node_id, peer, identity, reason)
        return _Abort(grpc.StatusCode.PERMISSION_DENIED, reason)

    def _view(self, identity: ProxyIdentity, snapshot: Snapshot, trust: _Trust, *, node_id: str) -> Snapshot:
        """``snapshot`` without private Secrets, shared by the streams of ``identity``."""
        memo = self._views.get(identity)
        if memo is None or memo[0] is not snapshot:
            view, withheld = without_private_secrets(snapshot)
            memo = self._views[identity] = (snapshot, view, withheld)
        self._log_withheld(trust, memo[2], node_id=node_id)
        return memo[1]

    def _release_view(self, identity: ProxyIdentity) -> None:
        users = self._view_users.get(identity, 0) - 1
        if users > 0:
            self._view_users[identity] = users
        else:
            self._view_users.pop(identity, None)
            self._views.pop(identity, None)

    def _log_withheld(self, trust: _Trust, withheld: tuple[str, ...], *, node_id: str) -> None:
        if withheld and withheld != trust.withheld:
            log.warning(
                "private keys withheld node=%s secrets=%s: xDS is %s, no certificate proves this proxy's "
                "identity (serve mTLS with --xds-client-ca, or pass --allow-insecure-secrets)",
                node_id,
                ",".join(withheld),
                self._security.transport.value,
            )
        trust.withheld = withheld

    @staticmethod
    def _protocol_error(conn: Connection, exc: XdsProtocolError) -> _Abort:
        log.warning("protocol error id=%d node=%s: %s", conn.id, conn.node_id, exc.message)
        return _Abort(grpc.StatusCode.INVALID_ARGUMENT, exc.message)

    async def _apply(self, conn: Connection, action: Action, context: _Context) -> None:
        if isinstance(action, Send):
            await self._write(context, action.response)
            # Per stream at DEBUG (--verbose): a change fans out to thousands of streams, and two
            # INFO lines each (push, ACK) cost the loop more than the pushes do. /debug/syncz,
            # `meshxds status` and the metrics show every stream's state at any time.
            log.debug(
                "push node=%s type=%s version=%s nonce=%s resources=%d removed=%d",
                conn.node_id, _short(action.type_url), action.version, action.nonce,
                len(action.resources), len(action.removed),
            )  # fmt: skip
            self._notify(lambda o: o.on_response(conn, action))
        else:
            self._record(conn, action)

    def _record(self, conn: Connection, action: Ack | Nack | Stale) -> None:
        """Log and report what a request said (no I/O: the reader does it as it reads)."""
        node, type_name = conn.node_id, _short(action.type_url)
        if isinstance(action, Ack):
            log.debug(
                "ACK node=%s type=%s version=%s nonce=%s", node, type_name, action.version, action.nonce
            )
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

    async def _read(
        self, conn: Connection, requests: AsyncIterator[Message], events: asyncio.Queue[_Event], trust: _Trust
    ) -> None:
        """The only reader of the request iterator.

        Until the handler has checked the stream's identity, and whenever requests wait in the
        queue, a request is queued for the handler. Otherwise it is handled here, as it is read:
        the state machine is synchronous and the loop runs one task at a time, so this is as if
        the handler did it, and only the responses it produces (most requests are ACKs, which
        produce none) go to the handler to write. A push to thousands of streams is answered by
        thousands of ACKs: one task switch each, not two.
        """
        error: BaseException | None = None
        stream = conn.stream
        try:
            async for request in requests:
                if trust.checked is None or trust.queued or trust.deciding:
                    trust.queued += 1
                    await events.put(request)
                    continue
                try:
                    actions = stream.on_request(request)
                except XdsProtocolError as exc:
                    await events.put(self._protocol_error(conn, exc))
                    return
                self._notify_request(conn, str(getattr(request, "type_url", "")))
                sends: list[Send] = []
                for action in actions:
                    if isinstance(action, Send):
                        sends.append(action)
                    else:
                        self._record(conn, action)
                if sends:
                    await events.put(_Sends(tuple(sends)))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client reset the stream, a decode error, ...
            error = exc
        await events.put(_Closed(error))

    async def _write(self, context: _Context, response: bytes) -> None:
        """``context.write`` under the write watchdog: one deadline in a dict, not a timer per
        write (``asyncio.timeout`` costs as much as the rest of a push's per-stream work)."""
        task = asyncio.current_task()
        if task is None:  # not in a task: nothing the watchdog could cancel
            await context.write(response)
            return
        self._writes[task] = asyncio.get_running_loop().time() + self._write_timeout
        try:
            await context.write(response)
        finally:
            self._writes.pop(task, None)

    async def _watchdog(self) -> None:
        """Cancel every handler whose write has waited longer than ``write_timeout``."""
        loop = asyncio.get_running_loop()
        interval = min(1.0, self._write_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for task, deadline in list(self._writes.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    def _notify_request(self, conn: Connection, type_url: str) -> None:
        self._notify(lambda observer: observer.on_request(conn, type_url))

    def _notify(self, call: Callable[[StreamObserver], None]) -> None:
        for observer in self._observers:
            try:
                call(observer)
            except Exception:
                # An observer (metrics) must never break a stream.
                log.exception("stream observer %r failed", observer)
