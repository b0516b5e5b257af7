"""The Istio Gateway reference examples (istio.io "Gateway" reference), for real: one Gateway
``some-config-namespace/my-gateway`` on the ingress proxy with

- port "80": HTTP for uk/eu.bookinfo.com with ``tls.httpsRedirect`` → 301 to https;
- port "443": HTTPS SIMPLE with ``serverCertificate``/``privateKey`` files → TLS, ALPN h2;
- port "9443": HTTPS SIMPLE with ``credentialName`` (a ``kubernetes.io/tls`` Secret in the
  gateway proxy's namespace) → the certificate arrives over SDS, never inline;
- port "2379": MONGO (plain TCP) → the ``bookinfo-mongo`` VirtualService's ``tcp`` route to
  ``mongo.prod`` port 5555 (an HTTP/1.1 upstream stands in for mongo: bytes are bytes);
- a TLS PASSTHROUGH server → the ``tls`` routes pick a backend by ``sniHosts``; the client sees
  the backend's own certificate.

Every "port" is a free port on 127.0.0.1, since Envoy binds it. The HTTP routes come from the
reference's ``bookinfo-rule`` VirtualService (cookie ``user=dev-123`` → ``reviews.qa:7777``).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from istio_support import (
    BOOKINFO_RULE_HTTP,
    PortReservation,
    Stack,
    TlsNameServer,
    backend,
    gateway,
    http_request,
    listener_name,
    run_stack,
    server,
    tls_http1_get,
    virtual_service,
    write_manifests,
)

from meshxds.testing.certs import CertificateAuthority, issue, make_ca, tls_secret_manifest, write_pem_files
from meshxds.testing.h2tls import H2TlsConnection
from meshxds.testing.ports import wait_until
from meshxds.testing.upstreams import Http1OnlyServer, curl

GW_NS = "some-config-namespace"
PROXY_NS = "istio-system"
DEV_COOKIE = "user=dev-123; theme=dark"  # the regex wants the name right after ";" or at the start


@dataclass
class Ports:
    http: int
    https_files: int
    https_sds: int
    mongo: int
    passthrough: int


@dataclass
class Reference:
    stack: Stack
    ports: Ports
    ca: CertificateAuthority
    cert_files: tuple[Path, Path]
    reviews_prod: Http1OnlyServer
    reviews_qa: Http1OnlyServer
    mongo: Http1OnlyServer

    def connect(self, port: int, sni: str) -> H2TlsConnection:
        return H2TlsConnection("127.0.0.1", port, server_name=sni, ca_pem=self.ca.cert_pem)


def manifests(
    ports: Ports,
    cert_files: tuple[Path, Path],
    sds_cert: Any,
    upstreams: dict[str, int],
) -> list[dict[str, Any]]:
    bookinfo_hosts = ["uk.bookinfo.com", "eu.bookinfo.com"]
    return [
        gateway(
            "my-gateway",
            GW_NS,
            [
                server(ports.http, "HTTP", bookinfo_hosts, name="http", tls={"httpsRedirect": True}),
                server(
                    ports.https_files,
                    "HTTPS",
                    bookinfo_hosts,
                    name="https-443",
                    tls={
                        "mode": "SIMPLE",
                        "serverCertificate": str(cert_files[0]),
                        "privateKey": str(cert_files[1]),
                    },
                ),
                server(
                    ports.https_sds,
                    "HTTPS",
                    ["bookinfo-namespace/*.bookinfo.com"],
                    name="https-9443",
                    tls={"mode": "SIMPLE", "credentialName": "bookinfo-secret"},
                ),
                server(ports.mongo, "MONGO", ["*"], name="mongo"),
                server(ports.passthrough, "TLS", ["*.example.com"], name="tls", tls={"mode": "PASSTHROUGH"}),
            ],
        ),
        # In the gateway proxy's namespace, as Istio requires for credentialName.
        tls_secret_manifest("bookinfo-secret", PROXY_NS, sds_cert),
        virtual_service(
            "bookinfo-rule",
            "bookinfo-namespace",
            {
                "hosts": ["reviews.prod.svc.cluster.local", *bookinfo_hosts],
                "gateways": [f"{GW_NS}/my-gateway", "mesh"],
                "http": BOOKINFO_RULE_HTTP,
            },
        ),
        virtual_service(
            "bookinfo-mongo",
            "bookinfo-namespace",
            {
                "hosts": ["mongosvr.prod.svc.cluster.local"],
                "gateways": [f"{GW_NS}/my-gateway"],
                # The reference matches port 27017; here the server's own (free) port.
                "tcp": [
                    {
                        "match": [{"port": ports.mongo}],
                        "route": [
                            {
                                "destination": {
                                    "host": "mongo.prod.svc.cluster.local",
                                    "port": {"number": 5555},
                                }
                            }
                        ],
                    }
                ],
            },
        ),
        # Bound to my-gateway, but from a namespace the 9443 server's hosts do not admit.
        virtual_service(
            "intruder",
            "other-namespace",
            {
                "hosts": ["de.bookinfo.com"],
                "gateways": [f"{GW_NS}/my-gateway"],
                "http": [{"route": [{"destination": {"host": "reviews.prod.svc.cluster.local"}}]}],
            },
        ),
        virtual_service(
            "sni-rule",
            "default",
            {
                "hosts": ["*.example.com"],
                "gateways": [f"{GW_NS}/my-gateway"],
                "tls": [
                    {
                        "match": [{"port": ports.passthrough, "sniHosts": [f"{name}.example.com"]}],
                        "route": [{"destination": {"host": f"{name}.default.svc.cluster.local"}}],
                    }
                    for name in ("alpha", "beta")
                ],
            },
        ),
        *backend("reviews", "prod", port=9080, upstream_port=upstreams["reviews-prod"]),
        *backend("reviews", "qa", port=7777, upstream_port=upstreams["reviews-qa"]),
        *backend("mongo", "prod", port=5555, upstream_port=upstreams["mongo"], port_name="mongo"),
        *backend("alpha", "default", port=443, upstream_port=upstreams["alpha"], port_name="tls"),
        *backend("beta", "default", port=443, upstream_port=upstreams["beta"], port_name="tls"),
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    tmp = tmp_path_factory.mktemp("istio-reference")
    config_dir = tmp / "manifests"
    config_dir.mkdir()
    ca = make_ca()
    cert_files = write_pem_files(
        tmp / "certs", "servercert", issue(ca, ["uk.bookinfo.com", "eu.bookinfo.com"])
    )
    reserved = PortReservation(5)
    ports = Ports(*reserved.ports)
    with (
        reserved,
        Http1OnlyServer(name="reviews-prod") as prod,
        Http1OnlyServer(name="reviews-qa") as qa,
        Http1OnlyServer(name="mongo") as mongo,
        TlsNameServer("alpha", issue(ca, ["alpha.example.com"])) as alpha,
        TlsNameServer("beta", issue(ca, ["beta.example.com"])) as beta,
    ):
        upstreams = {
            "reviews-prod": prod.port,
            "reviews-qa": qa.port,
            "mongo": mongo.port,
            "alpha": alpha.port,
            "beta": beta.port,
        }
        write_manifests(config_dir, manifests(ports, cert_files, issue(ca, ["*.bookinfo.com"]), upstreams))
        with run_stack(
            tmp,
            config_dir,
            namespace=PROXY_NS,
            listener_ports=(ports.http, ports.https_files, ports.https_sds, ports.mongo, ports.passthrough),
            reserved=reserved,
        ) as stack:
            yield Reference(
                stack=stack,
                ports=ports,
                ca=ca,
                cert_files=cert_files,
                reviews_prod=prod,
                reviews_qa=qa,
                mongo=mongo,
            )


def _listener(ref: Reference, port: int) -> dict[str, Any]:
    dump = ref.stack.envoy.config_dump()
    for config in dump["configs"]:
        if config["@type"].endswith("ListenersConfigDump"):
            for item in config.get("dynamic_listeners", ()):
                if item["name"] == listener_name(port):
                    listener: dict[str, Any] = item["active_state"]["listener"]
                    return listener
    raise AssertionError(f"listener {listener_name(port)} not active in Envoy")


def _tls_contexts(listener: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for chain in listener.get("filter_chains", ()):
        socket = chain.get("transport_socket")
        if socket is not None:
            out.append(socket["typed_config"]["common_tls_context"])
    return out


# -- port 80: httpsRedirect ------------------------------------------------------------------------


def test_http_server_with_https_redirect_answers_301(reference: Reference) -> None:
    before = reference.reviews_prod.requests + reference.reviews_qa.requests
    response = http_request(reference.ports.http, "uk.bookinfo.com", "/reviews/1?x=y")
    assert response.status == 301, response
    assert response.headers["location"] == "https://uk.bookinfo.com/reviews/1?x=y"
    assert reference.reviews_prod.requests + reference.reviews_qa.requests == before  # nothing proxied


def test_https_redirect_server_does_not_serve_other_hosts(reference: Reference) -> None:
    assert http_request(reference.ports.http, "other.example.org", "/reviews/1").status == 404


# -- port 443: SIMPLE with certificate files ----------------------------------------------------------


def test_simple_tls_from_files_negotiates_h2_and_routes(reference: Reference) -> None:
    with reference.connect(reference.ports.https_files, "uk.bookinfo.com") as conn:
        assert conn.negotiated_alpn == "h2"
        assert conn.peer_certificate_sans() == ["uk.bookinfo.com", "eu.bookinfo.com"]
        before = reference.reviews_qa.requests
        response = conn.request(
            path="/reviews/1", authority="uk.bookinfo.com", headers={"cookie": DEV_COOKIE}
        )
        assert response.status == 200, response.text
        assert response.headers.get("x-upstream-name") == "reviews-qa"
        assert reference.reviews_qa.requests == before + 1
        # Both hosts of the server share the connection (one certificate, one filter chain).
        other = conn.request(path="/reviews/2", authority="eu.bookinfo.com", headers={"cookie": DEV_COOKIE})
        assert other.status == 200
        assert other.headers.get("x-upstream-name") == "reviews-qa"


def test_simple_tls_certificate_comes_from_the_files(reference: Reference) -> None:
    contexts = _tls_contexts(_listener(reference, reference.ports.https_files))
    assert contexts, "no TLS filter chain"
    certificates = contexts[0]["tls_certificates"]
    assert certificates[0]["certificate_chain"]["filename"] == str(reference.cert_files[0])
    assert "private_key" in certificates[0]  # Envoy's config dump redacts it
    assert contexts[0]["alpn_protocols"] == ["h2", "http/1.1"]


def test_simple_tls_http1_client_gets_http1(reference: Reference) -> None:
    sans, status, body = tls_http1_get(
        reference.ports.https_files, server_name="eu.bookinfo.com", ca_pem=reference.ca.cert_pem
    )
    assert "eu.bookinfo.com" in sans
    # "/" matches no rule of bookinfo-rule (both need the /reviews/ prefix).
    assert status == 404, body


# -- port 9443: credentialName over SDS ------------------------------------------------------------------


def test_credential_name_certificate_is_served_over_sds(reference: Reference) -> None:
    def handshake() -> list[str]:
        with reference.connect(reference.ports.https_sds, "uk.bookinfo.com") as conn:
            return conn.peer_certificate_sans()

    assert wait_until(handshake, timeout=10, what="SDS certificate served") == ["*.bookinfo.com"]
    contexts = _tls_contexts(_listener(reference, reference.ports.https_sds))
    assert contexts
    for context in contexts:
        assert "tls_certificates" not in context, "the certificate must not be inline"
        sds = context["tls_certificate_sds_secret_configs"]
        assert sds and "ads" in sds[0]["sds_config"], sds
    dump = reference.stack.envoy.config_dump()
    secrets = next(c for c in dump["configs"] if c["@type"].endswith("SecretsConfigDump"))
    active = [s["name"] for s in secrets.get("dynamic_active_secrets", ())]
    assert sds[0]["name"] in active


def test_credential_name_server_routes_the_namespace_restricted_hosts(reference: Reference) -> None:
    with reference.connect(reference.ports.https_sds, "uk.bookinfo.com") as conn:
        response = conn.request(
            path="/reviews/7", authority="uk.bookinfo.com", headers={"cookie": DEV_COOKIE}
        )
        assert response.status == 200, response.text
        assert response.headers.get("x-upstream-name") == "reviews-qa"


def test_server_host_namespace_prefix_rejects_other_namespaces(reference: Reference) -> None:
    """``bookinfo-namespace/*.bookinfo.com``: the VirtualService of other-namespace for
    de.bookinfo.com is not bound to the 9443 server."""
    before = reference.reviews_prod.requests + reference.reviews_qa.requests
    with reference.connect(reference.ports.https_sds, "de.bookinfo.com") as conn:
        response = conn.request(path="/reviews/1", authority="de.bookinfo.com")
    assert response.status != 200, response.text
    assert reference.reviews_prod.requests + reference.reviews_qa.requests == before


def test_credential_name_server_host_without_virtual_service_is_404(reference: Reference) -> None:
    with reference.connect(reference.ports.https_sds, "uk.bookinfo.com") as conn:
        assert conn.request(path="/reviews/7", authority="uk.bookinfo.com").status == 200
        # Covered by the server's *.bookinfo.com, but no VirtualService of bookinfo-namespace serves it.
        response = conn.request(path="/reviews/7", authority="de.bookinfo.com")
        assert response.status == 404, response.text


# -- port 2379: MONGO/TCP ---------------------------------------------------------------------------------


def test_mongo_server_proxies_tcp_to_the_virtual_service_port(reference: Reference) -> None:
    before = reference.mongo.requests
    result = curl(f"http://127.0.0.1:{reference.ports.mongo}/over-tcp", http1=True)
    assert result.status == 200, result
    seen = result.json()
    assert seen["upstream"] == "mongo"
    assert seen["path"] == "/over-tcp"
    assert reference.mongo.requests == before + 1


# -- TLS PASSTHROUGH by sniHosts --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_passthrough_routes_by_sni_to_the_backend_certificate(reference: Reference, name: str) -> None:
    sans, status, body = tls_http1_get(
        reference.ports.passthrough, server_name=f"{name}.example.com", ca_pem=reference.ca.cert_pem
    )
    assert sans == [f"{name}.example.com"]  # the backend's own certificate: Envoy holds none here
    assert (status, body) == (200, f"{name}\n")


def test_passthrough_unknown_sni_is_refused(reference: Reference) -> None:
    with pytest.raises((ssl.SSLError, OSError)):
        tls_http1_get(
            reference.ports.passthrough,
            server_name="gamma.example.com",
            ca_pem=reference.ca.cert_pem,
            timeout=3,
        )
