"""A synchronous HTTP/2-over-TLS client that keeps ONE connection, for connection-reuse tests.

Browsers and curl reuse an HTTP/2 connection for every ``:authority`` the server's certificate
covers (RFC 9113 §9.1.1 connection coalescing), which is how a gateway serving ``a.example.com``
and ``b.example.com`` from one wildcard certificate sees requests for ``b`` on a connection whose
SNI said ``a``. :class:`H2TlsConnection` makes that explicit: one TCP + TLS connection (SNI
``server_name``, ALPN ``h2``), then any number of requests, each on a new stream, each with its own
``:authority``::

    with H2TlsConnection("127.0.0.1", port, server_name="a.example.com", ca_pem=ca.cert_pem) as conn:
        first = conn.request(authority="a.example.com")
        second = conn.request(authority="b.example.com")   # same TCP connection, stream 3

Built on ``h2`` (sans-IO) and ``ssl``: received data is acknowledged as it arrives (so bodies of any
size flow), request bodies respect the peer's flow-control windows, and ``h2`` answers SETTINGS and
PING frames itself. Every network wait is bounded by ``timeout`` seconds per request. Not thread-safe.

``tls_get()`` is the one-shot helper: status and the protocol the server chose by ALPN, speaking
HTTP/2 through :class:`H2TlsConnection` or HTTP/1.1 through ``http.client`` on the same connection.

Errors (``ssl.SSLError``, e.g. ``ssl.SSLCertVerificationError`` for an untrusted certificate or a
wrong ``server_name``, propagate unchanged from the handshake)::

    H2TlsError
    ├── AlpnNotNegotiated       the server chose another protocol than h2 (``negotiated``)
    ├── StreamResetError        RST_STREAM on the request's stream (``stream_id``, ``error_code``)
    ├── ConnectionClosedError   the connection ended before the response did
    │   └── GoAwayError         ... by GOAWAY (``error_code``, ``last_stream_id``, ``additional_data``)
    └── H2Timeout               no complete response within ``timeout`` (also a ``TimeoutError``)

A limitation of ``h2``: frames that follow a GOAWAY on the same connection are a protocol error to
it, so a response still in flight when the server starts draining ends in :class:`GoAwayError` or
an :class:`H2TlsError` rather than completing.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from cryptography import x509

__all__ = [
    "AlpnNotNegotiated",
    "ConnectionClosedError",
    "GoAwayError",
    "H2Response",
    "H2Timeout",
    "H2TlsConnection",
    "H2TlsError",
    "StreamResetError",
    "tls_get",
]

_READ_SIZE = 65_536
_MAX_IO_STEPS = 1_000_000
"""Upper bound on reads/writes for one request, on top of the time bound."""
_CLOSE_TIMEOUT = 1.0


class H2TlsError(Exception):
    """Root of this module's errors."""


class AlpnNotNegotiated(H2TlsError):
    """The TLS handshake succeeded but the server did not choose ``h2``."""

    def __init__(self, *, negotiated: str | None, offered: Sequence[str], address: str, server_name: str):
        self.negotiated = negotiated
        self.offered = tuple(offered)
        super().__init__(
            f"{address} (SNI {server_name}) negotiated ALPN {negotiated!r}, not 'h2' "
            f"(offered {list(self.offered)})"
        )


class StreamResetError(H2TlsError):
    """The request's stream was reset (RST_STREAM) instead of ending normally."""

    def __init__(self, *, stream_id: int, error_code: int, remote: bool):
        self.stream_id = stream_id
        self.error_code = error_code
        self.remote = remote
        who = "server" if remote else "client"
        super().__init__(f"stream {stream_id} reset by the {who}: {_error_name(error_code)}")


class ConnectionClosedError(H2TlsError):
    """The connection ended before the response was complete."""


class GoAwayError(ConnectionClosedError):
    """The server sent GOAWAY, and the request's stream is not one it will still answer."""

    def __init__(self, *, error_code: int, last_stream_id: int | None, additional_data: bytes):
        self.error_code = error_code
        self.last_stream_id = last_stream_id
        self.additional_data = additional_data
        detail = f" ({additional_data.decode('utf-8', 'replace')})" if additional_data else ""
        super().__init__(f"GOAWAY {_error_name(error_code)}, last stream {last_stream_id}{detail}")


class H2Timeout(H2TlsError, TimeoutError):
    """No complete response (or no progress sending) within the connection's ``timeout``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class H2Response:
    """One response read from its own stream."""

    status: int
    """The ``:status`` pseudo-header."""
    headers: dict[str, str]
    """Regular response headers, lower-case names; repeated headers joined with ``", "``."""
    body: bytes
    """The whole DATA payload."""
    stream_id: int
    """The stream the request went out on (1, 3, 5, … on one connection)."""
    trailers: dict[str, str] = field(default_factory=dict)
    """Trailing headers (e.g. ``grpc-status``), if any."""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass(slots=True)
class _Stream:
    headers: list[tuple[str, str]] | None = None
    trailers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: h2.events.StreamReset | None = None


class H2TlsConnection:
    """One HTTP/2 connection over TLS to ``host:port`` with SNI ``server_name``.

    ``ca_pem`` is the trust anchor (``None``: the system's); ``verify=False`` skips certificate and
    hostname checks. ``client_cert`` is ``(cert_chain_pem, key_pem)`` for mTLS. ``timeout`` bounds
    connecting plus the handshake, and then each request. Raises :class:`AlpnNotNegotiated` when the
    server does not choose ``h2``, and ``ssl`` errors from the handshake unchanged.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        server_name: str,
        ca_pem: bytes | None = None,
        verify: bool = True,
        alpn: Sequence[str] = ("h2",),
        timeout: float = 5.0,
        client_cert: tuple[bytes, bytes] | None = None,
    ) -> None:
        context = _tls_context(ca_pem=ca_pem, verify=verify, alpn=alpn, client_cert=client_cert)
        sock = _open_tls(host, port, context=context, server_name=server_name, timeout=timeout)
        self._start(
            sock, address=f"{host}:{port}", server_name=server_name, alpn=alpn, verify=verify, timeout=timeout
        )

    @classmethod
    def _adopt(
        cls, sock: ssl.SSLSocket, *, address: str, server_name: str, verify: bool, timeout: float
    ) -> Self:
        """Speak HTTP/2 on an established TLS socket that negotiated ``h2``."""
        conn = cls.__new__(cls)
        conn._start(
            sock, address=address, server_name=server_name, alpn=("h2",), verify=verify, timeout=timeout
        )
        return conn

    def _start(
        self,
        sock: ssl.SSLSocket,
        *,
        address: str,
        server_name: str,
        alpn: Sequence[str],
        verify: bool,
        timeout: float,
    ) -> None:
        """Take ownership of ``sock``: check ALPN, send the preface; close it on any failure."""
        self._sock = sock
        self._address = address
        self.server_name = server_name
        self.timeout = timeout
        self._verify = verify
        self._negotiated = sock.selected_alpn_protocol()
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self._h2 = h2.connection.H2Connection(config=config)
        self._streams: dict[int, _Stream] = {}
        self._goaway: h2.events.ConnectionTerminated | None = None
        self._eof = False
        self._closed = False
        try:
            if self._negotiated != "h2":
                raise AlpnNotNegotiated(
                    negotiated=self._negotiated, offered=alpn, address=address, server_name=server_name
                )
            self._h2.initiate_connection()
            self._flush(time.monotonic() + timeout)
        except BaseException:
            self._closed = True
            sock.close()
            raise

    # -- introspection --------------------------------------------------------------------------

    @property
    def negotiated_alpn(self) -> str | None:
        """The protocol the server chose by ALPN (always ``"h2"`` once constructed)."""
        return self._negotiated

    @property
    def local_port(self) -> int:
        """This connection's client port: distinct connections have distinct ports."""
        port: int = self._sock.getsockname()[1]
        return port

    def peer_certificate_der(self) -> bytes:
        """The server's leaf certificate, DER-encoded."""
        der = self._sock.getpeercert(binary_form=True)
        if der is None:
            raise H2TlsError(f"{self._address} presented no certificate")
        return der

    def peer_certificate_sans(self) -> list[str]:
        """The DNS subjectAltNames of the server's certificate, in certificate order."""
        if self._verify:
            alt_names = (self._sock.getpeercert() or {}).get("subjectAltName", ())
            return [
                str(entry[1])
                for entry in alt_names
                if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == "DNS"
            ]
        cert = x509.load_der_x509_certificate(self.peer_certificate_der())
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return list(sans.get_values_for_type(x509.DNSName))

    # -- requests -------------------------------------------------------------------------------

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        authority: str,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        scheme: str = "https",
    ) -> H2Response:
        """Send one request on a new stream of this connection and read its whole response."""
        if self._closed:
            raise ConnectionClosedError(f"connection to {self._address} is closed")
        if self._goaway is not None:
            raise self._goaway_error()
        if self._eof:
            raise ConnectionClosedError(f"{self._address} closed the connection")
        deadline = time.monotonic() + self.timeout
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        request_headers = [
            (":method", method),
            (":scheme", scheme),
            (":authority", authority),
            (":path", path),
            *((name.lower(), value) for name, value in pairs),
        ]
        stream_id = self._h2.get_next_available_stream_id()
        stream = self._streams[stream_id] = _Stream()
        try:
            self._h2.send_headers(stream_id, request_headers, end_stream=not body)
            self._flush(deadline)
            if body:
                self._send_body(stream_id, stream, body, deadline)
            for _ in range(_MAX_IO_STEPS):
                self._raise_if_failed(stream_id, stream)
                if stream.ended:
                    break
                self._receive(deadline)
            else:
                raise H2Timeout(f"stream {stream_id}: no END_STREAM after {_MAX_IO_STEPS} reads")
        finally:
            del self._streams[stream_id]
        return _response(stream_id, stream)

    def _send_body(self, stream_id: int, stream: _Stream, body: bytes, deadline: float) -> None:
        view = memoryview(body)
        offset = 0
        for _ in range(_MAX_IO_STEPS):
            self._raise_if_failed(stream_id, stream)
            if stream.ended:  # answered early: stop sending, politely
                self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.NO_ERROR)
                self._flush(deadline)
                return
            if offset >= len(view):
                return
            room = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
            if room <= 0:
                self._receive(deadline)  # wait for WINDOW_UPDATE
                continue
            chunk = view[offset : offset + room]
            offset += len(chunk)
            self._h2.send_data(stream_id, chunk, end_stream=offset >= len(view))
            self._flush(deadline)
        raise H2Timeout(f"stream {stream_id}: request body not sent after {_MAX_IO_STEPS} steps")

    def _raise_if_failed(self, stream_id: int, stream: _Stream) -> None:
        if stream.reset is not None:
            raise StreamResetError(
                stream_id=stream_id, error_code=int(stream.reset.error_code), remote=stream.reset.remote_reset
            )
        goaway = self._goaway
        if goaway is not None and (goaway.last_stream_id is None or stream_id > goaway.last_stream_id):
            raise self._goaway_error()

    def _goaway_error(self) -> GoAwayError:
        goaway = self._goaway
        assert goaway is not None
        return GoAwayError(
            error_code=int(goaway.error_code or 0),
            last_stream_id=goaway.last_stream_id,
            additional_data=goaway.additional_data or b"",
        )

    # -- I/O ------------------------------------------------------------------------------------

    def _receive(self, deadline: float) -> None:
        """One read from the socket into ``h2``, events applied, any replies flushed."""
        self._sock.settimeout(_remaining(deadline, self._address))
        try:
            data = self._sock.recv(_READ_SIZE)
        except TimeoutError as exc:
            raise H2Timeout(f"{self._address}: no response within {self.timeout}s") from exc
        except OSError as exc:  # includes ssl.SSLError
            self._eof = True
            raise ConnectionClosedError(f"{self._address}: {exc}") from exc
        if not data:
            self._eof = True
            if self._goaway is not None:
                raise self._goaway_error()
            raise ConnectionClosedError(f"{self._address} closed the connection mid-response")
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            with contextlib.suppress(OSError, H2TlsError):
                self._flush(deadline)  # h2 queued a GOAWAY of its own
            if self._goaway is not None:  # h2 refuses every frame after a GOAWAY (see module doc)
                raise self._goaway_error() from exc
            raise H2TlsError(f"HTTP/2 protocol error from {self._address}: {exc}") from exc
        for event in events:
            self._apply(event)
        self._flush(deadline)

    def _apply(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ConnectionTerminated):
            self._goaway = event
            return
        stream = self._streams.get(getattr(event, "stream_id", 0))
        if isinstance(event, h2.events.DataReceived):
            # Acknowledge even for unknown streams: the connection window counts them too.
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream is not None:
                stream.body += event.data
        elif stream is None:
            return  # pushes, settings, pings (h2 acknowledges those), window updates
        elif isinstance(event, h2.events.ResponseReceived):
            stream.headers = _decode(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            stream.trailers = _decode(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = event

    def _flush(self, deadline: float) -> None:
        data = self._h2.data_to_send()
        if not data:
            return
        self._sock.settimeout(_remaining(deadline, self._address))
        try:
            self._sock.sendall(data)
        except TimeoutError as exc:
            raise H2Timeout(f"{self._address}: could not send within {self.timeout}s") from exc
        except OSError as exc:
            self._eof = True
            raise ConnectionClosedError(f"{self._address}: {exc}") from exc

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Send GOAWAY (best effort) and close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._goaway is None and not self._eof:
                with contextlib.suppress(h2.exceptions.ProtocolError, H2TlsError):
                    self._h2.close_connection()
                    self._flush(time.monotonic() + min(self.timeout, _CLOSE_TIMEOUT))
        finally:
            self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<H2TlsConnection {self._address} sni={self.server_name} alpn={self._negotiated} {state}>"


def tls_get(
    host: str,
    port: int,
    *,
    server_name: str,
    authority: str,
    ca_pem: bytes | None,
    path: str = "/",
    alpn: Sequence[str] = ("h2", "http/1.1"),
    timeout: float = 5.0,
) -> tuple[int, str]:
    """GET ``path`` over one fresh TLS connection; return the status and the protocol spoken.

    The protocol is the ALPN choice (``"h2"`` or ``"http/1.1"``; ``"http/1.1"`` when the server
    chose none). HTTP/2 goes through :class:`H2TlsConnection`, anything else through
    ``http.client.HTTPSConnection`` with ``Host: authority``.
    """
    context = _tls_context(ca_pem=ca_pem, verify=True, alpn=alpn, client_cert=None)
    sock = _open_tls(host, port, context=context, server_name=server_name, timeout=timeout)
    address = f"{host}:{port}"
    negotiated = sock.selected_alpn_protocol()
    if negotiated == "h2":
        adopted = H2TlsConnection._adopt(
            sock, address=address, server_name=server_name, verify=True, timeout=timeout
        )
        with adopted as conn:
            return conn.request("GET", path, authority=authority).status, "h2"
    http1 = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    http1.sock = sock  # already connected and verified: http.client skips connect()
    try:
        http1.request("GET", path, headers={"Host": authority})
        response = http1.getresponse()
        response.read()
        return response.status, negotiated or "http/1.1"
    finally:
        http1.close()


def _tls_context(
    *, ca_pem: bytes | None, verify: bool, alpn: Sequence[str], client_cert: tuple[bytes, bytes] | None
) -> ssl.SSLContext:
    if isinstance(alpn, str):
        raise TypeError("alpn must be a sequence of protocol ids, e.g. ('h2',)")
    if verify:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii") if ca_pem is not None else None)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9113 §9.2
    context.set_alpn_protocols(list(alpn))
    if client_cert is not None:
        cert_pem, key_pem = client_cert
        # ssl loads key material from files only; keep them for the duration of the call.
        with tempfile.TemporaryDirectory(prefix="meshxds-h2tls-") as tmp:
            cert_path, key_path = Path(tmp) / "client.crt", Path(tmp) / "client.key"
            cert_path.write_bytes(cert_pem)
            key_path.touch(mode=0o600)
            key_path.write_bytes(key_pem)
            context.load_cert_chain(cert_path, key_path)
    return context


def _open_tls(
    host: str, port: int, *, context: ssl.SSLContext, server_name: str, timeout: float
) -> ssl.SSLSocket:
    """TCP connect and TLS handshake, both within ``timeout``."""
    deadline = time.monotonic() + timeout
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small frames (WINDOW_UPDATE) go now
        raw.settimeout(_remaining(deadline, f"{host}:{port}"))
        return context.wrap_socket(raw, server_hostname=server_name)
    except BaseException:
        raw.close()
        raise


def _remaining(deadline: float, address: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise H2Timeout(f"{address}: timed out")
    return left


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _decode(headers: Iterable[tuple[bytes | str, bytes | str]]) -> list[tuple[str, str]]:
    return [(_text(name), _text(value)) for name, value in headers]


def _response(stream_id: int, stream: _Stream) -> H2Response:
    if stream.headers is None:
        raise H2TlsError(f"stream {stream_id} ended without response headers")
    status = next((value for name, value in stream.headers if name == ":status"), None)
    if status is None or not status.isdigit():
        raise H2TlsError(f"stream {stream_id}: bad :status {status!r}")
    return H2Response(
        status=int(status),
        headers=_merge(stream.headers),
        body=bytes(stream.body),
        stream_id=stream_id,
        trailers=_merge(stream.trailers),
    )


def _merge(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith(":"):
            continue
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def _error_name(code: int) -> str:
    try:
        return f"{h2.errors.ErrorCodes(code).name} ({code})"
    except ValueError:
        return f"error code {code}"
