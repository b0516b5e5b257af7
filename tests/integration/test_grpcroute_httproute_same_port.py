"""An HTTPRoute and a GRPCRoute to the same Service port (named ``http``) through real Envoy
(issue 9, point 2): the HTTPRoute's cluster speaks HTTP/1.1 and the GRPCRoute's, its own
``outbound|9000|~http2|...`` variant, HTTP/2. Before variants had names of their own, both
routes shared one cluster and one of them spoke the wrong protocol upstream.

One Service port is one set of endpoints, so the endpoint here is a small demultiplexer on
127.0.0.1: a connection that opens with the HTTP/2 preface goes to a grpcio echo server, any
other to an HTTP/1.1-only server (which hangs up on the preface, as grpcio does on HTTP/1.1).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, service_docs, to_yaml
from meshxds.testing.ports import free_port
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import GrpcEchoServer, Http1OnlyServer, curl, echo_call

LABELS = {"gateway.networking.k8s.io/gateway-name": "mixed"}
HOST = "echo.default.svc.cluster.local"
HTTP1_CLUSTER = f"outbound|9000||{HOST}"
HTTP2_CLUSTER = f"outbound|9000|~http2|{HOST}"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIMEOUT_S = 5.0


class PrefaceDemux:
    """127.0.0.1 TCP endpoint: HTTP/2 (prior knowledge) to ``h2``, everything else to ``http1``."""

    def __init__(self, *, h2: int, http1: int) -> None:
        self._targets = {True: h2, False: http1}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def __enter__(self) -> Self:
        self._spawn(self._accept_loop, "demux-accept")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(TIMEOUT_S)

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            self._spawn(self._serve, "demux-conn", client)

    def _serve(self, client: socket.socket) -> None:
        # Read until the bytes either are the whole preface or stop being a prefix of it.
        head = b""
        client.settimeout(TIMEOUT_S)
        with contextlib.suppress(OSError):
            while len(head) < len(PREFACE) and PREFACE.startswith(head):
                chunk = client.recv(len(PREFACE) - len(head))
                if not chunk:
                    break
                head += chunk
        client.settimeout(None)
        if not head:
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self._targets[head == PREFACE]), TIMEOUT_S)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._track(upstream)
        upstream.sendall(head)
        self._spawn(self._pump, "demux-up", upstream, client)
        self._pump(client, upstream)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def manifests(listener_port: int, upstream_port: int) -> str:
    gateway = gateway_api_docs(
        [gateway_listener(listener_port, name="http", allowed_from="Same")], name="mixed", namespace="default"
    )
    return (
        to_yaml(
            [
                *gateway,
                *service_docs("echo", upstream_port=upstream_port, port=9000, port_name="http"),
            ]
        )
        + """\
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: mixed}]
  hostnames: [web.example.com]
  rules:
    - backendRefs: [{name: echo, port: 9000}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: rpc, namespace: default}
spec:
  parentRefs: [{name: mixed}]
  hostnames: [grpc.example.com]
  rules:
    - matches: [{method: {service: meshxds.echo.v1.Echo}}]
      backendRefs: [{name: echo, port: 9000}]
"""
    )


@pytest.fixture
def demux(grpc_upstream: GrpcEchoServer, http1_upstream: Http1OnlyServer) -> Iterator[PrefaceDemux]:
    with PrefaceDemux(h2=grpc_upstream.port, http1=http1_upstream.port) as server:
        yield server


@pytest.fixture(params=["sotw", "delta"])
def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, manifest_dir: Path, demux: PrefaceDemux
) -> Iterator[tuple[int, EnvoyProcess]]:
    port = free_port()
    (manifest_dir / "mixed.yaml").write_text(manifests(port, demux.port))
    with local_gateway(
        manifest_dir,
        node_id="mixed-gw",
        namespace="default",
        labels=LABELS,
        delta=request.param == "delta",
        work_dir=tmp_path,
    ) as (_, envoy):
        yield port, envoy


def test_httproute_and_grpcroute_to_one_service_port_both_succeed(
    gateway: tuple[int, EnvoyProcess], grpc_upstream: GrpcEchoServer, http1_upstream: Http1OnlyServer
) -> None:
    port, envoy = gateway
    answer = curl(f"http://127.0.0.1:{port}/hello", headers={"host": "web.example.com"}, http1=True)
    assert answer.status == 200, answer
    body = json.loads(answer.body)
    assert (body["upstream"], body["protocol"]) == ("http1", "HTTP/1.1")

    reply = echo_call(f"127.0.0.1:{port}", "ping", authority="grpc.example.com")
    assert (reply.message, reply.upstream) == ("ping", "grpc")

    assert envoy.stat(f"cluster.{HTTP1_CLUSTER}.upstream_cx_http1_total") >= 1
    assert envoy.stat(f"cluster.{HTTP1_CLUSTER}.upstream_cx_http2_total") == 0
    assert envoy.stat(f"cluster.{HTTP2_CLUSTER}.upstream_cx_http2_total") >= 1
    assert envoy.stat(f"cluster.{HTTP2_CLUSTER}.upstream_cx_http1_total") == 0
    assert http1_upstream.requests == 1 and grpc_upstream.requests == 1
