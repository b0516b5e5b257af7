"""WebSocket for tests: an echo upstream (the ``websockets`` package, HTTP/1.1 Upgrade) and a
client for WebSocket over HTTP/2 (RFC 8441 extended CONNECT), which browsers use and no Python
WebSocket library speaks: ``h2`` carries the stream, ``websockets`` frames the messages."""

from __future__ import annotations

import socket
import threading
from types import TracebackType
from typing import Self

import h2.config
import h2.connection
import h2.events
import h2.settings
from websockets.frames import Frame, Opcode
from websockets.sync.server import Server, ServerConnection, serve

__all__ = ["WebSocketEchoServer", "h2_websocket_echo"]

_STOP_TIMEOUT = 5.0


class WebSocketEchoServer:
    """Answers every text message with ``NAME: message``; records the upgrade requests' paths."""

    def __init__(self, *, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.paths: list[str] = []
        """The path of each accepted upgrade, in order."""

    def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        with self._lock:
            self.paths.append(request.path if request is not None else "")
        for message in connection:
            text = message if isinstance(message, str) else message.decode()
            connection.send(f"{self.name}: {text}")

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} is not started")
        port: int = self._server.socket.getsockname()[1]
        return port

    def start(self) -> Self:
        self._server = serve(self._handle, self.host, 0)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"ws-{self.name}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
        if thread is not None:
            thread.join(_STOP_TIMEOUT)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def h2_websocket_echo(
    port: int,
    authority: str,
    path: str,
    message: str,
    *,
    timeout: float = 10.0,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> str:
    """Open a WebSocket over HTTP/2 prior knowledge on ``127.0.0.1:port`` (extended CONNECT,
    ``:protocol websocket``), send ``message`` as one text frame, return the first text frame
    back. Raises ``ConnectionError`` when the server refuses (no SETTINGS_ENABLE_CONNECT_PROTOCOL,
    or a non-200 answer)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        # The server must announce extended CONNECT before a client may use it.
        enabled = False
        for _ in range(20):
            for event in conn.receive_data(sock.recv(65535)):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    setting = event.changed_settings.get(h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL)
                    enabled = enabled or (setting is not None and setting.new_value == 1)
                    sock.sendall(conn.data_to_send())
            if enabled or conn.remote_settings.enable_connect_protocol:
                break
        else:
            raise ConnectionError("the server did not enable extended CONNECT")
        stream = conn.get_next_available_stream_id()
        headers = [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("sec-websocket-version", "13"),
            *extra_headers,
        ]
        conn.send_headers(stream, headers)
        # Client frames are masked (RFC 6455 5.3); a fixed key is as valid as a random one.
        frame = Frame(Opcode.TEXT, message.encode())
        conn.send_data(stream, _masked(frame))
        sock.sendall(conn.data_to_send())
        status = ""
        received = b""
        for _ in range(100):
            data = sock.recv(65535)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = next((str(v) for k, v in event.headers if k in (":status", b":status")), "")
                    if status != "200":
                        raise ConnectionError(f"extended CONNECT answered {status}: {event.headers}")
                elif isinstance(event, h2.events.DataReceived):
                    received += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamReset):
                    raise ConnectionError(f"stream reset ({event.error_code})")
            sock.sendall(conn.data_to_send())
            text = _first_text(received)
            if text is not None:
                return text
        raise ConnectionError(f"no WebSocket message back (status {status or 'none'})")


def _masked(frame: Frame) -> bytes:
    key = b"\x01\x02\x03\x04"
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(frame.data))
    length = len(masked)
    head = bytes([0x80 | frame.opcode.value])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return head + key + masked


def _first_text(data: bytes) -> str | None:
    """The first complete, unmasked text frame in ``data`` (a server never masks)."""
    if len(data) < 2:
        return None
    opcode, length = data[0] & 0x0F, data[1] & 0x7F
    offset = 2
    if length == 126:
        length, offset = int.from_bytes(data[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(data[2:10], "big"), 10
    if len(data) < offset + length:
        return None
    if opcode != Opcode.TEXT.value:
        return None
    return data[offset : offset + length].decode()
