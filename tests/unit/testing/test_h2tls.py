"""meshxds.testing.h2tls against a small TLS HTTP/2 server written here with h2 + ssl.

The server counts TCP connections and answers each request with 200 and a JSON body echoing the
``:authority`` and the SNI it saw, so a test can prove two authorities shared one connection.
Special paths: ``/bytes/N`` (N bytes of a known pattern), ``/reset`` (RST_STREAM REFUSED_STREAM),
``/goaway`` (GOAWAY ENHANCE_YOUR_CALM), ``/hang`` (no answer).
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from meshxds.testing.certs import (
    CertificateAuthority,
    ClientCertificate,
    ServerCertificate,
    issue,
    issue_client,
    make_ca,
    write_pem_files,
)
from meshxds.testing.h2tls import (
    AlpnNotNegotiated,
    ConnectionClosedError,
    GoAwayError,
    H2Timeout,
    H2TlsConnection,
    StreamResetError,
    tls_get,
)

MIB = 1024 * 1024
SERVER_LIFETIME = 60.0  # seconds; every server loop ends by then at the latest
POLL = 0.05


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


class TlsH2Server:
    """HTTP/2 over TLS on 127.0.0.1 (or HTTP/1.1 when ALPN picks it), one thread per connection."""

    def __init__(
        self,
        cert: ServerCertificate,
        tmp_path: Path,
        *,
        alpn: Sequence[str] = ("h2",),
        client_ca: bytes | None = None,
    ) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(*write_pem_files(tmp_path, "server", cert))
        self._context.set_alpn_protocols(list(alpn))
        self._context.sni_callback = self._on_sni
        if client_ca is not None:
            self._context.verify_mode = ssl.CERT_REQUIRED
            self._context.load_verify_locations(cadata=client_ca.decode())
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(POLL)
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._local = threading.local()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Self:
        self._start(self._accept_loop, "accept")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def _start(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=f"tls-h2-{name}", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _on_sni(self, _sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        self._local.sni = server_name  # runs in the thread doing the handshake

    def _accept_loop(self) -> None:
        deadline = time.monotonic() + SERVER_LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                self.connections += 1
                number = self.connections
            self._start(self._serve, f"conn-{number}", raw, number)

    def _serve(self, raw: socket.socket, number: int) -> None:
        self._local.sni = None
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.settimeout(5)
        try:
            tls = self._context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        with tls:
            seen = {"sni": self._local.sni, "connection": number, "client_cn": _client_cn(tls)}
            tls.settimeout(POLL)
            with contextlib.suppress(OSError):
                if tls.selected_alpn_protocol() == "h2":
                    self._serve_h2(tls, seen)
                else:
                    self._serve_http1(tls, seen)

    def _serve_http1(self, tls: ssl.SSLSocket, seen: dict[str, Any]) -> None:
        data = b""
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in data and time.monotonic() < deadline and len(data) < 65536:
            with contextlib.suppress(TimeoutError):
                chunk = tls.recv(4096)
                if not chunk:
                    return
                data += chunk
        head = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        body = json.dumps({**seen, "protocol": "http/1.1", "authority": fields.get("Host")}).encode()
        tls.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
            + body
        )

    def _serve_h2(self, tls: ssl.SSLSocket, seen: dict[str, Any]) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        tls.sendall(conn.data_to_send())
        requests: dict[int, dict[str, Any]] = {}
        pending: dict[int, memoryview] = {}
        deadline = time.monotonic() + SERVER_LIFETIME
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                data = tls.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            if conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
                continue  # after our GOAWAY: drain until the client hangs up, so it reads the GOAWAY
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    requests[event.stream_id] = {"headers": dict(event.headers), "body_bytes": 0}
                elif isinstance(event, h2.events.DataReceived):
                    requests[event.stream_id]["body_bytes"] += len(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    self._respond(conn, event.stream_id, requests.pop(event.stream_id), seen, pending)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    tls.sendall(conn.data_to_send())
                    return
            _send_pending(conn, pending)
            tls.sendall(conn.data_to_send())

    @staticmethod
    def _respond(
        conn: h2.connection.H2Connection,
        stream_id: int,
        request: dict[str, Any],
        seen: dict[str, Any],
        pending: dict[int, memoryview],
    ) -> None:
        headers = request["headers"]
        path = headers[":path"]
        if path == "/reset":
            conn.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if path == "/goaway":
            conn.close_connection(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, b"bye", last_stream_id=0)
            return
        if path == "/hang":
            return
        if path.startswith("/bytes/"):
            body, content_type = pattern(int(path.removeprefix("/bytes/"))), "application/octet-stream"
        else:
            echo = {
                **seen,
                "protocol": "h2",
                "authority": headers[":authority"],
                "method": headers[":method"],
                "path": path,
                "stream_id": stream_id,
                "body_bytes": request["body_bytes"],
            }
            body, content_type = json.dumps(echo).encode(), "application/json"
        conn.send_headers(
            stream_id,
            [(":status", "200"), ("content-type", content_type), ("content-length", str(len(body)))],
        )
        pending[stream_id] = memoryview(body)


def _client_cn(tls: ssl.SSLSocket) -> str | None:
    der = tls.getpeercert(binary_form=True)
    if der is None:
        return None
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def _send_pending(conn: h2.connection.H2Connection, pending: dict[int, memoryview]) -> None:
    """Send what the peer's windows allow; the rest waits for WINDOW_UPDATE."""
    for stream_id in list(pending):
        view = pending[stream_id]
        for _ in range(len(view) // 1024 + 2):
            room = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if room <= 0 and view:
                break
            chunk, view = view[:room], view[room:]
            conn.send_data(stream_id, chunk, end_stream=not view)
            if not view:
                del pending[stream_id]
                break
        else:
            raise AssertionError("send loop bound reached")
        if stream_id in pending:
            pending[stream_id] = view


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return make_ca()


@pytest.fixture(scope="module")
def cert(ca: CertificateAuthority) -> ServerCertificate:
    return issue(ca, ["gateway.test", "*.example.com"])


@pytest.fixture
def server(cert: ServerCertificate, tmp_path: Path) -> Iterator[TlsH2Server]:
    with TlsH2Server(cert, tmp_path) as srv:
        yield srv


def connect(
    server: TlsH2Server, ca: CertificateAuthority, sni: str = "a.example.com", **kw: Any
) -> H2TlsConnection:
    return H2TlsConnection("127.0.0.1", server.port, server_name=sni, ca_pem=ca.cert_pem, **kw)


def test_two_authorities_share_one_connection(server: TlsH2Server, ca: CertificateAuthority) -> None:
    with connect(server, ca, sni="a.example.com") as conn:
        assert conn.negotiated_alpn == "h2"
        first = conn.request(authority="a.example.com", path="/one")
        second = conn.request(authority="b.example.com", path="/two")
    assert server.connections == 1
    assert (first.status, second.status) == (200, 200)
    assert (first.stream_id, second.stream_id) == (1, 3)
    a, b = json.loads(first.body), json.loads(second.body)
    assert (a["authority"], b["authority"]) == ("a.example.com", "b.example.com")
    assert (a["sni"], b["sni"]) == ("a.example.com", "a.example.com")
    assert (a["connection"], b["connection"]) == (1, 1)
    assert (a["path"], b["path"]) == ("/one", "/two")
    assert first.headers["content-type"] == "application/json"


def test_separate_connections_are_counted(server: TlsH2Server, ca: CertificateAuthority) -> None:
    for sni in ("a.example.com", "gateway.test"):
        with connect(server, ca, sni=sni) as conn:
            assert json.loads(conn.request(authority=sni).body)["sni"] == sni
    assert server.connections == 2


def test_tls_get_reports_h2(server: TlsH2Server, ca: CertificateAuthority) -> None:
    status, protocol = tls_get(
        "127.0.0.1", server.port, server_name="gateway.test", authority="gateway.test", ca_pem=ca.cert_pem
    )
    assert (status, protocol) == (200, "h2")


def test_wrong_ca_fails_verification(server: TlsH2Server) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        H2TlsConnection("127.0.0.1", server.port, server_name="gateway.test", ca_pem=make_ca().cert_pem)


def test_name_outside_the_certificate_fails_verification(
    server: TlsH2Server, ca: CertificateAuthority
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(server, ca, sni="a.b.example.com")


def test_peer_certificate_sans_with_and_without_verification(
    server: TlsH2Server, ca: CertificateAuthority
) -> None:
    expected = ["gateway.test", "*.example.com"]
    with connect(server, ca) as verified:
        assert verified.peer_certificate_sans() == expected
    unverified = H2TlsConnection(
        "127.0.0.1", server.port, server_name="x.example.com", ca_pem=make_ca().cert_pem, verify=False
    )
    with unverified:
        assert unverified.peer_certificate_sans() == expected
        assert unverified.request(authority="x.example.com").status == 200


def test_large_response_bodies_are_read_completely(server: TlsH2Server, ca: CertificateAuthority) -> None:
    with connect(server, ca) as conn:
        for _ in range(2):  # the second one needs the connection window replenished too
            response = conn.request(authority="a.example.com", path=f"/bytes/{MIB}")
            assert response.status == 200
            assert response.headers["content-length"] == str(MIB)
            assert len(response.body) == MIB
            assert response.body == pattern(MIB)
    assert server.connections == 1


def test_large_request_body_respects_flow_control(server: TlsH2Server, ca: CertificateAuthority) -> None:
    with connect(server, ca) as conn:
        response = conn.request("POST", "/upload", authority="a.example.com", body=pattern(300_000))
    echo = json.loads(response.body)
    assert (echo["method"], echo["body_bytes"]) == ("POST", 300_000)


def test_stream_reset_is_an_error_and_the_connection_lives_on(
    server: TlsH2Server, ca: CertificateAuthority
) -> None:
    with connect(server, ca) as conn:
        with pytest.raises(StreamResetError) as info:
            conn.request(authority="a.example.com", path="/reset")
        assert info.value.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
        assert info.value.remote is True
        assert info.value.stream_id == 1
        assert conn.request(authority="a.example.com").status == 200
    assert server.connections == 1


def test_goaway_is_an_error_with_its_code(server: TlsH2Server, ca: CertificateAuthority) -> None:
    with connect(server, ca) as conn:
        with pytest.raises(GoAwayError) as info:
            conn.request(authority="a.example.com", path="/goaway")
        assert info.value.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert info.value.last_stream_id == 0
        assert info.value.additional_data == b"bye"
        with pytest.raises(GoAwayError):
            conn.request(authority="a.example.com")


def test_no_answer_times_out(server: TlsH2Server, ca: CertificateAuthority) -> None:
    with connect(server, ca, timeout=0.3) as conn:
        started = time.monotonic()
        with pytest.raises(H2Timeout):
            conn.request(authority="a.example.com", path="/hang")
        assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("offered", "negotiated"),
    [(("h2",), None), (("h2", "http/1.1"), "http/1.1")],
    ids=["alpn-h2-only-none", "alpn-both-http1"],
)
def test_server_without_h2_is_a_clear_error(
    cert: ServerCertificate,
    ca: CertificateAuthority,
    tmp_path: Path,
    offered: tuple[str, ...],
    negotiated: str | None,
) -> None:
    with (
        TlsH2Server(cert, tmp_path, alpn=("http/1.1",)) as http1,
        pytest.raises(AlpnNotNegotiated, match="not 'h2'") as info,
    ):
        connect(http1, ca, alpn=offered)
    assert info.value.negotiated == negotiated


def test_tls_get_falls_back_to_http1(
    cert: ServerCertificate, ca: CertificateAuthority, tmp_path: Path
) -> None:
    with TlsH2Server(cert, tmp_path, alpn=("http/1.1",)) as http1:
        status, protocol = tls_get(
            "127.0.0.1", http1.port, server_name="gateway.test", authority="b.example.com", ca_pem=ca.cert_pem
        )
    assert (status, protocol) == (200, "http/1.1")
    assert http1.connections == 1


def test_client_certificate_for_mtls(
    cert: ServerCertificate, ca: CertificateAuthority, tmp_path: Path
) -> None:
    client: ClientCertificate = issue_client(ca, "client.example")
    with TlsH2Server(cert, tmp_path, client_ca=ca.cert_pem) as mtls:
        with connect(mtls, ca, client_cert=(client.chain_pem, client.key_pem)) as conn:
            assert json.loads(conn.request(authority="a.example.com").body)["client_cn"] == "client.example"
        with pytest.raises((ssl.SSLError, ConnectionClosedError)), connect(mtls, ca, timeout=2) as anonymous:
            anonymous.request(authority="a.example.com")
