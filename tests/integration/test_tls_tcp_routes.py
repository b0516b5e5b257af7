"""TLSRoute (passthrough by SNI) and TCPRoute through real Envoy.

Passthrough is proved by the certificate the client sees: it is the backend's own (Envoy holds
none for that port), and the SNI picks which backend answers.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
import yaml

from meshxds.testing.certs import CertificateAuthority, ServerCertificate, issue, make_ca
from meshxds.testing.h2tls import H2TlsConnection
from meshxds.testing.manifests import gateway_api_docs, gateway_listener
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import Http1OnlyServer, curl

LABELS = {"gateway.networking.k8s.io/gateway-name": "edge"}


def backend_docs(name: str, port: int) -> list[dict[str, object]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [{"name": "tls", "port": 443}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "tls", "port": port}],
            "endpoints": [{"addresses": ["127.0.0.1"]}],
        },
    ]


@pytest.fixture
def edge(
    tmp_path: Path, manifest_dir: Path, http1_upstream: Http1OnlyServer
) -> Iterator[tuple[int, int, CertificateAuthority]]:
    ca = make_ca()
    tls_port, tcp_port = free_port(), free_port()
    backends: dict[str, ServerCertificate] = {
        "alpha": issue(ca, ["alpha.example.com"]),
        "beta": issue(ca, ["beta.example.com"]),
    }
    servers = {name: _TlsHttpServer(cert, name) for name, cert in backends.items()}
    for srv in servers.values():
        srv.start()
    docs: list[dict[str, object]] = [
        *gateway_api_docs(
            [
                gateway_listener(
                    tls_port, name="tls", protocol="TLS", allowed_from="Same", tls={"mode": "Passthrough"}
                ),
                gateway_listener(tcp_port, name="tcp", protocol="TCP", allowed_from="Same"),
            ],
            name="edge",
            namespace="default",
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "plain", "namespace": "default"},
            "spec": {"ports": [{"name": "tcp", "port": 80}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "plain-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "plain"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "tcp", "port": http1_upstream.port}],
            "endpoints": [{"addresses": ["127.0.0.1"]}],
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "TCPRoute",
            "metadata": {"name": "plain", "namespace": "default"},
            "spec": {
                "parentRefs": [{"name": "edge", "sectionName": "tcp"}],
                "rules": [{"backendRefs": [{"name": "plain", "port": 80}]}],
            },
        },
    ]
    for name, srv in servers.items():
        docs += backend_docs(name, srv.port)
        docs.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1alpha2",
                "kind": "TLSRoute",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "parentRefs": [{"name": "edge", "sectionName": "tls"}],
                    "hostnames": [f"{name}.example.com"],
                    "rules": [{"backendRefs": [{"name": name, "port": 443}]}],
                },
            }
        )
    (manifest_dir / "edge.yaml").write_text(yaml.safe_dump_all(docs))
    try:
        with local_gateway(
            manifest_dir, node_id="edge", namespace="default", labels=LABELS, work_dir=tmp_path
        ):
            yield tls_port, tcp_port, ca
    finally:
        for s in servers.values():
            s.stop()


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_tls_passthrough_by_sni(edge: tuple[int, int, CertificateAuthority], name: str) -> None:
    tls_port, _, ca = edge

    def request() -> str:
        with H2TlsConnection(
            "127.0.0.1", tls_port, server_name=f"{name}.example.com", ca_pem=ca.cert_pem
        ) as conn:
            assert conn.peer_certificate_sans() == [f"{name}.example.com"]  # the backend's own certificate
            return conn.request(authority=f"{name}.example.com").text

    assert wait_until(request, timeout=10, what="passthrough answer") == f"{name}\n"


def test_tls_unknown_sni_is_refused(edge: tuple[int, int, CertificateAuthority]) -> None:
    tls_port, _, ca = edge
    with pytest.raises((ssl.SSLError, OSError)):
        H2TlsConnection("127.0.0.1", tls_port, server_name="gamma.example.com", ca_pem=ca.cert_pem, timeout=3)


def test_tcp_route_proxies_bytes(
    edge: tuple[int, int, CertificateAuthority], http1_upstream: Http1OnlyServer
) -> None:
    _, tcp_port, _ = edge
    result = curl(f"http://127.0.0.1:{tcp_port}/over-tcp", http1=True)
    assert result.status == 200
    assert result.json()["path"] == "/over-tcp"
    assert http1_upstream.requests == 1


# A minimal HTTP/2-over-TLS upstream for the passthrough test: answers every request with its name.
class _TlsHttpServer:
    def __init__(self, cert: ServerCertificate, name: str) -> None:
        self.name = name
        self._dir = tempfile.TemporaryDirectory(prefix="meshxds-tls-")
        chain, key = Path(self._dir.name, "c.pem"), Path(self._dir.name, "k.pem")
        chain.write_bytes(cert.chain_pem)
        key.write_bytes(cert.key_pem)
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.load_cert_chain(chain, key)
        self._ctx.set_alpn_protocols(["h2"])
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = int(self._sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        self._dir.cleanup()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                raw, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(5)
        try:
            conn_sock = self._ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        h2c = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        h2c.initiate_connection()
        try:
            conn_sock.sendall(h2c.data_to_send())
            for _ in range(1000):
                data = conn_sock.recv(65536)
                if not data:
                    break
                for event in h2c.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        body = f"{self.name}\n".encode()
                        h2c.send_headers(
                            event.stream_id, [(":status", "200"), ("content-length", str(len(body)))]
                        )
                        h2c.send_data(event.stream_id, body, end_stream=True)
                conn_sock.sendall(h2c.data_to_send())
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn_sock.close()
