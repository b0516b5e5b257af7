"""Shared parts of the HTTPRoute integration tests (``test_httproute_*.py``).

They follow the Gateway API conformance tests (``conformance/tests/httproute-*.go`` in
kubernetes-sigs/gateway-api): the same namespace, Gateway and backend names, the same routes where
the conformance manifests fit, and the same expectations. Everything runs for real on 127.0.0.1:
``meshxds serve`` on a manifest directory, one Envoy per Gateway (SotW ADS), and named upstreams
whose answers say which backend served the request.

``run_stack()`` starts all of that from a dict of manifest files and yields a ``Stack`` whose
``request()`` sends one plain HTTP/1.1 request (``http.client``: exact Host header, no redirects
followed) and whose ``route_conditions()`` / ``attached_routes()`` read ``/debug/config``.
``EchoServer`` is the upstream the conformance echo server would be here: it can wait before
answering (timeouts) and set response headers on request (ResponseHeaderModifier).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.ports import wait_until
from meshxds.testing.server import MeshxdsProcess

NS = "gateway-conformance-infra"
GATEWAY_LABEL = "gateway.networking.k8s.io/gateway-name"
CONTROLLER = "meshxds.io/gateway-controller"
MAX_DELAY_S = 10.0

GATEWAY_CLASS = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: meshxds}}
spec: {{controllerName: {CONTROLLER}}}
"""


def gateway_yaml(name: str, listeners: Sequence[Mapping[str, Any]], *, namespace: str = NS) -> str:
    """A Gateway; each listener is ``{"name", "port", "hostname"?, "from"?}`` (protocol HTTP)."""
    lines = [
        "apiVersion: gateway.networking.k8s.io/v1",
        "kind: Gateway",
        f"metadata: {{name: {name}, namespace: {namespace}}}",
        "spec:",
        "  gatewayClassName: meshxds",
        "  listeners:",
    ]
    for listener in listeners:
        hostname = f', hostname: "{listener["hostname"]}"' if listener.get("hostname") else ""
        allowed = listener.get("from", "Same")
        lines.append(
            f"    - {{name: {listener['name']}, port: {listener['port']}, protocol: HTTP{hostname},"
            f" allowedRoutes: {{namespaces: {{from: {allowed}}}}}}}"
        )
    return "\n".join(lines) + "\n"


def service_yaml(name: str, upstream_port: int, *, namespace: str = NS, port: int = 8080) -> str:
    """A Service (port 8080) and its EndpointSlice at 127.0.0.1:upstream_port."""
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  ports: [{{name: http, port: {port}, targetPort: 3000}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: {namespace}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {upstream_port}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
"""


def join(*documents: str) -> str:
    return "---\n".join(d if d.endswith("\n") else d + "\n" for d in documents)


# --------------------------------------------------------------------------- a programmable upstream


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY the body would wait for Envoy's
    # delayed ACK (~40 ms a request).
    disable_nagle_algorithm = True
    server: _EchoHttpServer

    def _respond(self) -> None:
        owner = self.server.owner
        query = parse_qs(urlsplit(self.path).query)
        delay = min(float((query.get("delay_ms") or ["0"])[0]) / 1000.0, MAX_DELAY_S)
        if delay > 0 and owner.stopping.wait(delay):
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = (
            json.dumps(
                {
                    "upstream": owner.name,
                    "protocol": "HTTP/1.1",
                    "method": self.command,
                    "path": self.path,
                    "authority": self.headers.get("Host", ""),
                    "headers": headers,
                },
                sort_keys=True,
            ).encode()
            + b"\n"
        )
        with owner.lock:
            owner.requests += 1
        try:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-upstream-name", owner.name)
            # echo-basic's convention: "X-Echo-Set-Header: Name:value,Other:value" sets response headers.
            for item in self.headers.get_all("x-echo-set-header") or ():
                for pair in item.split(","):
                    name, sep, value = pair.partition(":")
                    if sep and name.strip():
                        self.send_header(name.strip(), value.strip())
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy gave up on us (a timeout test): nothing to answer.

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _respond

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _EchoHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: EchoServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _EchoHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # connections reset by Envoy after a timeout are expected


class EchoServer:
    """HTTP/1.1 upstream that waits ``?delay_ms=N`` (at most 10 s) before answering and sets the
    response headers named in ``X-Echo-Set-Header``; otherwise answers like ``Http1OnlyServer``."""

    def __init__(self, *, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.requests = 0
        self.stopping = threading.Event()
        self._server: _EchoHttpServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def __enter__(self) -> Self:
        self._server = _EchoHttpServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()  # ends any delayed answer at once
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ``", "``."""
    body: str
    elapsed: float

    @property
    def backend(self) -> str | None:
        """Which named upstream answered (``x-upstream-name``), None for Envoy's own answers."""
        return self.headers.get("x-upstream-name")

    def seen(self) -> dict[str, Any]:
        """What the upstream received (its JSON answer)."""
        data: dict[str, Any] = json.loads(self.body)
        return data

    def __str__(self) -> str:
        return f"{self.status} backend={self.backend} headers={self.headers} body={self.body[:300]!r}"


def http_request(
    port: int,
    host: str,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    timeout: float = 5.0,
) -> Reply:
    """One HTTP/1.1 request to 127.0.0.1:port with exactly this Host header; redirects not followed."""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", host)
        for name, value in pairs:
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        found: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            found[key] = f"{found[key]}, {value}" if key in found else value
        return Reply(response.status, found, body, time.monotonic() - started)
    finally:
        conn.close()


def expect_backend(
    stack: Stack, host: str, path: str, backend: str | None, *, gateway: str | None = None, **kwargs: Any
) -> None:
    """200 from upstream ``backend``, or, with ``backend`` None, Envoy's own 404 (no route)."""
    reply = stack.request(host, path, gateway=gateway, **kwargs)
    expected = (404, None) if backend is None else (200, backend)
    assert (reply.status, reply.backend) == expected, f"{host}{path} {kwargs}: {reply}"


def values(header: str | None) -> list[str]:
    """A header's comma-separated values, stripped (``"a, b"`` and ``"a,b"`` alike)."""
    return [] if header is None else [v.strip() for v in header.split(",")]


# --------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    server: MeshxdsProcess
    envoys: dict[str, EnvoyProcess]
    """By Gateway name."""
    ports: dict[str, int]
    """Listener port by Gateway name."""
    manifests: Path
    upstreams: dict[str, Any] = field(default_factory=dict)

    def request(self, host: str, path: str = "/", *, gateway: str | None = None, **kwargs: Any) -> Reply:
        port = self.ports[gateway] if gateway is not None else next(iter(self.ports.values()))
        return http_request(port, host, path, **kwargs)

    def config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.server.get("/debug/config"))
        return data

    def object_status(self, kind: str, name: str, namespace: str = NS) -> dict[str, Any]:
        for item in self.config()["status"]:
            if (item["kind"], item["namespace"], item["name"]) == (kind, namespace, name):
                status: dict[str, Any] = item["status"]
                return status
        raise LookupError(f"no status for {kind} {namespace}/{name}")

    def route_conditions(
        self, name: str, namespace: str = NS, *, gateway: str | None = None, section: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """The route's conditions for one parent (Gateway ``gateway``, listener ``section``), by type."""
        parents = self.object_status("HTTPRoute", name, namespace)["parents"]
        if gateway is not None:
            parents = [p for p in parents if p["parentRef"]["name"] == gateway]
        if section is not None:
            parents = [p for p in parents if p["parentRef"].get("sectionName") == section]
        assert len(parents) == 1, parents
        assert parents[0]["controllerName"] == CONTROLLER
        return {c["type"]: c for c in parents[0]["conditions"]}

    def attached_routes(self, gateway: str, namespace: str = NS) -> dict[str, int]:
        listeners = self.object_status("Gateway", gateway, namespace)["listeners"]
        return {entry["name"]: entry["attachedRoutes"] for entry in listeners}

    def route_entry(self, gateway: str, route_name: str) -> dict[str, Any]:
        """One route of Envoy's RDS config dump, found by its name."""
        dump = self.envoys[gateway].config_dump()
        for config in dump["configs"]:
            if not config["@type"].endswith("RoutesConfigDump"):
                continue
            for dynamic in config.get("dynamic_route_configs", ()):
                for vhost in dynamic["route_config"].get("virtual_hosts", ()):
                    for route in vhost.get("routes", ()):
                        if route.get("name") == route_name:
                            found: dict[str, Any] = route
                            return found
        raise LookupError(f"Envoy of {gateway} has no route named {route_name}")


@contextlib.contextmanager
def run_stack(
    base: Path,
    files: Mapping[str, str],
    *,
    gateways: Mapping[str, int],
    namespace: str = NS,
    probes: Sequence[tuple[str, str, str]] = (),
    delta: bool = False,
) -> Iterator[Stack]:
    """Write ``files`` into ``base/manifests``, start ``meshxds serve`` and one Envoy per Gateway
    (``gateways``: name → listener port; SotW, or Delta with ``delta``), wait until each is synced
    and every probe ``(gateway, host, path)`` answers 200 from an upstream; stop everything on the
    way out."""
    manifests = base / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (manifests / name).write_text(text)
    server = MeshxdsProcess(
        manifests, extra_args=("--listener-address", "127.0.0.1"), work_dir=base / "server"
    )
    envoys = {
        gw: EnvoyProcess.for_node(
            node_id=f"gw-{gw}",
            namespace=namespace,
            labels={GATEWAY_LABEL: gw},
            xds_port=server.xds_port,
            work_dir=base / f"envoy-{gw}",
            delta=delta,
        )
        for gw in gateways
    }
    stack = Stack(server=server, envoys=envoys, ports=dict(gateways), manifests=manifests)
    try:
        server.start()
        server.wait_ready()
        for envoy in envoys.values():
            envoy.start()
        for envoy in envoys.values():
            envoy.wait_ready()
            server.wait_synced(envoy.node_id)
        for gw, host, path in probes:

            def served(gw: str = gw, host: str = host, path: str = path) -> str | None:
                return stack.request(host, path, gateway=gw).backend

            wait_until(served, timeout=15, what=f"{host}{path} served through {gw}")
        yield stack
    except BaseException:
        print(server.log_tail(60), *(e.log_tail(40) for e in envoys.values()), sep="\n----\n")
        raise
    finally:
        for envoy in envoys.values():
            envoy.stop()
        server.stop()


def bounded_requests(
    stack: Stack, host: str, path: str, count: int, *, budget_s: float = 60.0
) -> list[Reply]:
    """``count`` requests, one after another, each on a new connection; fails past ``budget_s``."""
    deadline = time.monotonic() + budget_s
    replies: list[Reply] = []
    for _ in range(count):
        assert time.monotonic() < deadline, f"{len(replies)} of {count} requests in {budget_s}s"
        replies.append(stack.request(host, path))
    return replies
