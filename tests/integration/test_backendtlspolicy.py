"""BackendTLSPolicy through real Envoy: a GRPCRoute to a grpcio backend that serves TLS only (and,
as gRPC servers do, refuses a client that does not offer ALPN ``h2``). With the backend's CA the
call succeeds over TLS; with another authority's CA the handshake fails and Envoy answers 503
(UNAVAILABLE); with a CA reference that does not resolve, the policy says NoValidCACertificate
and the call still fails rather than go in plaintext."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshxds.testing._generated.echo_pb2 import EchoRequest
from meshxds.testing._generated.echo_pb2_grpc import EchoStub
from meshxds.testing.certs import CertificateAuthority, issue, make_ca
from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, service_docs, to_yaml
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.server import MeshxdsProcess
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import GrpcEchoServer, echo_call

LABELS = {"gateway.networking.k8s.io/gateway-name": "grpc"}
CLUSTER = "outbound|9000||echo.default.svc.cluster.local"
HOST = "echo.backend.test"


def manifests(listener_port: int, upstream_port: int, *, ca_pem: bytes, ca_ref: str = "echo-ca") -> str:
    gateway = gateway_api_docs(
        [gateway_listener(listener_port, name="h2c", allowed_from="Same")], name="grpc", namespace="default"
    )
    ca = "\n".join("    " + line for line in ca_pem.decode().strip().splitlines())
    return (
        to_yaml(
            [
                *gateway,
                *service_docs("echo", upstream_port=upstream_port, port=9000, port_name="grpc"),
            ]
        )
        + f"""\
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: default}}
spec:
  parentRefs: [{{name: grpc}}]
  hostnames: [grpc.example.com]
  rules:
    - backendRefs: [{{name: echo, port: 9000}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {{name: echo-tls, namespace: default}}
spec:
  targetRefs: [{{group: "", kind: Service, name: echo, sectionName: grpc}}]
  validation:
    caCertificateRefs: [{{group: "", kind: ConfigMap, name: {ca_ref}}}]
    hostname: {HOST}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: echo-ca, namespace: default}}
data:
  ca.crt: |
{ca}
"""
    )


@pytest.fixture(scope="module")
def backend_ca() -> CertificateAuthority:
    return make_ca("backend CA")


@pytest.fixture(scope="module")
def tls_upstream(backend_ca: CertificateAuthority) -> Iterator[GrpcEchoServer]:
    cert = issue(backend_ca, [HOST])
    with GrpcEchoServer(name="grpc-tls", tls=(cert.chain_pem, cert.key_pem)) as server:
        yield server


@pytest.fixture(params=["sotw", "delta"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    manifest_dir: Path,
    tls_upstream: GrpcEchoServer,
    backend_ca: CertificateAuthority,
) -> Iterator[tuple[int, Path, MeshxdsProcess, EnvoyProcess]]:
    port = free_port()
    (manifest_dir / "grpc.yaml").write_text(manifests(port, tls_upstream.port, ca_pem=backend_ca.cert_pem))
    with local_gateway(
        manifest_dir,
        node_id="grpc-gw",
        namespace="default",
        labels=LABELS,
        delta=request.param == "delta",
        work_dir=tmp_path,
    ) as (server, envoy):
        yield port, manifest_dir, server, envoy


def call(port: int) -> Any:
    return echo_call(f"127.0.0.1:{port}", "ping", authority="grpc.example.com")


def unavailable(port: int) -> bool:
    try:
        call(port)
    except grpc.RpcError as err:
        return err.code() == grpc.StatusCode.UNAVAILABLE
    return False


def policy_conditions(server: MeshxdsProcess) -> dict[str, tuple[str, str]]:
    config = json.loads(server.get("/debug/config"))
    (status,) = [s for s in config["status"] if s["kind"] == "BackendTLSPolicy"]
    (ancestor,) = status["status"]["ancestors"]
    return {c["type"]: (c["status"], c["reason"]) for c in ancestor["conditions"]}


def test_the_backend_refuses_tls_without_alpn_h2(
    tls_upstream: GrpcEchoServer, backend_ca: CertificateAuthority
) -> None:
    """The test backend can fail: a client offering only http/1.1 is turned away; h2 gets in."""
    context = ssl.create_default_context(cadata=backend_ca.cert_pem.decode())
    refused = tls_upstream.alpn_refused
    context.set_alpn_protocols(["http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", tls_upstream.port)) as raw,
        context.wrap_socket(raw, server_hostname=HOST) as tls,
    ):
        assert tls.recv(1) == b""  # closed
    assert tls_upstream.alpn_refused == refused + 1
    credentials = grpc.ssl_channel_credentials(root_certificates=backend_ca.cert_pem)
    options = [("grpc.ssl_target_name_override", HOST)]
    with grpc.secure_channel(f"127.0.0.1:{tls_upstream.port}", credentials, options=options) as channel:
        assert EchoStub(channel).Echo(EchoRequest(message="direct"), timeout=5).message == "direct"


def test_the_backends_ca_verifies_it_over_tls_with_alpn_h2(
    stack: tuple[int, Path, MeshxdsProcess, EnvoyProcess], tls_upstream: GrpcEchoServer
) -> None:
    port, _, server, envoy = stack
    before = tls_upstream.tls_connections
    reply = call(port)
    assert (reply.message, reply.upstream) == ("ping", "grpc-tls")
    assert tls_upstream.tls_connections > before  # over TLS, with ALPN h2 (the backend insists)
    assert envoy.stat(f"cluster.{CLUSTER}.ssl.handshake") >= 1
    assert envoy.stat(f"cluster.{CLUSTER}.upstream_cx_http2_total") >= 1
    assert policy_conditions(server) == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }


def test_another_authoritys_ca_fails_the_handshake_503(
    stack: tuple[int, Path, MeshxdsProcess, EnvoyProcess], tls_upstream: GrpcEchoServer
) -> None:
    port, config_dir, _, envoy = stack
    assert call(port).message == "ping"
    other = make_ca("another authority")
    (config_dir / "grpc.yaml").write_text(manifests(port, tls_upstream.port, ca_pem=other.cert_pem))
    wait_until(lambda: unavailable(port), timeout=20, what="calls failing with the other CA")
    assert envoy.stat(f"cluster.{CLUSTER}.ssl.fail_verify_error") >= 1


def test_an_unresolved_ca_ref_fails_closed_and_the_policy_says_why(
    stack: tuple[int, Path, MeshxdsProcess, EnvoyProcess],
    tls_upstream: GrpcEchoServer,
    backend_ca: CertificateAuthority,
) -> None:
    port, config_dir, server, envoy = stack
    assert call(port).message == "ping"
    text = manifests(port, tls_upstream.port, ca_pem=backend_ca.cert_pem, ca_ref="missing-ca")
    (config_dir / "grpc.yaml").write_text(text)
    wait_until(lambda: unavailable(port), timeout=20, what="calls failing without a usable CA")
    assert policy_conditions(server) == {
        "Accepted": ("False", "NoValidCACertificate"),
        "ResolvedRefs": ("False", "InvalidCACertificateRef"),
    }
    failed = envoy.stat(f"cluster.{CLUSTER}.ssl.fail_verify_error")
    assert failed + envoy.stat(f"cluster.{CLUSTER}.ssl.fail_verify_cert_hash") >= 1
