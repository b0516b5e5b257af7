"""HTTPS listeners on one port and HTTP/2 connection reuse (Istio #9429 / #13589; the Gateway
API conformance test GatewayHTTPSListenerDetectMisdirectedRequests), against real Envoy.

One TLS connection is opened with SNI ``a.example.com``; then requests for other hosts are sent
on that same connection, as a browser does when the certificate covers them:

- ``b.example.com`` shares a's certificate → its listener is merged into a's filter chain, so the
  reused connection is routed to b's backend (not 404);
- ``other.example.org`` has its own certificate → 421 Misdirected Request, never 404; a new
  connection with the right SNI then works.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from meshxds.testing.certs import CertificateAuthority, issue, make_ca, tls_secret_manifest
from meshxds.testing.h2tls import H2TlsConnection
from meshxds.testing.manifests import gateway_api_docs
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import H2cOnlyServer, Http1OnlyServer

LABELS = {"gateway.networking.k8s.io/gateway-name": "https"}


def service(name: str, port: int, *, app_protocol: str | None = None) -> list[dict[str, object]]:
    svc_port: dict[str, object] = {"port": 80, "name": "web"}
    if app_protocol:
        svc_port["appProtocol"] = app_protocol
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": [svc_port]},
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
            "ports": [{"name": "web", "port": port}],
            "endpoints": [{"addresses": ["127.0.0.1"]}],
        },
    ]


def route(name: str, hostname: str) -> dict[str, object]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "https", "namespace": "gateway-system"}],
            "hostnames": [hostname],
            "rules": [{"backendRefs": [{"name": name, "port": 80}]}],
        },
    }


def https_listener(name: str, port: int, hostname: str, secret: str) -> dict[str, object]:
    return {
        "name": name,
        "port": port,
        "protocol": "HTTPS",
        "hostname": hostname,
        "tls": {"certificateRefs": [{"name": secret}]},
        "allowedRoutes": {"namespaces": {"from": "All"}},
    }


@dataclass
class Gateway:
    port: int
    ca: CertificateAuthority
    a: H2cOnlyServer
    b: Http1OnlyServer
    other: H2cOnlyServer

    def connect(self, sni: str) -> H2TlsConnection:
        return H2TlsConnection("127.0.0.1", self.port, server_name=sni, ca_pem=self.ca.cert_pem)


@pytest.fixture(params=["sotw", "delta"])
def gateway(request: pytest.FixtureRequest, tmp_path: Path, manifest_dir: Path) -> Iterator[Gateway]:
    ca = make_ca()
    shared = issue(ca, ["*.example.com"])
    other = issue(ca, ["other.example.org"])
    port = free_port()
    with (
        H2cOnlyServer(name="a") as up_a,
        Http1OnlyServer(name="b") as up_b,
        H2cOnlyServer(name="other") as up_other,
    ):
        docs: list[dict[str, object]] = [
            *gateway_api_docs(
                [
                    https_listener("a", port, "a.example.com", "shared-cert"),
                    https_listener("b", port, "b.example.com", "shared-cert"),
                    https_listener("other", port, "other.example.org", "other-cert"),
                ],
                name="https",
            ),
            tls_secret_manifest("shared-cert", "gateway-system", shared),
            tls_secret_manifest("other-cert", "gateway-system", other),
            *service("a", up_a.port, app_protocol="http2"),
            route("a", "a.example.com"),
            *service("b", up_b.port),
            route("b", "b.example.com"),
            *service("other", up_other.port, app_protocol="kubernetes.io/h2c"),
            route("other", "other.example.org"),
        ]
        (manifest_dir / "all.yaml").write_text(yaml.safe_dump_all(docs))
        with local_gateway(
            manifest_dir,
            node_id="https-gw",
            namespace="gateway-system",
            labels=LABELS,
            delta=request.param == "delta",
            work_dir=tmp_path,
            # Plaintext xDS on loopback: the gateway's keys need the explicit flag (README: Security).
            server_args=("--allow-insecure-secrets",),
        ):
            gw = Gateway(port=port, ca=ca, a=up_a, b=up_b, other=up_other)
            # The listener warms until its certificates arrive over SDS: wait for a handshake.
            wait_until(lambda: _handshake(gw), timeout=15, what="TLS listener serving")
            yield gw


def _handshake(gw: Gateway) -> bool:
    with gw.connect("a.example.com") as conn:
        return conn.negotiated_alpn == "h2"


def test_alpn_h2_and_routing_by_sni(gateway: Gateway) -> None:
    with gateway.connect("a.example.com") as conn:
        assert conn.negotiated_alpn == "h2"
        assert "*.example.com" in conn.peer_certificate_sans()
        response = conn.request(authority="a.example.com")
        assert response.status == 200
        assert gateway.a.requests == 1


def test_reused_connection_reaches_host_sharing_the_certificate(gateway: Gateway) -> None:
    with gateway.connect("a.example.com") as conn:
        assert conn.request(authority="a.example.com").status == 200
        reused = conn.request(authority="b.example.com")
        assert reused.status == 200, reused.text
        assert reused.headers.get("x-upstream-name") == "b"
        # b's Service has no HTTP/2 hint: Envoy speaks HTTP/1.1 upstream even though the client used h2.
        assert '"protocol": "HTTP/1.1"' in reused.text
    assert gateway.b.requests == 1


def test_host_on_another_certificate_gets_421_not_404(gateway: Gateway) -> None:
    with gateway.connect("a.example.com") as conn:
        misdirected = conn.request(authority="other.example.org")
        assert misdirected.status == 421, misdirected.text
        # The connection is still usable for its own hosts.
        assert conn.request(authority="a.example.com").status == 200
    assert gateway.other.requests == 0
    with gateway.connect("other.example.org") as conn:
        assert "other.example.org" in conn.peer_certificate_sans()
        assert conn.request(authority="other.example.org").status == 200
        assert conn.request(authority="a.example.com").status == 421
    assert gateway.other.requests == 1


def test_unknown_host_on_a_good_connection_is_404(gateway: Gateway) -> None:
    with gateway.connect("a.example.com") as conn:
        assert conn.request(authority="nobody.example.net").status == 404
