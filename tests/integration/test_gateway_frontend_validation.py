"""Gateway ``spec.tls.frontend`` (GEP-91) through real Envoy, SotW and Delta: a client certificate
from the CA in the named ConfigMap is accepted, none or one of another CA refused
(``AllowValidOnly``); a per-port override with ``AllowInsecureFallback`` lets both through; a
listener whose CA reference resolves to nothing is not served at all (fail closed)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import yaml

from meshxds.testing.certs import (
    CertificateAuthority,
    ClientCertificate,
    issue,
    issue_client,
    make_ca,
    tls_secret_manifest,
)
from meshxds.testing.h2tls import H2TlsConnection, H2TlsError
from meshxds.testing.manifests import gateway_api_docs
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import Http1OnlyServer

HOST = "mtls.example.com"
LABELS = {"gateway.networking.k8s.io/gateway-name": "https"}
REFUSED = (ssl.SSLError, OSError, H2TlsError)


def _listener(name: str, port: int) -> dict[str, object]:
    return {
        "name": name,
        "port": port,
        "protocol": "HTTPS",
        "hostname": HOST,
        "tls": {"certificateRefs": [{"name": "server-cert"}]},
        "allowedRoutes": {"namespaces": {"from": "All"}},
    }


@dataclass
class Frontend:
    strict: int
    fallback: int
    broken: int
    ca: CertificateAuthority
    client: ClientCertificate
    stranger: ClientCertificate

    def get(self, port: int, client: ClientCertificate | None) -> int:
        """One request on a fresh connection; its status, or an exception when TLS refused it
        (with TLS 1.3 a refused certificate shows when the client reads)."""
        cert = (client.chain_pem, client.key_pem) if client is not None else None
        with H2TlsConnection(
            "127.0.0.1", port, server_name=HOST, ca_pem=self.ca.cert_pem, client_cert=cert
        ) as conn:
            return conn.request(authority=HOST).status


@pytest.fixture(scope="module", params=["sotw", "delta"])
def frontend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Frontend]:
    tmp = tmp_path_factory.mktemp(f"frontend-{request.param}")
    manifests = tmp / "manifests"
    manifests.mkdir()
    ca, other_ca = make_ca("server and client CA"), make_ca("a stranger's CA")
    strict, fallback, broken = free_port(), free_port(), free_port()
    with Http1OnlyServer(name="app") as app:
        docs = gateway_api_docs(
            [_listener("strict", strict), _listener("fallback", fallback), _listener("broken", broken)],
            name="https",
        )
        gateway_doc = docs[1]
        gateway_doc["spec"]["tls"] = {
            "frontend": {
                "default": {
                    "validation": {"caCertificateRefs": [{"kind": "ConfigMap", "name": "client-ca"}]}
                },
                "perPort": [
                    {
                        "port": fallback,
                        "tls": {
                            "validation": {
                                "caCertificateRefs": [{"kind": "ConfigMap", "name": "client-ca"}],
                                "mode": "AllowInsecureFallback",
                            }
                        },
                    },
                    {
                        "port": broken,
                        "tls": {
                            "validation": {"caCertificateRefs": [{"kind": "ConfigMap", "name": "missing"}]}
                        },
                    },
                ],
            }
        }
        docs += [
            tls_secret_manifest("server-cert", "gateway-system", issue(ca, [HOST])),
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "client-ca", "namespace": "gateway-system"},
                "data": {"ca.crt": ca.cert_pem.decode()},
            },
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "app", "namespace": "default"},
                "spec": {"ports": [{"port": 80, "name": "web"}]},
            },
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "app-1",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "app"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "web", "port": app.port}],
                "endpoints": [{"addresses": ["127.0.0.1"]}],
            },
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "app", "namespace": "default"},
                "spec": {
                    "parentRefs": [{"name": "https", "namespace": "gateway-system"}],
                    "hostnames": [HOST],
                    "rules": [{"backendRefs": [{"name": "app", "port": 80}]}],
                },
            },
        ]
        (manifests / "all.yaml").write_text(yaml.safe_dump_all(docs))
        with local_gateway(
            manifests,
            node_id="frontend-gw",
            namespace="gateway-system",
            labels=LABELS,
            delta=request.param == "delta",
            work_dir=tmp,
            # Plaintext xDS on loopback: the gateway's keys need the explicit flag (README: Security).
            server_args=("--allow-insecure-secrets",),
        ):
            state = Frontend(
                strict=strict,
                fallback=fallback,
                broken=broken,
                ca=ca,
                client=issue_client(ca, "trusted-client"),
                stranger=issue_client(other_ca, "stranger"),
            )
            wait_until(lambda: state.get(fallback, None) == 200, timeout=15, what="TLS listeners serving")
            yield state


def test_a_client_certificate_of_the_ca_is_accepted(frontend: Frontend) -> None:
    assert frontend.get(frontend.strict, frontend.client) == 200


def test_no_certificate_or_one_of_another_ca_is_refused(frontend: Frontend) -> None:
    for client in (None, frontend.stranger):
        with pytest.raises(REFUSED):
            frontend.get(frontend.strict, client)


def test_insecure_fallback_lets_every_client_through(frontend: Frontend) -> None:
    for client in (frontend.client, None, frontend.stranger):
        assert frontend.get(frontend.fallback, client) == 200


def test_a_listener_without_a_usable_ca_is_not_served(frontend: Frontend) -> None:
    for client in (frontend.client, None):
        with pytest.raises(REFUSED):
            frontend.get(frontend.broken, client)
