"""Gateway server TLS modes beyond SIMPLE, against real Envoy:

- MUTUAL with ``credentialName`` whose Secret carries ``ca.crt``: a client certificate from that
  CA is accepted, none (or one from another CA) is rejected;
- MUTUAL with the CA in a separate ``<credentialName>-cacert`` Secret;
- ``subjectAltNames`` narrows the accepted client certificates;
- OPTIONAL_MUTUAL accepts clients with and without a certificate;
- ``minProtocolVersion: TLSV1_3`` refuses a TLS 1.2 client;
- ISTIO_MUTUAL without a mesh CA: ``meshxds validate`` exits 1 naming the server.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from istio_support import (
    PortReservation,
    Stack,
    backend,
    gateway,
    run_stack,
    server,
    virtual_service,
    write_manifests,
)

from meshxds.testing.certs import (
    CertificateAuthority,
    ClientCertificate,
    issue,
    issue_client,
    make_ca,
    opaque_secret_manifest,
    tls_secret_manifest,
)
from meshxds.testing.h2tls import H2TlsConnection, H2TlsError
from meshxds.testing.ports import wait_until
from meshxds.testing.upstreams import Http1OnlyServer

PROXY_NS = "istio-system"
HOST = "secure.example.com"
REJECTED = (ssl.SSLError, OSError, H2TlsError)


@dataclass
class Ports:
    mutual: int
    mutual_cacert: int
    san: int
    optional: int
    tls13: int


@dataclass
class Secure:
    stack: Stack
    ports: Ports
    ca: CertificateAuthority
    client: ClientCertificate

    def get(self, port: int, client: ClientCertificate | None = None) -> int:
        """One request on a fresh connection; the status, or an exception if TLS refused it
        (with TLS 1.3 the client learns of a refused certificate only when it reads)."""
        cert = (client.chain_pem, client.key_pem) if client is not None else None
        with H2TlsConnection(
            "127.0.0.1", port, server_name=HOST, ca_pem=self.ca.cert_pem, client_cert=cert
        ) as conn:
            return conn.request(authority=HOST).status


def manifests(ports: Ports, ca: CertificateAuthority, upstream_port: int) -> list[dict[str, Any]]:
    cert = issue(ca, [HOST])

    def https(port: int, mode: str, credential: str, **extra: Any) -> dict[str, Any]:
        return server(
            port,
            "HTTPS",
            [HOST],
            name=f"https-{port}",
            tls={"mode": mode, "credentialName": credential, **extra},
        )

    return [
        gateway(
            "secure",
            PROXY_NS,
            [
                https(ports.mutual, "MUTUAL", "with-ca"),
                https(ports.mutual_cacert, "MUTUAL", "split"),
                https(ports.san, "MUTUAL", "with-ca", subjectAltNames=["trusted.example.com"]),
                https(ports.optional, "OPTIONAL_MUTUAL", "with-ca"),
                https(ports.tls13, "SIMPLE", "with-ca", minProtocolVersion="TLSV1_3"),
            ],
        ),
        tls_secret_manifest("with-ca", PROXY_NS, cert, ca=ca),
        tls_secret_manifest("split", PROXY_NS, cert),
        opaque_secret_manifest("split-cacert", PROXY_NS, {"ca.crt": ca.cert_pem}),
        *backend("app", "default", port=80, upstream_port=upstream_port),
        virtual_service(
            "app",
            "default",
            {
                "hosts": [HOST],
                "gateways": [f"{PROXY_NS}/secure"],
                "http": [{"route": [{"destination": {"host": "app"}}]}],
            },
        ),
    ]


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    tmp = tmp_path_factory.mktemp("istio-tls-modes")
    config_dir = tmp / "manifests"
    config_dir.mkdir()
    ca = make_ca()
    reserved = PortReservation(5)
    ports = Ports(*reserved.ports)
    with reserved, Http1OnlyServer(name="app") as app:
        write_manifests(config_dir, manifests(ports, ca, app.port))
        with run_stack(
            tmp, config_dir, namespace=PROXY_NS, listener_ports=vars(ports).values(), reserved=reserved
        ) as stack:
            state = Secure(stack=stack, ports=ports, ca=ca, client=issue_client(ca, "trusted.example.com"))
            wait_until(lambda: state.get(ports.optional) == 200, timeout=15, what="TLS listeners serving")
            yield state


def test_mutual_accepts_a_client_certificate_from_the_ca(secure: Secure) -> None:
    assert secure.get(secure.ports.mutual, secure.client) == 200


def test_mutual_rejects_a_client_without_certificate(secure: Secure) -> None:
    with pytest.raises(REJECTED):
        secure.get(secure.ports.mutual)


def test_mutual_rejects_a_certificate_from_another_ca(secure: Secure) -> None:
    stranger = issue_client(make_ca("another CA"), "trusted.example.com")
    with pytest.raises(REJECTED):
        secure.get(secure.ports.mutual, stranger)


def test_mutual_with_the_ca_in_a_cacert_secret(secure: Secure) -> None:
    assert secure.get(secure.ports.mutual_cacert, secure.client) == 200
    with pytest.raises(REJECTED):
        secure.get(secure.ports.mutual_cacert)


def test_subject_alt_names_narrow_the_accepted_clients(secure: Secure) -> None:
    assert secure.get(secure.ports.san, secure.client) == 200
    with pytest.raises(REJECTED):
        secure.get(secure.ports.san, issue_client(secure.ca, "intruder.example.com"))


def test_optional_mutual_accepts_both(secure: Secure) -> None:
    assert secure.get(secure.ports.optional) == 200
    assert secure.get(secure.ports.optional, secure.client) == 200


def test_min_protocol_version_refuses_older_clients(secure: Secure) -> None:
    assert secure.get(secure.ports.tls13) == 200  # Python negotiates TLS 1.3 by default
    context = ssl.create_default_context(cadata=secure.ca.cert_pem.decode())
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with (
        socket.create_connection(("127.0.0.1", secure.ports.tls13), timeout=5) as raw,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(raw, server_hostname=HOST).close()


# -- ISTIO_MUTUAL ----------------------------------------------------------------------------------


def test_istio_mutual_without_mesh_ca_fails_validation(tmp_path: Path) -> None:
    docs = [
        gateway(
            "mesh-gw",
            "istio-system",
            [server(15443, "HTTPS", ["*.global"], name="mtls", tls={"mode": "ISTIO_MUTUAL"})],
        ),
    ]
    (tmp_path / "gw.yaml").write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        [sys.executable, "-m", "meshxds", "validate", "--config-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result
    output = result.stdout + result.stderr
    assert "istio-system/mesh-gw" in output, output
    assert "spec.servers[0]" in output, output
    assert "ISTIO_MUTUAL" in output, output


# -- credentialName rotation over SDS ----------------------------------------------------------------


def test_credential_rotation_reaches_envoy_over_sds_without_touching_the_listener(
    tmp_path: Path, manifest_dir: Path, harness_processes: list[Any]
) -> None:
    ca = make_ca()

    def docs(port: int, upstream_port: int, hosts: list[str]) -> list[dict[str, Any]]:
        return [
            gateway(
                "rotating",
                PROXY_NS,
                [server(port, "HTTPS", [HOST], tls={"mode": "SIMPLE", "credentialName": "rotating-cert"})],
            ),
            tls_secret_manifest("rotating-cert", PROXY_NS, issue(ca, hosts)),
            *backend("app", "default", port=80, upstream_port=upstream_port),
            virtual_service(
                "app",
                "default",
                {
                    "hosts": [HOST],
                    "gateways": [f"{PROXY_NS}/rotating"],
                    "http": [{"route": [{"destination": {"host": "app"}}]}],
                },
            ),
        ]

    def sans(port: int) -> list[str]:
        with H2TlsConnection("127.0.0.1", port, server_name=HOST, ca_pem=ca.cert_pem) as conn:
            assert conn.request(authority=HOST).status == 200
            return conn.peer_certificate_sans()

    with PortReservation(1) as reserved, Http1OnlyServer(name="app") as app:
        port = reserved.ports[0]
        write_manifests(manifest_dir, docs(port, app.port, [HOST]))
        with run_stack(
            tmp_path,
            manifest_dir,
            namespace=PROXY_NS,
            listener_ports=[port],
            reserved=reserved,
            processes=harness_processes,
        ) as stack:
            assert wait_until(lambda: sans(port), timeout=15, what="first certificate") == [HOST]
            modified = stack.envoy.stat("listener_manager.listener_modified")
            staged = write_manifests(
                tmp_path, docs(port, app.port, [HOST, "rotated.example.com"]), filename="next.yaml"
            )
            staged.replace(manifest_dir / "all.yaml")  # atomically, as a ConfigMap update does
            wait_until(
                lambda: "rotated.example.com" in sans(port), timeout=15, what="the rotated certificate served"
            )
            assert stack.envoy.stat("listener_manager.listener_modified") == modified
