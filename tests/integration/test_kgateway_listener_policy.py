"""kgateway listener policies against real Envoy, SotW and Delta: one Gateway, listener ``a`` and
listener ``b`` on two ports, the same GRPCRoute on both.

- An HTTPListenerPolicy naming ``a``: ``streamIdleTimeout: 1s`` ends a call whose upstream stays
  silent for 3 s (the same call through ``b`` is answered); ``idleTimeout: 1s`` sends an idle
  HTTP/2 client a GOAWAY (``b``'s idle client gets none).
- A ListenerPolicy: ``default`` (HTTP/2 limits and windows, header count, buffer limit) and a
  ``perPort`` entry for ``b`` replacing it (other limits, no extended CONNECT, TCP keepalive).
  What a real HTTP/2 client receives in Envoy's SETTINGS and WINDOW_UPDATE, a request with too
  many headers, the keepalive timer on Envoy's accepted socket and the config_dump show each
  port got its own.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, service_docs, to_yaml
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import GrpcEchoServer, curl, echo_call

LABELS = {"gateway.networking.k8s.io/gateway-name": "http"}
KEEPALIVE_TIME_S = 7


def manifests(port_a: int, port_b: int, upstream_port: int) -> str:
    gateway = gateway_api_docs([gateway_listener(port_a, name="a"), gateway_listener(port_b, name="b")])
    return (
        to_yaml(
            [
                *gateway,
                *service_docs(
                    "echo", upstream_port=upstream_port, port=9000, port_name="grpc", app_protocol="grpc"
                ),
            ]
        )
        + f"""\
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: default}}
spec:
  parentRefs: [{{name: http, namespace: gateway-system}}]
  hostnames: [grpc.example]
  rules: [{{backendRefs: [{{name: echo, port: 9000}}]}}]
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {{name: a-timeouts, namespace: gateway-system}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: http, sectionName: a}}]
  streamIdleTimeout: 1s
  idleTimeout: 1s
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: ListenerPolicy
metadata: {{name: tuning, namespace: gateway-system}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: http}}]
  default:
    perConnectionBufferLimitBytes: 32768
    httpSettings:
      maxHeadersCount: 30
      maxRequestsPerConnection: 500
      http2ProtocolOptions:
        maxConcurrentStreams: 77
        initialStreamWindowSize: 64Ki
        initialConnectionWindowSize: 1Mi
  perPort:
    - port: {port_b}
      listener:
        perConnectionBufferLimitBytes: 65536
        tcpKeepalive: {{keepAliveTime: {KEEPALIVE_TIME_S}s, keepAliveInterval: 3s, keepAliveProbes: 4}}
        httpSettings:
          http2ProtocolOptions: {{maxConcurrentStreams: 33, allowConnect: false}}
"""
    )


@dataclass(frozen=True, slots=True)
class Stack:
    port_a: int
    port_b: int
    envoy: EnvoyProcess
    upstream: GrpcEchoServer

    def prefix(self, port: int) -> str:
        return f"http.127.0.0.1_{port}"


@pytest.fixture(scope="module", params=["sotw", "delta"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port_a, port_b = free_port(), free_port()
    base = tmp_path_factory.mktemp(f"listener-policy-{request.param}")
    manifest_dir = base / "manifests"
    manifest_dir.mkdir()
    with GrpcEchoServer(name="echo") as upstream:
        (manifest_dir / "all.yaml").write_text(manifests(port_a, port_b, upstream.port))
        with local_gateway(
            manifest_dir,
            node_id="gw",
            namespace="gateway-system",
            labels=LABELS,
            delta=request.param == "delta",
            work_dir=base,
        ) as (_, envoy):
            # Both listeners route (the routes arrive over RDS after the listeners).
            for port in (port_a, port_b):
                wait_until(
                    lambda port=port: echo_call(f"127.0.0.1:{port}", authority="grpc.example", timeout=5),
                    timeout=20,
                    what=f"a call through port {port}",
                )
            yield Stack(port_a=port_a, port_b=port_b, envoy=envoy, upstream=upstream)


@dataclass
class H2Client:
    """A real HTTP/2 client connection (prior knowledge) that only reads what Envoy sends."""

    sock: socket.socket
    conn: h2.connection.H2Connection
    events: list[h2.events.Event] = field(default_factory=list)
    closed: bool = False

    @classmethod
    def open(cls, port: int) -> H2Client:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        client = cls(sock, conn)
        client.flush()
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def read(self, seconds: float) -> None:
        """Take in what arrives for up to ``seconds`` (less once the peer closes)."""
        deadline = time.monotonic() + seconds
        while not self.closed and (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return
            except ConnectionError:
                data = b""
            if not data:
                self.closed = True
                return
            self.events.extend(self.conn.receive_data(data))
            self.flush()

    def handshake(self) -> None:
        """Until Envoy's SETTINGS and the answer to a PING sent after our preface: Envoy writes
        its SETTINGS and connection WINDOW_UPDATE before it reads anything of ours."""
        self.conn.ping(b"meshxds!")
        self.flush()
        for _ in range(50):
            if any(isinstance(e, h2.events.PingAckReceived) for e in self.events):
                assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in self.events)
                return
            self.read(0.2)
        raise AssertionError(f"no PING answer from Envoy: {self.events}")

    def goaway(self) -> h2.events.ConnectionTerminated | None:
        return next((e for e in self.events if isinstance(e, h2.events.ConnectionTerminated)), None)

    def close(self) -> None:
        self.sock.close()


def _listener_config(envoy: EnvoyProcess, port: int) -> dict[str, Any]:
    dump = envoy.config_dump()
    listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
    for entry in listeners.get("dynamic_listeners", ()):
        config: dict[str, Any] = entry["active_state"]["listener"]
        if config["address"]["socket_address"]["port_value"] == port:
            return config
    raise AssertionError(f"no listener on port {port} in the config_dump")


def _hcm(listener: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


def test_stream_idle_timeout_ends_a_silent_call_only_where_set(stack: Stack) -> None:
    stat = f"{stack.prefix(stack.port_a)}.downstream_rq_idle_timeout"
    before, cancelled = stack.envoy.stat(stat), stack.upstream.cancelled
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        echo_call(f"127.0.0.1:{stack.port_a}", authority="grpc.example", delay_ms=3000, timeout=10)
    elapsed = time.monotonic() - started
    # Ended by Envoy before the upstream answered (a 408 local reply, as gRPC status UNKNOWN).
    assert elapsed < 2.9, (elapsed, caught.value)
    assert caught.value.code() is not grpc.StatusCode.DEADLINE_EXCEEDED, caught.value
    wait_until(lambda: stack.envoy.stat(stat) > before, timeout=5, what=stat)
    # The upstream saw its call cancelled (Envoy reset the upstream stream too).
    wait_until(lambda: stack.upstream.cancelled > cancelled, timeout=5, what="the upstream call cancelled")
    # Through b (no stream idle timeout of its own, Envoy's 5 min) the slow answer arrives.
    answer = echo_call(f"127.0.0.1:{stack.port_b}", authority="grpc.example", delay_ms=3000, timeout=10)
    assert answer.message == "hello"
    assert stack.envoy.stat(f"{stack.prefix(stack.port_b)}.downstream_rq_idle_timeout") == 0


def test_idle_timeout_sends_an_idle_http2_client_goaway_only_where_set(stack: Stack) -> None:
    stat = f"{stack.prefix(stack.port_a)}.downstream_cx_idle_timeout"
    before = stack.envoy.stat(stat)
    on_a, on_b = H2Client.open(stack.port_a), H2Client.open(stack.port_b)
    try:
        on_a.handshake()
        on_b.handshake()
        for _ in range(50):  # at most ~10 s
            if on_a.goaway() is not None or on_a.closed:
                break
            on_a.read(0.2)
        goaway = on_a.goaway()
        assert goaway is not None, f"no GOAWAY on a: {on_a.events}"
        assert goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        wait_until(lambda: stack.envoy.stat(stat) > before, timeout=5, what=stat)
        # b has been idle as long, and keeps its connection.
        on_b.read(0.5)
        assert on_b.goaway() is None and not on_b.closed, on_b.events
    finally:
        on_a.close()
        on_b.close()


def _keepalive_timer_s(local_port: int) -> float | None:
    """The keepalive timer of an established socket whose local port is ``local_port`` (Envoy's
    end of a client connection), from /proc/net/tcp: ``tr`` 2 is the keepalive timer, its
    ``tm->when`` in clock ticks (USER_HZ, 100 a second)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local, state, timer = parts[1], parts[3], parts[5]
        if int(local.rsplit(":", 1)[1], 16) == local_port and state == "01":
            active, _, when = timer.partition(":")
            if int(active, 16) == 2:
                return int(when, 16) / 100
    return None


def test_http2_settings_and_limits_per_port(stack: Stack) -> None:
    on_a, on_b = H2Client.open(stack.port_a), H2Client.open(stack.port_b)
    try:
        on_a.handshake()
        on_b.handshake()
        codes = h2.settings.SettingCodes
        # a: the ListenerPolicy default. 64Ki per stream; the connection window raised to 1Mi.
        settings_a = on_a.conn.remote_settings
        assert settings_a.max_concurrent_streams == 77
        assert settings_a.initial_window_size == 65536
        assert on_a.conn.outbound_flow_control_window == 1048576
        assert settings_a.get(codes.ENABLE_CONNECT_PROTOCOL) == 1  # meshxds's default: WebSocket over h2
        # b: its perPort entry replaces the default entirely: Envoy's own windows, no CONNECT.
        settings_b = on_b.conn.remote_settings
        assert settings_b.max_concurrent_streams == 33
        # Envoy's own windows (16 MiB and more in 1.40), not the default's 64Ki / 1Mi.
        assert settings_b.initial_window_size > 1048576
        assert on_b.conn.outbound_flow_control_window > 1048576
        assert settings_b.get(codes.ENABLE_CONNECT_PROTOCOL, 0) == 0
        # b's accepted connection has b's keepalive (the OS default would be 2 h, and off).
        timer = wait_until(
            lambda: _keepalive_timer_s(stack.port_b), timeout=5, what="a keepalive timer on b's socket"
        )
        assert 0 < timer <= KEEPALIVE_TIME_S
    finally:
        on_a.close()
        on_b.close()

    # maxHeadersCount 30 on a: 40 headers get 431 (HTTP/1.1); b has Envoy's limit of 100.
    many = [(f"x-extra-{i}", "1") for i in range(40)]
    too_many = curl(f"http://127.0.0.1:{stack.port_a}/", http1=True, headers=many)
    assert too_many.status == 431, too_many
    fine = curl(f"http://127.0.0.1:{stack.port_b}/", http1=True, headers=many)
    assert fine.status not in (0, 431), fine

    listener_a, listener_b = (
        _listener_config(stack.envoy, stack.port_a),
        _listener_config(stack.envoy, stack.port_b),
    )
    assert listener_a["per_connection_buffer_limit_bytes"] == 32768
    assert listener_b["per_connection_buffer_limit_bytes"] == 65536
    assert "socket_options" not in listener_a
    assert [o["description"] for o in listener_b["socket_options"]] == [
        "SO_KEEPALIVE",
        "TCP_KEEPIDLE",
        "TCP_KEEPINTVL",
        "TCP_KEEPCNT",
    ]
    hcm_a, hcm_b = _hcm(listener_a), _hcm(listener_b)
    assert hcm_a["stream_idle_timeout"] == "1s"
    assert hcm_a["common_http_protocol_options"] == {
        "idle_timeout": "1s",
        "max_headers_count": 30,
        "max_requests_per_connection": 500,
    }
    assert hcm_a["http2_protocol_options"] == {
        "max_concurrent_streams": 77,
        "initial_stream_window_size": 65536,
        "initial_connection_window_size": 1048576,
        "allow_connect": True,
    }
    assert "stream_idle_timeout" not in hcm_b and "common_http_protocol_options" not in hcm_b
    assert hcm_b["http2_protocol_options"] == {"max_concurrent_streams": 33}
