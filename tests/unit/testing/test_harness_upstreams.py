"""The test upstreams on real loopback sockets, driven by hand-rolled clients (curl is in integration)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from meshxds.testing._generated import echo_pb2
from meshxds.testing.ports import wait_until
from meshxds.testing.upstreams import (
    GrpcEchoServer,
    H2cOnlyServer,
    Http1OnlyServer,
    echo_call,
    echo_stream,
    grpc_frame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _recv_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    data = b""
    for _ in range(1000):  # until the server closes
        chunk = sock.recv(65536)
        if not chunk or len(data) > limit:
            break
        data += chunk
    return data


def h2_request(
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    extra: list[tuple[str, str]] | None = None,
    window: int = 65535,
) -> tuple[dict[str, str], bytes]:
    """One h2c request with prior knowledge; a small ``window`` makes the server wait for WINDOW_UPDATE."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    headers = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "up.test")]
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(stream_id, headers + (extra or []), end_stream=True)
    response: dict[str, str] = {}
    body = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        for _ in range(1000):
            data = sock.recv(65536)
            if not data:
                break
            ended = False
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    response = {str(k): str(v) for k, v in event.headers or ()}
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data or b""
                    # Reopen the window by exactly what was consumed, so it stays small.
                    conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
            if ended:
                break
    return response, body


@pytest.fixture
def h2c() -> Iterator[H2cOnlyServer]:
    with H2cOnlyServer(name="h2c-a") as server:
        yield server


@pytest.fixture
def http1() -> Iterator[Http1OnlyServer]:
    with Http1OnlyServer(name="http1-a") as server:
        yield server


def test_h2c_server_answers_http2_with_json_and_counts(h2c: H2cOnlyServer) -> None:
    headers, body = h2_request(h2c.port, "/hello?x=1", extra=[("x-test", "1")])
    assert headers[":status"] == "200"
    assert headers["x-upstream-name"] == "h2c-a"
    reply: dict[str, Any] = json.loads(body)
    assert reply["upstream"] == "h2c-a"
    assert reply["protocol"] == "HTTP/2"
    assert (reply["method"], reply["path"], reply["authority"]) == ("GET", "/hello?x=1", "up.test")
    assert reply["headers"] == {"x-test": "1"}
    assert h2c.requests == 1
    assert h2c.last_headers == {"x-test": "1"}


def test_h2c_server_respects_flow_control(h2c: H2cOnlyServer) -> None:
    big = "v" * 8000  # echoed back in the body, far beyond a 100-byte window
    headers, body = h2_request(h2c.port, extra=[("x-big", big)], window=100)
    assert headers[":status"] == "200"
    assert json.loads(body)["headers"]["x-big"] == big


def test_h2c_server_answers_head_without_body(h2c: H2cOnlyServer) -> None:
    headers, body = h2_request(h2c.port, method="HEAD")
    assert headers[":status"] == "200"
    assert body == b""


@pytest.mark.parametrize(
    "first_bytes",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b"PRI * HTTP/1.1\r\n\r\n"],
    ids=["http1-request", "short-http1-request", "almost-preface"],
)
def test_h2c_server_refuses_anything_but_the_preface(h2c: H2cOnlyServer, first_bytes: bytes) -> None:
    with socket.create_connection(("127.0.0.1", h2c.port), timeout=5) as sock:
        sock.sendall(first_bytes)
        answer = _recv_all(sock)
    assert answer.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert h2c.requests == 0
    assert h2c.refused == 1


def test_http1_server_answers_keep_alive_requests(http1: Http1OnlyServer) -> None:
    request = (
        b"POST /p HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /q HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", http1.port), timeout=5) as sock:
        sock.sendall(request)
        answer = _recv_all(sock)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert b"x-upstream-name: http1-a\r\n" in answer
    last = json.loads(answer.rsplit(b"\r\n\r\n", 1)[1])
    assert (last["protocol"], last["method"], last["path"], last["authority"]) == (
        "HTTP/1.1",
        "GET",
        "/q",
        "svc",
    )
    assert http1.requests == 2


def test_http1_server_reads_chunked_bodies(http1: Http1OnlyServer) -> None:
    request = (
        b"PUT /c HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", http1.port), timeout=5) as sock:
        sock.sendall(request)
        answer = _recv_all(sock)
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["body_bytes"] == 5
    last = http1.last_request
    assert last is not None and last.body == b"abcde"


def test_http1_server_hangs_up_on_the_http2_preface(http1: Http1OnlyServer) -> None:
    with socket.create_connection(("127.0.0.1", http1.port), timeout=5) as sock:
        sock.sendall(PREFACE)
        assert _recv_all(sock) == b""
    assert http1.requests == 0
    assert http1.refused == 1


def _ping_after_a_request(port: int) -> tuple[list[h2.events.Event], bytes]:
    """One request answered on a fresh h2c connection, then a PING: the events the answer to the
    request brought, and whatever the server sends in the next 0.5 s after the PING."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":authority", "up.test")]
    conn.send_headers(conn.get_next_available_stream_id(), headers, end_stream=True)
    events: list[h2.events.Event] = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        for _ in range(100):  # until the response has ended
            data = sock.recv(65536)
            assert data, "the server closed before answering"
            events += conn.receive_data(data)
            sock.sendall(conn.data_to_send())
            if any(isinstance(e, h2.events.StreamEnded) for e in events):
                break
        conn.ping(b"8 bytes!")
        sock.sendall(conn.data_to_send())
        sock.settimeout(0.5)
        try:
            after = sock.recv(65536)
        except TimeoutError:
            after = b""
    return events, after


@pytest.mark.parametrize("answer", [True, False], ids=["acks", "silent"])
def test_h2c_server_counts_pings_and_can_leave_them_unanswered(answer: bool) -> None:
    with H2cOnlyServer(name="pings", answer_pings=answer) as server:
        events, after = _ping_after_a_request(server.port)
        assert any(isinstance(e, h2.events.StreamEnded) for e in events)
        wait_until(lambda: server.pings == 1, timeout=5, what="the PING counted")
        # A PING ACK frame (length 8, type 6, flag ACK, stream 0) with the payload sent, or nothing.
        ping_ack = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + b"8 bytes!"
        assert after == (ping_ack if answer else b"")


def test_counters_are_thread_safe(h2c: H2cOnlyServer) -> None:
    threads = [threading.Thread(target=h2_request, args=(h2c.port,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert h2c.requests == 8


def test_grpc_echo_round_trip_and_health() -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with GrpcEchoServer(name="grpc-a") as server:
        reply = echo_call(server.address, "ping", metadata=[("x-trace", "t1")])
        assert (reply.message, reply.upstream) == ("ping", "grpc-a")
        assert reply.metadata["x-trace"] == "t1"
        assert server.requests == 1
        with grpc.insecure_channel(server.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            check = stub.Check(health_pb2.HealthCheckRequest(service="meshxds.echo.v1.Echo"), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING


def test_grpc_echo_stream_sends_count_replies_interval_apart() -> None:
    with GrpcEchoServer(name="grpc-s") as server:
        started = time.monotonic()
        replies = echo_stream(server.address, "tick", count=3, interval_s=0.2, timeout=5)
        elapsed = time.monotonic() - started
    assert [(r.message, r.upstream, r.sequence) for r in replies] == [("tick", "grpc-s", i) for i in range(3)]
    assert 0.35 <= elapsed < 3, elapsed  # two intervals: the first reply comes at once
    assert server.cancelled == 0


def test_grpc_slow_echo_waits_and_counts_a_call_that_ends_first() -> None:
    with GrpcEchoServer(name="grpc-slow") as server:
        started = time.monotonic()
        reply = echo_call(server.address, "late", delay_ms=300)
        assert reply.message == "late"
        assert time.monotonic() - started >= 0.3
        with pytest.raises(grpc.RpcError) as err:
            echo_call(server.address, "never", delay_ms=30_000, timeout=0.3)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        # The servicer stops waiting when the call ends, and says so.
        wait_until(lambda: server.cancelled == 1 or None, timeout=5, what="cancellation seen upstream")


def test_grpc_frame_is_length_prefixed() -> None:
    frame = grpc_frame(echo_pb2.EchoRequest(message="hi"))
    assert frame[0] == 0
    assert int.from_bytes(frame[1:5], "big") == len(frame) - 5
    assert echo_pb2.EchoRequest.FromString(frame[5:]).message == "hi"


@pytest.mark.parametrize("kind", [H2cOnlyServer, Http1OnlyServer, GrpcEchoServer])
def test_servers_stop_free_their_port_and_restart(
    kind: type[H2cOnlyServer | Http1OnlyServer | GrpcEchoServer],
) -> None:
    server = kind(name="x")
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.port
    with server:
        port = server.port
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
    with server:  # a stopped server can start again (on a new free port)
        assert server.port > 0
