"""Shared parts of the Istio integration tests (``test_istio_*.py``).

Every test runs for real on 127.0.0.1: ``meshxds serve --listener-address 127.0.0.1`` on a
directory of Istio manifests, one Envoy whose node labels an Istio ``Gateway`` selects (or none:
a sidecar), and real upstreams. Service port numbers in the manifests are logical; EndpointSlices
point at the upstreams' real ports on 127.0.0.1. Gateway server ports (and, for sidecars, service
ports) are free ports, since Envoy binds them.

``run_stack()`` starts the server and Envoy, waits until Envoy has acked CDS and LDS and the
expected listeners are active (warmed: their RDS and SDS answers arrived), and stops both at exit.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import yaml

from meshxds.testing.certs import ServerCertificate, write_pem_files
from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.ports import wait_until
from meshxds.testing.server import MeshxdsProcess

ISTIO_API = "networking.istio.io/v1"
GATEWAY_LABELS = {"istio": "ingressgateway"}
"""The labels of the gateway proxy in these tests; every test Gateway selects them."""
SIDECAR_LABELS = {"app": "productpage", "version": "v1"}
"""Labels no test Gateway selects: a proxy with them is a sidecar."""

Doc = dict[str, Any]


# --------------------------------------------------------------------------- manifests


def service(
    name: str,
    namespace: str,
    ports: Sequence[Mapping[str, Any]],
) -> Doc:
    """A Kubernetes Service; each port is ``{"name", "port", "appProtocol"?}``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [dict(p) for p in ports]},
    }


def endpoint_slice(
    service_name: str,
    namespace: str,
    ports: Mapping[str, int],
    *,
    pods: Sequence[str | None] = (None,),
    suffix: str = "1",
) -> Doc:
    """An EndpointSlice of ``service_name``: its named ports at 127.0.0.1 on the real ``ports``.

    Each entry of ``pods`` is one endpoint; a name adds a ``targetRef`` to that Pod (whose labels
    then select DestinationRule subsets).
    """
    endpoints = []
    for pod_name in pods:
        endpoint: Doc = {"addresses": ["127.0.0.1"], "conditions": {"ready": True}}
        if pod_name is not None:
            endpoint["targetRef"] = {"kind": "Pod", "name": pod_name, "namespace": namespace}
        endpoints.append(endpoint)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{suffix}",
            "namespace": namespace,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": n, "port": p} for n, p in ports.items()],
        "endpoints": endpoints,
    }


def backend(
    name: str,
    namespace: str,
    *,
    port: int,
    upstream_port: int,
    port_name: str = "http",
    app_protocol: str | None = None,
) -> list[Doc]:
    """A one-port Service (logical ``port``) and its EndpointSlice at ``127.0.0.1:upstream_port``."""
    svc_port: Doc = {"name": port_name, "port": port}
    if app_protocol is not None:
        svc_port["appProtocol"] = app_protocol
    return [
        service(name, namespace, [svc_port]),
        endpoint_slice(name, namespace, {port_name: upstream_port}),
    ]


def pod(name: str, namespace: str, labels: Mapping[str, str]) -> Doc:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"containers": [{"name": "app", "image": "example/app"}]},
    }


def gateway(
    name: str,
    namespace: str,
    servers: Sequence[Mapping[str, Any]],
    *,
    selector: Mapping[str, str] = GATEWAY_LABELS,
) -> Doc:
    return {
        "apiVersion": ISTIO_API,
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": dict(selector), "servers": [dict(s) for s in servers]},
    }


def server(
    port: int,
    protocol: str,
    hosts: Sequence[str],
    *,
    name: str | None = None,
    tls: Mapping[str, Any] | None = None,
) -> Doc:
    """One Gateway server."""
    out: Doc = {
        "port": {"number": port, "name": name or f"{protocol.lower()}-{port}", "protocol": protocol},
        "hosts": list(hosts),
    }
    if tls is not None:
        out["tls"] = dict(tls)
    return out


# The Istio reference's bookinfo-rule: the dev-123 cookie goes to reviews.qa:7777, the rest 80/20.
BOOKINFO_RULE_HTTP: list[dict[str, Any]] = [
    {
        "match": [
            {
                "headers": {"cookie": {"regex": "^(.*?;)?(user=dev-123)(;.*)?$"}},
                "uri": {"prefix": "/reviews/"},
            }
        ],
        "route": [
            {
                "destination": {
                    "port": {"number": 7777},
                    "host": "reviews.qa.svc.cluster.local",
                }
            }
        ],
    },
    {
        "match": [{"uri": {"prefix": "/reviews/"}}],
        "route": [
            {
                "destination": {
                    "port": {"number": 9080},
                    "host": "reviews.prod.svc.cluster.local",
                },
                "weight": 80,
            },
            {"destination": {"host": "reviews.qa.svc.cluster.local"}, "weight": 20},
        ],
    },
]


def virtual_service(name: str, namespace: str, spec: Mapping[str, Any]) -> Doc:
    return {
        "apiVersion": ISTIO_API,
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }


def destination_rule(name: str, namespace: str, spec: Mapping[str, Any]) -> Doc:
    return {
        "apiVersion": ISTIO_API,
        "kind": "DestinationRule",
        "metadata": {"name": name, "namespace": namespace},
        "spec": dict(spec),
    }


def write_manifests(directory: Path, docs: Iterable[Doc], *, filename: str = "all.yaml") -> Path:
    path = directory / filename
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


# --------------------------------------------------------------------------- the running stack


@dataclass
class Stack:
    server: MeshxdsProcess
    envoy: EnvoyProcess
    node_id: str


class PortReservation:
    """Free ports held bound (not listening) until :meth:`release`: meanwhile neither the
    kernel's port-0 choices (upstreams) nor ``free_port()`` (the meshxds server) can hand them
    out. ``run_stack(reserved=...)`` releases them just before Envoy starts and binds them."""

    def __init__(self, count: int) -> None:
        self._sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            self._sockets.append(sock)
        self.ports = [int(s.getsockname()[1]) for s in self._sockets]

    def release(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def listener_name(port: int) -> str:
    return f"127.0.0.1_{port}"


@contextlib.contextmanager
def run_stack(
    work_dir: Path,
    config_dir: Path,
    *,
    labels: Mapping[str, str] = GATEWAY_LABELS,
    namespace: str = "istio-system",
    node_id: str = "istio-proxy",
    delta: bool = False,
    listener_ports: Iterable[int] = (),
    reserved: PortReservation | None = None,
    processes: list[Any] | None = None,
    timeout: float = 20.0,
) -> Iterator[Stack]:
    """``meshxds serve`` on ``config_dir`` and one Envoy, ready; both stopped at exit.

    Waits for CDS and LDS to be acked and for every listener on ``listener_ports`` to be active.
    ``reserved`` ports are released just before Envoy starts. Pass the ``harness_processes``
    fixture as ``processes`` to have both log tails attached to a failing test's report.
    """
    # Plaintext xDS on loopback: credentialName keys need the explicit flag (README: Security).
    with MeshxdsProcess(
        config_dir,
        extra_args=("--listener-address", "127.0.0.1", "--allow-insecure-secrets"),
        work_dir=work_dir / "meshxds",
    ) as srv:
        if processes is not None:
            processes.append(srv)
        srv.wait_ready(timeout=timeout)
        if reserved is not None:
            reserved.release()
        with EnvoyProcess.for_node(
            node_id=node_id,
            namespace=namespace,
            labels=labels,
            xds_port=srv.xds_port,
            delta=delta,
            work_dir=work_dir / "envoy",
        ) as envoy:
            if processes is not None:
                processes.append(envoy)
            envoy.wait_ready(timeout=timeout)
            srv.wait_synced(node_id, timeout=timeout)
            wanted = sorted({listener_name(p) for p in listener_ports})
            if wanted:
                envoy.wait_for(
                    lambda: set(wanted) <= set(envoy.listener_names()),
                    timeout=timeout,
                    what=f"listeners {wanted} active (see: meshxds translate --config-dir {config_dir} "
                    f"--namespace {namespace} --listener-address 127.0.0.1 "
                    + " ".join(f"--label {k}={v}" for k, v in labels.items())
                    + ")",
                )
            yield Stack(server=srv, envoy=envoy, node_id=node_id)


# --------------------------------------------------------------------------- clients


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def http_request(
    port: int,
    host: str,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 5.0,
) -> Response:
    """One plain HTTP/1.1 request to ``127.0.0.1:port`` with exactly ``Host: host``; no redirects followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in (headers or {}).items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return Response(
            status=response.status,
            headers={k.lower(): v for k, v in response.getheaders()},
            body=response.read(),
        )
    finally:
        conn.close()


def wait_status(
    port: int, host: str, path: str = "/", *, status: int = 200, timeout: float = 10.0, **kwargs: Any
) -> Response:
    """Repeat a request until it answers ``status`` (a route that just arrived may 404 briefly)."""

    def attempt() -> Response | None:
        response = http_request(port, host, path, **kwargs)
        return response if response.status == status else None

    result = wait_until(attempt, timeout=timeout, what=f"{host}{path} on :{port} answers {status}")
    assert result is not None
    return result


# --------------------------------------------------------------------------- a TLS upstream


class _TlsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: TlsNameServer

    def do_GET(self) -> None:
        body = f"{self.server.name}\n".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-upstream-name", self.server.name)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TlsNameServer(ThreadingHTTPServer):
    """An HTTPS (HTTP/1.1) upstream on 127.0.0.1 answering every GET with its name; the TLS
    handshake happens in the request's thread, so a silent client cannot stall the others."""

    daemon_threads = True

    def __init__(self, name: str, cert: ServerCertificate) -> None:
        super().__init__(("127.0.0.1", 0), _TlsHandler)
        self.name = name
        self._dir = tempfile.TemporaryDirectory(prefix="meshxds-istio-tls-")
        chain, key = write_pem_files(self._dir.name, name, cert)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(chain, key)
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(5)
        try:
            wrapped = self._ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self._thread.join(timeout=5)
        self.server_close()
        self._dir.cleanup()


def tls_http1_get(
    port: int, *, server_name: str, ca_pem: bytes, authority: str | None = None, timeout: float = 5.0
) -> tuple[list[str], int, str]:
    """GET / over one TLS connection (ALPN http/1.1) with SNI ``server_name``: the DNS SANs the
    server presented, the status, and the body."""
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=server_name) as sock,
    ):
        alt_names = (sock.getpeercert() or {}).get("subjectAltName", ())
        sans = [str(e[1]) for e in alt_names if isinstance(e, tuple) and len(e) == 2 and e[0] == "DNS"]
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
        conn.sock = sock
        conn.request("GET", "/", headers={"Host": authority or server_name})
        response = conn.getresponse()
        return sans, response.status, response.read().decode(errors="replace")


# --------------------------------------------------------------------------- a scripted upstream


class _ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status, delay = self.server.next_answer(self.path)
        if delay:
            time.sleep(delay)
        body = f"{self.server.name} {status}\n".encode()
        try:
            self.send_response(status)
            self.send_header("content-length", str(len(body)))
            self.send_header("x-upstream-name", self.server.name)
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the proxy gave up on us (a timeout test)

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ScriptedServer(ThreadingHTTPServer):
    """An HTTP/1.1 upstream answering from a script of ``(status, delay_s)``, then 200 at once.

    ``with ScriptedServer("flaky") as up: up.script([(503, 0), (503, 0)])``; ``up.paths`` lists
    the paths it was asked for, in order.
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _ScriptedHandler)
        self.name = name
        self._lock = threading.Lock()
        self._script: list[tuple[int, float]] = []
        self.paths: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def script(self, answers: Iterable[tuple[int, float]]) -> None:
        with self._lock:
            self._script = list(answers)
            self.paths = []

    def next_answer(self, path: str) -> tuple[int, float]:
        with self._lock:
            self.paths.append(path)
            return self._script.pop(0) if self._script else (200, 0.0)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self._thread.join(timeout=5)
        self.server_close()
