"""WebSocket through a real Envoy (issue 11): an HTTP/1.1 Upgrade and, over HTTP/2, an extended
CONNECT (RFC 8441) reach a real WebSocket server behind a Gateway API route to a
``kubernetes.io/ws`` Service port, in SotW and Delta; a route that asks for no upgrade is served
as before. WebSocket is on for every route, as in Istio, Envoy Gateway and kgateway."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from httproute_support import (
    GATEWAY_CLASS,
    NS,
    EchoServer,
    Stack,
    gateway_yaml,
    join,
    run_stack,
    service_yaml,
)
from websockets.sync.client import connect

from meshxds.testing.ports import free_port
from meshxds.testing.websocket import WebSocketEchoServer, h2_websocket_echo

GW = "ws-gateway"


def ws_service_yaml(name: str, upstream_port: int) -> str:
    """A Service whose port says ``kubernetes.io/ws`` (WebSocket over HTTP/1.1), and its endpoints."""
    return service_yaml(name, upstream_port).replace(
        "ports: [{name: http, port: 8080, targetPort: 3000}]",
        "ports: [{name: http, port: 8080, targetPort: 3000, appProtocol: kubernetes.io/ws}]",
    )


def route_yaml(name: str, host: str, backend: str) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [{host}]
  rules:
  - backendRefs: [{{name: {backend}, port: 8080}}]
"""


@pytest.fixture(scope="module", params=["sotw", "delta"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    with WebSocketEchoServer(name="chat") as chat, EchoServer(name="plain") as plain:
        files = {
            "all.yaml": join(
                GATEWAY_CLASS,
                gateway_yaml(GW, [{"name": "http", "port": port}]),
                ws_service_yaml("chat", chat.port),
                service_yaml("plain", plain.port),
                route_yaml("chat", "chat.example.com", "chat"),
                route_yaml("plain", "plain.example.com", "plain"),
            )
        }
        base = tmp_path_factory.mktemp(f"ws-{request.param}")
        with run_stack(
            base,
            files,
            gateways={GW: port},
            probes=[(GW, "plain.example.com", "/")],
            delta=request.param == "delta",
        ) as running:
            running.upstreams["chat"] = chat
            yield running


def test_an_http1_upgrade_reaches_the_websocket_server(stack: Stack) -> None:
    port = stack.ports[GW]
    # The URI names the route's host (the Host header); the socket goes to Envoy on 127.0.0.1.
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    with connect(f"ws://chat.example.com:{port}/room/1", sock=sock, open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "chat: hello"
        ws.send("again")
        assert ws.recv(timeout=10) == "chat: again"
    assert stack.upstreams["chat"].paths[-1] == "/room/1"


def test_http2_extended_connect_reaches_the_http1_websocket_server(stack: Stack) -> None:
    # Envoy turns the extended CONNECT into an HTTP/1.1 Upgrade for this upstream and passes the
    # headers on; an HTTP/1.1 WebSocket server wants Sec-WebSocket-Key, which RFC 8441 leaves out,
    # so this client sends one (a key-less request gets the server's 400, through Envoy).
    key = (("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),)
    answer = h2_websocket_echo(stack.ports[GW], "chat.example.com", "/room/2", "over h2", extra_headers=key)
    assert answer == "chat: over h2"
    assert stack.upstreams["chat"].paths[-1] == "/room/2"


def test_a_request_without_upgrade_is_served_as_before(stack: Stack) -> None:
    assert stack.request("plain.example.com", "/x").backend == "plain"


def test_envoy_holds_websocket_upgrades_on_the_listener(stack: Stack) -> None:
    dump = stack.envoys[GW].config_dump()
    listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
    text = str(listeners)
    assert "'upgrade_type': 'websocket'" in text and "'allow_connect': True" in text
