"""DestinationRule ``connectionPool`` through a real Istio gateway, over SotW and Delta ADS:

- Envoy accepts every field (no NACK) and its config_dump shows them: TCP keepalive, idle
  timeout, connection lifetime, HTTP/2 streams and PINGs, the TCP proxy's idle timeout;
- ``http.idleTimeout: 1s`` closes the idle upstream connection after a request;
- ``tcp.maxConnectionDuration: 1s`` ends the upstream connection after a second;
- ``http2KeepAlive`` (1 s / 1 s) against an h2c upstream that stops answering PINGs closes the
  connection (Envoy's ``http2.keepalive_timeout``), and the next request gets a new one;
- a gRPC call through a cluster with only the default keepalive (300 s / 20 s) works;
- ``tcp.idleTimeout: 1s`` on a tcp route's destination closes an idle proxied TCP connection.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from istio_support import (
    PortReservation,
    Stack,
    backend,
    destination_rule,
    gateway,
    http_request,
    listener_name,
    run_stack,
    server,
    virtual_service,
    wait_status,
    write_manifests,
)

from meshxds.testing.ports import wait_until
from meshxds.testing.upstreams import GrpcEchoServer, H2cOnlyServer, Http1OnlyServer, echo_call

NS = "default"
IDLE = "outbound|8080||idle.default.svc.cluster.local"
AGED = "outbound|8080||aged.default.svc.cluster.local"
PINGED = "outbound|8080||pinged.default.svc.cluster.local"
ECHO = "outbound|9000||echo.default.svc.cluster.local"
DB = "outbound|5432||db.default.svc.cluster.local"
WAIT_S = 15.0
"""Upper bound on each wait for Envoy to act on a 1 s setting (a loaded CI machine is slow)."""


@dataclass
class Pool:
    stack: Stack
    http_port: int
    tcp_port: int
    pinged: H2cOnlyServer
    db: Http1OnlyServer


def _pool(**settings: Any) -> dict[str, Any]:
    return {"trafficPolicy": {"connectionPool": settings}}


def manifests(
    http_port: int, tcp_port: int, idle: int, aged: int, pinged: int, echo: int, db: int
) -> list[dict[str, Any]]:
    def route(name: str, port: int) -> dict[str, Any]:
        return virtual_service(
            name,
            NS,
            {
                "hosts": [f"{name}.example.com"],
                "gateways": ["istio-system/edge"],
                "http": [{"route": [{"destination": {"host": name, "port": {"number": port}}}]}],
            },
        )

    return [
        gateway(
            "edge",
            "istio-system",
            [server(http_port, "HTTP", ["*"], name="http"), server(tcp_port, "TCP", ["*"], name="tcp")],
        ),
        *backend("idle", NS, port=8080, upstream_port=idle),
        *backend("aged", NS, port=8080, upstream_port=aged),
        *backend("pinged", NS, port=8080, upstream_port=pinged, port_name="http2-web"),
        *backend("echo", NS, port=9000, upstream_port=echo, port_name="grpc"),
        *backend("db", NS, port=5432, upstream_port=db, port_name="tcp"),
        destination_rule("idle", NS, {"host": "idle", **_pool(http={"idleTimeout": "1s"})}),
        destination_rule(
            "aged",
            NS,
            {
                "host": "aged",
                **_pool(
                    tcp={
                        "maxConnectionDuration": "1s",
                        "tcpKeepalive": {"probes": 3, "time": "10s", "interval": "5s"},
                    }
                ),
            },
        ),
        destination_rule(
            "pinged",
            NS,
            {
                "host": "pinged",
                **_pool(
                    http={"maxConcurrentStreams": 50, "http2KeepAlive": {"interval": "1s", "timeout": "1s"}}
                ),
            },
        ),
        destination_rule("db", NS, {"host": "db", **_pool(tcp={"idleTimeout": "1s"})}),
        route("idle", 8080),
        route("aged", 8080),
        route("pinged", 8080),
        route("echo", 9000),
        virtual_service(
            "db",
            NS,
            {
                "hosts": ["*"],
                "gateways": ["istio-system/edge"],
                "tcp": [{"route": [{"destination": {"host": "db", "port": {"number": 5432}}}]}],
            },
        ),
    ]


@pytest.fixture(params=["sotw", "delta"])
def pool(
    request: pytest.FixtureRequest, tmp_path: Path, manifest_dir: Path, harness_processes: list[Any]
) -> Iterator[Pool]:
    with (
        PortReservation(2) as reserved,
        Http1OnlyServer(name="idle") as idle,
        Http1OnlyServer(name="aged") as aged,
        H2cOnlyServer(name="pinged", answer_pings=False) as pinged,
        GrpcEchoServer(name="echo") as echo,
        Http1OnlyServer(name="db") as db,
    ):
        http_port, tcp_port = reserved.ports
        write_manifests(
            manifest_dir,
            manifests(http_port, tcp_port, idle.port, aged.port, pinged.port, echo.port, db.port),
        )
        with run_stack(
            tmp_path,
            manifest_dir,
            delta=request.param == "delta",
            listener_ports=[http_port, tcp_port],
            reserved=reserved,
            processes=harness_processes,
        ) as stack:
            yield Pool(stack=stack, http_port=http_port, tcp_port=tcp_port, pinged=pinged, db=db)


def _dumped_clusters(stack: Stack) -> dict[str, dict[str, Any]]:
    dump = stack.envoy.config_dump()
    section = next(c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump"))
    return {d["cluster"]["name"]: d["cluster"] for d in section.get("dynamic_active_clusters", ())}


def _protocol_options(cluster: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = cluster["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]
    return options


def _tcp_proxy(stack: Stack, port: int) -> dict[str, Any]:
    dump = stack.envoy.config_dump()
    section = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
    listener = next(d for d in section["dynamic_listeners"] if d["name"] == listener_name(port))
    (chain,) = listener["active_state"]["listener"]["filter_chains"]
    (proxy,) = chain["filters"]
    config: dict[str, Any] = proxy["typed_config"]
    return config


def test_envoy_accepts_every_field_and_shows_it(pool: Pool) -> None:
    envoy = pool.stack.envoy
    assert envoy.stat("cluster_manager.cds.update_rejected") == 0
    assert envoy.stat("listener_manager.lds.update_rejected") == 0
    clusters = _dumped_clusters(pool.stack)
    idle = _protocol_options(clusters[IDLE])
    assert idle["common_http_protocol_options"]["idle_timeout"] == "1s"
    aged = clusters[AGED]
    assert _protocol_options(aged)["common_http_protocol_options"]["max_connection_duration"] == "1s"
    assert aged["upstream_connection_options"]["tcp_keepalive"] == {
        "keepalive_probes": 3,
        "keepalive_time": 10,
        "keepalive_interval": 5,
    }
    pinged = _protocol_options(clusters[PINGED])["explicit_http_config"]["http2_protocol_options"]
    assert pinged["max_concurrent_streams"] == 50
    assert pinged["connection_keepalive"] == {"interval": "1s", "timeout": "1s"}
    echo = _protocol_options(clusters[ECHO])["explicit_http_config"]["http2_protocol_options"]
    assert echo["connection_keepalive"] == {"interval": "300s", "timeout": "20s"}
    # HTTP/1.1 clusters get no HTTP/2 settings, the default keepalive included.
    assert "http2_protocol_options" not in idle["explicit_http_config"]
    proxy = _tcp_proxy(pool.stack, pool.tcp_port)
    assert (proxy["cluster"], proxy["idle_timeout"]) == (DB, "1s")


def test_http_idle_timeout_closes_the_idle_upstream_connection(pool: Pool) -> None:
    envoy = pool.stack.envoy
    assert wait_status(pool.http_port, "idle.example.com").headers["x-upstream-name"] == "idle"
    assert envoy.stat(f"cluster.{IDLE}.upstream_cx_total") >= 1
    wait_until(
        lambda: envoy.stat(f"cluster.{IDLE}.upstream_cx_idle_timeout") >= 1,
        timeout=WAIT_S,
        interval=0.2,
        what=f"{IDLE}: the idle upstream connection closed by http.idleTimeout",
    )
    assert envoy.stat(f"cluster.{IDLE}.upstream_cx_active") == 0


def test_max_connection_duration_ends_the_upstream_connection(pool: Pool) -> None:
    envoy = pool.stack.envoy
    assert wait_status(pool.http_port, "aged.example.com").headers["x-upstream-name"] == "aged"
    wait_until(
        lambda: envoy.stat(f"cluster.{AGED}.upstream_cx_max_duration_reached") >= 1,
        timeout=WAIT_S,
        interval=0.2,
        what=f"{AGED}: the upstream connection ended by tcp.maxConnectionDuration",
    )
    # No idle timeout is set there: only the lifetime ended it.
    assert envoy.stat(f"cluster.{AGED}.upstream_cx_idle_timeout") == 0


def test_http2_keepalive_closes_a_connection_whose_peer_stopped_answering_pings(pool: Pool) -> None:
    envoy = pool.stack.envoy
    response = wait_status(pool.http_port, "pinged.example.com", "/first")
    assert response.headers["x-upstream-name"] == "pinged"
    assert pool.pinged.last_request is not None and pool.pinged.last_request.protocol == "HTTP/2"
    wait_until(
        lambda: envoy.stat(f"cluster.{PINGED}.http2.keepalive_timeout") >= 1,
        timeout=WAIT_S,
        interval=0.2,
        what=f"{PINGED}: the connection closed for an unanswered PING",
    )
    assert pool.pinged.pings >= 1
    # The silent connection is gone; the next request gets a new one and is answered.
    assert http_request(pool.http_port, "pinged.example.com", "/second").status == 200
    assert envoy.stat(f"cluster.{PINGED}.upstream_cx_total") >= 2


def test_a_grpc_call_works_through_the_default_keepalive(pool: Pool) -> None:
    target = f"127.0.0.1:{pool.http_port}"
    reply = wait_until(
        lambda: echo_call(target, "kept alive", authority="echo.example.com", timeout=2),
        timeout=WAIT_S,
        what="gRPC call through the gateway",
    )
    assert (reply.message, reply.upstream) == ("kept alive", "echo")
    envoy = pool.stack.envoy
    assert envoy.stat(f"cluster.{ECHO}.upstream_cx_http2_total") >= 1
    assert envoy.stat(f"cluster.{ECHO}.http2.keepalive_timeout") == 0


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length, read off a connection that stays open."""
    received = b""
    for _ in range(100):  # a chunk per pass
        chunk = sock.recv(65536)
        assert chunk, f"closed before the response ended: {received!r}"
        received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        lengths = [
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        ]
        if lengths and len(body) >= lengths[0]:
            return head, body
    raise AssertionError(f"no whole response: {received!r}")


def test_tcp_idle_timeout_closes_an_idle_tcp_route_connection(pool: Pool) -> None:
    with socket.create_connection(("127.0.0.1", pool.tcp_port), timeout=WAIT_S) as sock:
        # A keep-alive HTTP/1.1 exchange over the TCP proxy, then silence from both ends.
        sock.sendall(b"GET /over-tcp HTTP/1.1\r\nHost: db\r\n\r\n")
        head, _ = _read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and b"x-upstream-name: db" in head.lower(), head
        # Envoy closes the idle connection: the read ends with EOF, not with the socket's timeout.
        assert sock.recv(65536) == b""
    idle = {
        k: v
        for k, v in pool.stack.envoy.stats().items()
        if k.startswith("tcp.") and k.endswith(".idle_timeout")
    }
    assert any(v >= 1 for v in idle.values()), idle
    assert pool.db.requests == 1
