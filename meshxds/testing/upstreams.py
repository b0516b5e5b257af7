"""Real upstream servers for integration tests and the demo.

Each server is a context manager: ``with H2cOnlyServer(name="a") as up: ... up.port``. It binds
127.0.0.1 on a kernel-chosen port (unless given one) and serves from background threads, so it
works the same from sync tests and from pytest-asyncio tests (whose loop it never touches).

- ``H2cOnlyServer`` speaks only HTTP/2 with prior knowledge (``h2``, sans-IO, on its own asyncio
  loop). Anything else gets ``505`` and a closed connection, so a 200 from it proves HTTP/2 on the wire.
- ``Http1OnlyServer`` speaks only HTTP/1.1 and hangs up on the HTTP/2 connection preface.
- ``GrpcEchoServer`` is a grpcio server for ``protos/echo.proto`` plus the gRPC health service.

Clients to match: ``curl()`` (the real curl, for h2c prior knowledge or HTTP/1.1), ``curl_grpc()``
(a gRPC call as raw h2c bytes, with no client-side deadline), ``echo_call()`` and ``echo_stream()``.

The HTTP servers answer every request with ``200`` and a JSON body
``{"upstream", "protocol", "method", "path", "authority", "headers", "body_bytes"}`` and the
header ``x-upstream-name``. All three count requests and keep the last one.

Demo: ``python -m meshxds.testing.upstreams {h2c,http1,grpc} --port N --name NAME`` serves until
SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, ClassVar, Self

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from meshxds.testing._generated import echo_pb2, echo_pb2_grpc

__all__ = [
    "ECHO_SERVICE",
    "CurlResult",
    "GrpcEchoServer",
    "H2cOnlyServer",
    "Http1OnlyServer",
    "RequestRecord",
    "Upstream",
    "curl",
    "curl_grpc",
    "echo_call",
    "echo_stream",
    "grpc_frame",
    "main",
]

log = logging.getLogger(__name__)

ECHO_SERVICE = "meshxds.echo.v1.Echo"
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_STOP_TIMEOUT = 5.0
# A silent client must not pin a connection handler forever.
_IDLE_TIMEOUT = 120.0
_MAX_BODY = 16 * 1024 * 1024
# Bounds on what an EchoRequest / EchoStreamRequest can ask the gRPC upstream for.
_MAX_WAIT = 60.0
_MAX_STREAM_REPLIES = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """One request as an upstream saw it."""

    protocol: str
    """``HTTP/2`` or ``HTTP/1.1``."""
    method: str
    path: str
    authority: str
    """``:authority`` for HTTP/2, ``Host`` for HTTP/1.1; empty for gRPC (grpcio hides it)."""
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-case names without pseudo-headers; repeated headers joined with ``", "``."""
    body: bytes = b""

    def to_json(self, upstream: str) -> dict[str, Any]:
        return {
            "upstream": upstream,
            "protocol": self.protocol,
            "method": self.method,
            "path": self.path,
            "authority": self.authority,
            "headers": self.headers,
            "body_bytes": len(self.body),
        }


def _join_headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


class Upstream:
    """Base of the test servers: name, address, request log, context-manager lifecycle."""

    protocol: ClassVar[str] = ""

    def __init__(self, *, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._requests = 0
        self._last: RequestRecord | None = None
        self._failures: list[int] = []
        self._path_status: dict[str, int] = {}

    # -- request log (written from server threads, read from the test) --
    def _record(self, record: RequestRecord) -> int:
        """Log a request; the status to answer it with (200 unless a failure is due)."""
        with self._lock:
            self._requests += 1
            self._last = record
            fixed = self._path_status.get(record.path.partition("?")[0])
            if fixed is not None:
                return fixed
            return self._failures.pop(0) if self._failures else 200

    def answer_path(self, path: str, status: int | None) -> None:
        """Answer every request for ``path`` (query ignored) with ``status`` from now on, e.g. a
        health check path set to 503; ``None`` goes back to the usual answer."""
        with self._lock:
            if status is None:
                self._path_status.pop(path, None)
            else:
                self._path_status[path] = status

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` (and the usual body): a backend
        that fails a first attempt, for retries."""
        with self._lock:
            self._failures = [status] * count

    @property
    def requests(self) -> int:
        """How many requests this server has answered."""
        with self._lock:
            return self._requests

    @property
    def last_request(self) -> RequestRecord | None:
        with self._lock:
            return self._last

    @property
    def last_headers(self) -> dict[str, str] | None:
        last = self.last_request
        return None if last is None else dict(last.headers)

    def reset(self) -> None:
        with self._lock:
            self._requests = 0
            self._last = None

    # -- address --
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self!r} is not started")
        return self._port

    @property
    def address(self) -> str:
        """``host:port``, for bootstraps and manifests."""
        return f"{self.host}:{self.port}"

    def _response_body(self, record: RequestRecord) -> bytes:
        return json.dumps(record.to_json(self.name), sort_keys=True).encode() + b"\n"

    # -- lifecycle --
    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port is not None else "not started"
        return f"<{type(self).__name__} {self.name!r} {where}>"


# --------------------------------------------------------------------------- HTTP/2 (h2c) only


@dataclass(slots=True)
class _H2Stream:
    headers: list[tuple[str, str]]
    body: bytearray = field(default_factory=bytearray)


class H2cOnlyServer(Upstream):
    """HTTP/2 cleartext with prior knowledge only; HTTP/1.x gets ``505`` and a closed connection.

    ``answer_pings=False`` plays a half-dead peer: at its first PING a connection goes silent
    (nothing more is written to it, not even the PING ACK h2 queues by itself) while it is still
    read, so only a keepalive timeout on the other side ends it. ``pings`` counts PINGs received.
    """

    protocol = "HTTP/2"
    _REFUSAL_BODY = b"this upstream speaks only HTTP/2 with prior knowledge (h2c)\n"
    REFUSAL = (
        b"HTTP/1.1 505 HTTP Version Not Supported\r\n"
        b"content-type: text/plain\r\n"
        b"connection: close\r\n"
        b"content-length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n" + _REFUSAL_BODY
    )

    def __init__(
        self, *, name: str, host: str = "127.0.0.1", port: int = 0, answer_pings: bool = True
    ) -> None:
        super().__init__(name=name, host=host, port=port)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.refused = 0
        """Connections refused because they did not start with the HTTP/2 preface."""
        self.answer_pings = answer_pings
        self.pings = 0
        """PINGs received (ACKs not counted), over all connections."""

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError(f"{self!r} already started")
        self._started.clear()
        self._start_error = None
        self._thread = threading.Thread(target=self._run, name=f"h2c-{self.name}", daemon=True)
        self._thread.start()
        if not self._started.wait(_STOP_TIMEOUT):
            raise RuntimeError(f"{self!r} did not start within {_STOP_TIMEOUT}s")
        if self._start_error is not None:
            raise RuntimeError(f"{self!r} failed to start") from self._start_error
        return self

    def stop(self) -> None:
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if loop is None or stopping is None or thread is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(stopping.set)
        thread.join(_STOP_TIMEOUT)
        if thread.is_alive():
            log.warning("upstream=%s thread did not stop within %ss", self.name, _STOP_TIMEOUT)
        self._thread = self._loop = self._stopping = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # surfaced by start()
            self._start_error = exc
        finally:
            self._started.set()
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        handlers: set[asyncio.Task[None]] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                await self._serve_connection(reader, writer)
            finally:
                handlers.discard(task)

        server = await asyncio.start_server(on_connect, self.host, self._requested_port)
        self._port = server.sockets[0].getsockname()[1]
        self._started.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in handlers:
                task.cancel()
            if handlers:
                await asyncio.wait(handlers, timeout=_STOP_TIMEOUT)
            await asyncio.wait_for(server.wait_closed(), _STOP_TIMEOUT)

    async def _read_preface(self, reader: asyncio.StreamReader) -> bytes | None:
        """The preface bytes, or None as soon as the input diverges from it (or ends)."""
        buf = b""
        for _ in range(len(HTTP2_PREFACE)):  # at least one byte per read
            chunk = await asyncio.wait_for(reader.read(len(HTTP2_PREFACE) - len(buf)), _IDLE_TIMEOUT)
            buf += chunk
            if not chunk or not HTTP2_PREFACE.startswith(buf):
                return None
            if buf == HTTP2_PREFACE:
                return buf
        return None

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            preface = await self._read_preface(reader)
            if preface is None:
                with self._lock:
                    self.refused += 1
                writer.write(self.REFUSAL)
                await writer.drain()
                return
            conn = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
            )
            conn.initiate_connection()
            streams: dict[int, _H2Stream] = {}
            pending: dict[int, bytes] = {}  # response bytes waiting for flow-control window
            data = preface
            silent = False  # a half-dead peer from its first PING on (answer_pings=False)
            while data:  # ends when the peer closes, idles out, or sends GOAWAY
                events = conn.receive_data(data)
                done = self._handle_events(conn, events, streams, pending)
                pinged = sum(isinstance(e, h2.events.PingReceived) for e in events)
                if pinged:
                    with self._lock:
                        self.pings += pinged
                    silent = silent or not self.answer_pings
                out = conn.data_to_send()  # taken even when silent, so nothing queued is sent later
                if not silent:
                    writer.write(out)
                    await writer.drain()
                if done:
                    return
                try:
                    data = await asyncio.wait_for(reader.read(65536), _IDLE_TIMEOUT)
                except TimeoutError:
                    conn.close_connection()
                    if not silent:
                        writer.write(conn.data_to_send())
                        await writer.drain()
                    return
        except (ConnectionError, TimeoutError, h2.exceptions.ProtocolError) as exc:
            log.debug("upstream=%s connection ended: %r", self.name, exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _handle_events(
        self,
        conn: h2.connection.H2Connection,
        events: list[h2.events.Event],
        streams: dict[int, _H2Stream],
        pending: dict[int, bytes],
    ) -> bool:
        """Apply events; True when the connection is over."""
        for event in events:
            if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                pairs = [(str(k), str(v)) for k, v in event.headers or ()]
                streams[event.stream_id] = _H2Stream(headers=pairs)
            elif isinstance(event, h2.events.DataReceived) and event.stream_id is not None:
                stream = streams.get(event.stream_id)
                if stream is not None and len(stream.body) < _MAX_BODY:
                    stream.body += event.data or b""
                conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id is not None:
                stream = streams.pop(event.stream_id, None)
                if stream is not None:
                    self._respond(conn, event.stream_id, stream, pending)
            elif isinstance(event, h2.events.StreamReset) and event.stream_id is not None:
                streams.pop(event.stream_id, None)
                pending.pop(event.stream_id, None)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id in list(pending):
                    self._flush(conn, stream_id, pending)
            elif isinstance(event, h2.events.ConnectionTerminated):
                return True
        return False

    def _respond(
        self, conn: h2.connection.H2Connection, stream_id: int, stream: _H2Stream, pending: dict[int, bytes]
    ) -> None:
        pseudo = {k: v for k, v in stream.headers if k.startswith(":")}
        record = RequestRecord(
            protocol=self.protocol,
            method=pseudo.get(":method", ""),
            path=pseudo.get(":path", ""),
            authority=pseudo.get(":authority", ""),
            headers=_join_headers((k, v) for k, v in stream.headers if not k.startswith(":")),
            body=bytes(stream.body),
        )
        status = self._record(record)
        body = self._response_body(record)
        head = record.method == "HEAD"
        conn.send_headers(
            stream_id,
            [
                (":status", str(status)),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
                ("x-upstream-name", self.name),
            ],
            end_stream=head,
        )
        if not head:
            pending[stream_id] = body
            self._flush(conn, stream_id, pending)

    @staticmethod
    def _flush(conn: h2.connection.H2Connection, stream_id: int, pending: dict[int, bytes]) -> None:
        """Send as much of the stream's pending body as the peer's windows allow."""
        data = pending.pop(stream_id, b"")
        while data:  # shrinks by >= 1 byte per pass or breaks
            size = min(len(data), conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if size <= 0:
                pending[stream_id] = data
                return
            chunk, data = data[:size], data[size:]
            conn.send_data(stream_id, chunk, end_stream=not data)


# --------------------------------------------------------------------------- HTTP/1.1 only


class _Http1Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Http1OnlyServer

    def __init__(self, address: tuple[str, int], owner: Http1OnlyServer) -> None:
        self.owner = owner
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Http1Handler)


class _Http1Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this the body waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True
    timeout = _IDLE_TIMEOUT  # keep-alive connections end when idle
    server: _Http1Server
    raw_requestline: bytes

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def parse_request(self) -> bool:
        # The h2 preface's first line; hang up without an HTTP/1 answer so an HTTP/2 client fails.
        if self.raw_requestline.startswith(b"PRI * HTTP/2.0"):
            self.close_connection = True
            with self.server.owner._lock:
                self.server.owner.refused += 1
            return False
        return super().parse_request()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            for _ in range(_MAX_BODY):  # one chunk per pass; ends at the 0-size chunk
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(100):  # trailers, then the empty line
                        if self.rfile.readline(65537) in (b"\r\n", b"\n", b""):
                            break
                    break
                body += self.rfile.read(size)
                self.rfile.readline(1024)
            return bytes(body)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""

    def _respond(self) -> None:
        owner = self.server.owner
        record = RequestRecord(
            protocol=owner.protocol,
            method=self.command,
            path=self.path,
            authority=self.headers.get("Host", ""),
            headers=_join_headers(self.headers.items()),
            body=self._read_body(),
        )
        status = owner._record(record)
        delay = owner._take_delay()
        if delay:
            time.sleep(delay)  # a backend that answers too late: the proxy's try may time out
        if status == Http1OnlyServer.DISCONNECT:
            # A connection error after the request was sent: no status line, just the close.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = owner._response_body(record)
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-upstream-name", owner.name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True  # the proxy gave up on a late answer and reset it

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _respond

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("upstream=%s %s", self.server.owner.name, format % args)


class Http1OnlyServer(Upstream):
    """HTTP/1.1 only; a client that opens with the HTTP/2 preface is disconnected."""

    protocol = "HTTP/1.1"
    DISCONNECT: ClassVar[int] = 0
    """A ``fail_next`` status: close the connection without answering (a connection error)."""

    def __init__(self, *, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(name=name, host=host, port=port)
        self._server: _Http1Server | None = None
        self._thread: threading.Thread | None = None
        self._delays: list[float] = []
        self.refused = 0
        """Connections dropped because they opened with the HTTP/2 preface."""

    def slow_next(self, count: int, delay_s: float) -> None:
        """Answer the next ``count`` requests ``delay_s`` late (at most ``_MAX_WAIT``): a backend
        whose first attempts time out, for per-try timeouts and their retries."""
        with self._lock:
            self._delays = [min(delay_s, _MAX_WAIT)] * count

    def _take_delay(self) -> float:
        with self._lock:
            return self._delays.pop(0) if self._delays else 0.0

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self!r} already started")
        self._server = _Http1Server((self.host, self._requested_port), self)
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name=f"http1-{self.name}"
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        thread.join(_STOP_TIMEOUT)
        # Keep-alive connections would outlive the listener; end them so peers see the close.
        with server.connections_lock:
            for conn in list(server.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        self._server = self._thread = None


# --------------------------------------------------------------------------- gRPC echo


def _metadata_dict(metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, str]:
    """Invocation metadata as a string map; binary (``-bin``) values base64-encoded."""
    pairs = []
    for key, value in metadata:
        text = value if isinstance(value, str) else base64.b64encode(value).decode()
        pairs.append((key, text))
    return _join_headers(pairs)


class _EchoServicer(echo_pb2_grpc.EchoServicer):  # type: ignore[misc]  # generated, untyped
    def __init__(self, owner: GrpcEchoServer) -> None:
        self._owner = owner

    def _record_call(self, method: str, request: Any, context: grpc.ServicerContext) -> dict[str, str]:
        metadata = _metadata_dict(context.invocation_metadata() or ())
        status = self._owner._record(
            RequestRecord(
                protocol=self._owner.protocol,
                method="POST",
                path=f"/{ECHO_SERVICE}/{method}",
                authority="",
                headers=metadata,
                body=request.SerializeToString(),
            )
        )
        if status != 200:  # a due failure (``fail_next``): gRPC's way to say "try again"
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{self._owner.name}: failing on purpose ({status})")
        return metadata

    def _wait(self, seconds: float, context: grpc.ServicerContext) -> bool:
        """Sleep ``seconds`` (at most ``_MAX_WAIT``) unless the call ends first; ``False`` (and
        counted in ``cancelled``) when it did: a proxy's deadline shows up here."""
        ended = threading.Event()
        if not context.add_callback(ended.set):
            ended.set()  # already terminated
        if ended.wait(min(seconds, _MAX_WAIT)) or not context.is_active():
            self._owner._count_cancelled()
            return False
        return True

    def Echo(self, request: Any, context: grpc.ServicerContext) -> Any:  # the proto's method name
        metadata = self._record_call("Echo", request, context)
        if request.delay_ms and not self._wait(request.delay_ms / 1000, context):
            return echo_pb2.EchoResponse()  # nobody is listening any more
        context.send_initial_metadata((("x-upstream-name", self._owner.name),))
        return echo_pb2.EchoResponse(message=request.message, upstream=self._owner.name, metadata=metadata)

    def EchoStream(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # the proto's name
        metadata = self._record_call("EchoStream", request, context)
        context.send_initial_metadata((("x-upstream-name", self._owner.name),))
        for sequence in range(min(request.count, _MAX_STREAM_REPLIES)):
            if sequence and not self._wait(request.interval_ms / 1000, context):
                return
            yield echo_pb2.EchoResponse(
                message=request.message, upstream=self._owner.name, metadata=metadata, sequence=sequence
            )


class _AlpnGate:
    """A TLS front that accepts only clients offering ALPN ``h2`` (as many gRPC servers do; grpcio
    itself does not insist) and pipes the rest to a plaintext h2c server on ``backend_port``."""

    def __init__(self, *, host: str, port: int, backend_port: int, chain: bytes, key: bytes) -> None:
        self._backend = (host, backend_port)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as folder:
            cert_file, key_file = Path(folder, "tls.crt"), Path(folder, "tls.key")
            cert_file.write_bytes(chain)
            key_file.write_bytes(key)
            self._context.load_cert_chain(cert_file, key_file)
        self._context.set_alpn_protocols(["h2"])
        self._listener = socket.create_server((host, port))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.refused = 0
        """Handshakes that did not select ``h2`` (closed at once)."""
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name=f"alpn-gate-{self.port}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5.0)
            tls = self._context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        with tls:
            if tls.selected_alpn_protocol() != "h2":
                with self._lock:
                    self.refused += 1
                return
            with self._lock:
                self.accepted += 1
            tls.settimeout(None)
            with contextlib.suppress(OSError), socket.create_connection(self._backend) as plain:
                self._pipe(tls, plain)

    def _pipe(self, tls: ssl.SSLSocket, plain: socket.socket) -> None:
        while not self._stop.is_set():
            ready = [tls] if tls.pending() else select.select([tls, plain], [], [], 0.2)[0]
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                (plain if sock is tls else tls).sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=_STOP_TIMEOUT)


class GrpcEchoServer(Upstream):
    """grpcio server for ``meshxds.echo.v1.Echo`` and ``grpc.health.v1.Health`` (both SERVING;
    ``set_serving(False)`` makes the server, and the Echo service, NOT_SERVING).

    ``Echo`` with ``delay_ms`` is a slow method and ``EchoStream`` a server stream; a call that
    ends (cancelled, or its deadline passed) while they wait is counted in ``cancelled``.
    """

    protocol = "HTTP/2"

    def __init__(
        self,
        *,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        max_workers: int = 8,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        """``tls``: ``(certificate chain PEM, key PEM)`` to serve TLS instead of h2c, refusing a
        client that does not offer ALPN ``h2`` (``alpn_refused`` counts them), as gRPC servers
        commonly do."""
        super().__init__(name=name, host=host, port=port)
        self._max_workers = max_workers
        self._tls = tls
        self._gate: _AlpnGate | None = None
        self._server: grpc.Server | None = None
        self._cancelled = 0
        self.health = health.HealthServicer()

    def _count_cancelled(self) -> None:
        with self._lock:
            self._cancelled += 1

    @property
    def cancelled(self) -> int:
        """Calls that ended while the servicer was still waiting to answer."""
        with self._lock:
            return self._cancelled

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError(f"{self!r} already started")
        # grpcio sets SO_REUSEPORT by default, which would let two servers share a fixed port silently.
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix=f"grpc-{self.name}"),
            options=[("grpc.so_reuseport", 0)],
        )
        self.health = health.HealthServicer()  # a fresh one: after graceful shutdown it ignores set()
        echo_pb2_grpc.add_EchoServicer_to_server(_EchoServicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        # With TLS, grpcio serves h2c on a port of its own behind the ALPN gate.
        inner = 0 if self._tls is not None else self._requested_port
        port = server.add_insecure_port(f"{self.host}:{inner}")
        if port == 0:
            raise RuntimeError(f"{self!r} could not bind {self.host}:{inner}")
        server.start()
        if self._tls is not None:
            chain, key = self._tls
            self._gate = _AlpnGate(
                host=self.host, port=self._requested_port, backend_port=port, chain=chain, key=key
            )
            port = self._gate.port
        self._port = port
        for service in ("", ECHO_SERVICE):
            self.health.set(service, health_pb2.HealthCheckResponse.SERVING)
        self._server = server
        return self

    def set_serving(self, serving: bool) -> None:
        """What ``grpc.health.v1`` answers for the server (``""``) and the Echo service."""
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", ECHO_SERVICE):
            self.health.set(service, status)

    def stop(self) -> None:
        if self._server is None:
            return
        self.health.enter_graceful_shutdown()
        if self._gate is not None:
            self._gate.close()
            self._gate = None
        self._server.stop(grace=1.0).wait(_STOP_TIMEOUT)
        self._server = None

    @property
    def alpn_refused(self) -> int:
        """TLS clients refused for not offering ALPN ``h2`` (0 without ``tls``)."""
        return self._gate.refused if self._gate is not None else 0

    @property
    def tls_connections(self) -> int:
        """TLS connections accepted (ALPN ``h2``)."""
        return self._gate.accepted if self._gate is not None else 0


def echo_call(
    target: str,
    message: str = "hello",
    *,
    metadata: Sequence[tuple[str, str]] = (),
    authority: str | None = None,
    timeout: float = 5.0,
    delay_ms: int = 0,
) -> Any:
    """One unary ``Echo`` call to ``target`` (``host:port``); returns the ``EchoResponse``.

    ``authority`` overrides ``:authority``, e.g. to hit a virtual host through Envoy;
    ``delay_ms`` asks the upstream to answer that late.
    """
    options = [("grpc.default_authority", authority)] if authority else []
    request = echo_pb2.EchoRequest(message=message, delay_ms=delay_ms)
    with grpc.insecure_channel(target, options=options) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        return stub.Echo(request, metadata=tuple(metadata), timeout=timeout)


def echo_stream(
    target: str,
    message: str = "hello",
    *,
    count: int,
    interval_s: float,
    authority: str | None = None,
    timeout: float = 60.0,
) -> list[Any]:
    """One ``EchoStream`` call: every ``EchoResponse`` of the stream, in order (raises
    ``grpc.RpcError`` if the stream ends with an error status)."""
    options = [("grpc.default_authority", authority)] if authority else []
    request = echo_pb2.EchoStreamRequest(message=message, count=count, interval_ms=round(interval_s * 1000))
    with grpc.insecure_channel(target, options=options) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        return list(stub.EchoStream(request, timeout=timeout))


def grpc_frame(message: Any) -> bytes:
    """A protobuf message as one gRPC length-prefixed frame (uncompressed)."""
    payload: bytes = message.SerializeToString()
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


# --------------------------------------------------------------------------- curl client


@dataclass(frozen=True, slots=True, kw_only=True)
class CurlResult:
    """What ``curl`` got: status 0 and a non-zero ``returncode`` when no response arrived."""

    returncode: int
    status: int
    http_version: str
    """As curl reports it: ``"2"``, ``"1.1"``, or ``"0"`` without a response."""
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ``", "``."""
    body: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.body)


def curl(
    url: str,
    *,
    http2_prior_knowledge: bool = False,
    http1: bool = False,
    method: str | None = None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    data: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 5.0,
) -> CurlResult:
    """One request with the real ``curl`` (nghttp2 built in), so the wire protocol is curl's choice.

    ``http2_prior_knowledge`` sends the HTTP/2 preface straight away (h2c); ``http1`` forces HTTP/1.1.
    ``extra_args`` go to curl as they are (e.g. ``["--http2"]`` for an HTTP/1.1 Upgrade to h2c).
    Never raises for HTTP-level failures: inspect ``status`` and ``returncode``.
    """
    with tempfile.TemporaryDirectory(prefix="meshxds-curl-") as tmp:
        body_path, head_path = Path(tmp, "body"), Path(tmp, "headers")
        argv = ["curl", "-sS", "--noproxy", "*", "-m", f"{timeout:g}", "-o", str(body_path)]
        argv += ["-D", str(head_path), "-w", "%{http_code} %{http_version}"]
        if http2_prior_knowledge:
            argv.append("--http2-prior-knowledge")
        if http1:
            argv.append("--http1.1")
        if method:
            argv += ["-X", method]
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        for name, value in pairs:
            argv += ["-H", f"{name}: {value}"]
        if data is not None:
            argv += ["--data-binary", data]
        argv += [*extra_args, url]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5, check=False)
        code, _, version = proc.stdout.strip().partition(" ")
        head = head_path.read_text(errors="replace") if head_path.exists() else ""
        # With redirects or 1xx there may be several header blocks; the last one is the answer.
        block = head.strip().split("\r\n\r\n")[-1] if head.strip() else ""
        response_headers = _join_headers(
            (name.strip(), value.strip())
            for name, sep, value in (line.partition(":") for line in block.splitlines()[1:])
            if sep
        )
        return CurlResult(
            returncode=proc.returncode,
            status=int(code) if code.isdigit() else 0,
            http_version=version or "0",
            headers=response_headers,
            body=body_path.read_text(errors="replace") if body_path.exists() else "",
            stderr=proc.stderr,
        )


def curl_grpc(
    url: str,
    request: Any,
    *,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    timeout: float = 5.0,
) -> CurlResult:
    """One unary gRPC call sent by curl over h2c (prior knowledge) to ``url``
    (``http://host:port/package.Service/Method``), ``request`` framed as gRPC.

    Unlike a gRPC library, curl keeps no deadline of its own: a ``grpc-timeout`` header given in
    ``headers`` is only bytes on the wire, so whatever enforces it is on the other side. A
    trailers-only answer (how a proxy replies itself) carries ``grpc-status`` in ``headers``.
    """
    with tempfile.TemporaryDirectory(prefix="meshxds-grpc-") as tmp:
        body = Path(tmp, "request")
        body.write_bytes(grpc_frame(request))
        pairs = [*(headers.items() if isinstance(headers, Mapping) else headers)]
        pairs += [("content-type", "application/grpc"), ("te", "trailers")]
        return curl(
            url,
            http2_prior_knowledge=True,
            method="POST",
            headers=pairs,
            extra_args=["--data-binary", f"@{body}"],
            timeout=timeout,
        )


# --------------------------------------------------------------------------- demo CLI

_KINDS: dict[str, type[Upstream]] = {"h2c": H2cOnlyServer, "http1": Http1OnlyServer, "grpc": GrpcEchoServer}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m meshxds.testing.upstreams", description="Run one test upstream until SIGINT/SIGTERM."
    )
    parser.add_argument("kind", choices=sorted(_KINDS))
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--name", help="reported in responses (default: the kind)")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with _KINDS[args.kind](name=args.name or args.kind, host=args.host, port=args.port) as upstream:
        print(f"{args.kind} upstream {upstream.name!r} listening on {upstream.address}", flush=True)
        stop.wait()
        print(
            f"{args.kind} upstream {upstream.name!r} stopping after {upstream.requests} requests", flush=True
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
