"""BackendTLSPolicy ``subjectAltNames`` through real Envoy, SotW and Delta (conformance's
BackendTLSPolicySANValidation): one TLS grpcio backend whose certificate carries the DNS name
``abc.example.com`` and the URI ``spiffe://abc.example.com/test-identity``, reached through five
Services, each with its own policy. The SNI is ``validation.hostname`` every time; when SANs are
given, the certificate must carry one of them (the hostname no longer verifies): a DNS SAN, a URI
SAN, or any one of several succeeds; a SAN the certificate lacks fails the handshake (503 from
Envoy, UNAVAILABLE to the client), although the hostname alone would have verified."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from meshxds.testing.certs import CertificateAuthority, issue, make_ca
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, service_docs, to_yaml
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import GrpcEchoServer, echo_call

LABELS = {"gateway.networking.k8s.io/gateway-name": "san"}
HOST = "abc.example.com"
SPIFFE = "spiffe://abc.example.com/test-identity"

CASES: dict[str, tuple[list[dict[str, str]], bool]] = {
    "dns": ([{"type": "Hostname", "hostname": HOST}], True),
    "dns-mismatch": ([{"type": "Hostname", "hostname": "dce.example.com"}], False),
    "uri": ([{"type": "URI", "uri": SPIFFE}], True),
    "uri-mismatch": ([{"type": "URI", "uri": "spiffe://dce.example.com/test-identity"}], False),
    "multiple": (
        [{"type": "Hostname", "hostname": "dce.example.com"}, {"type": "URI", "uri": SPIFFE}],
        True,
    ),
    "multiple-mismatch": (
        [
            {"type": "Hostname", "hostname": "dce.example.com"},
            {"type": "URI", "uri": "spiffe://dce.example.com/test-identity"},
        ],
        False,
    ),
}
"""Service name suffix → (the policy's subjectAltNames, whether the call must succeed)."""


def manifests(listener_port: int, upstream_port: int, ca_pem: bytes) -> str:
    docs = gateway_api_docs(
        [gateway_listener(listener_port, name="h2c", allowed_from="Same")], name="san", namespace="default"
    )
    ca = ca_pem.decode()
    rules = []
    for case, (sans, _) in CASES.items():
        service = f"echo-{case}"
        rules.append(
            {
                "matches": [{"headers": [{"name": "x-case", "value": case}]}],
                "backendRefs": [{"name": service, "port": 9000}],
            }
        )
        docs += [
            *service_docs(service, upstream_port=upstream_port, port=9000, port_name="grpc"),
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "BackendTLSPolicy",
                "metadata": {"name": f"san-{case}", "namespace": "default"},
                "spec": {
                    "targetRefs": [{"group": "", "kind": "Service", "name": service, "sectionName": "grpc"}],
                    "validation": {
                        "caCertificateRefs": [{"group": "", "kind": "ConfigMap", "name": "backend-ca"}],
                        "hostname": HOST,
                        "subjectAltNames": sans,
                    },
                },
            },
        ]
    docs += [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "san"}], "hostnames": ["grpc.example.com"], "rules": rules},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "backend-ca", "namespace": "default"},
            "data": {"ca.crt": ca},
        },
    ]
    return to_yaml(docs)


@pytest.fixture(scope="module")
def backend_ca() -> CertificateAuthority:
    return make_ca("backend CA")


@pytest.fixture(scope="module")
def tls_upstream(backend_ca: CertificateAuthority) -> Iterator[GrpcEchoServer]:
    cert = issue(backend_ca, [HOST, SPIFFE])
    with GrpcEchoServer(name="grpc-san", tls=(cert.chain_pem, cert.key_pem)) as server:
        yield server


@pytest.fixture(scope="module", params=["sotw", "delta"])
def gateway_port(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tls_upstream: GrpcEchoServer,
    backend_ca: CertificateAuthority,
) -> Iterator[int]:
    work = tmp_path_factory.mktemp(f"san-{request.param}")
    manifest_dir = work / "manifests"
    manifest_dir.mkdir()
    port = free_port()
    (manifest_dir / "san.yaml").write_text(manifests(port, tls_upstream.port, backend_ca.cert_pem))
    with local_gateway(
        manifest_dir,
        node_id="san-gw",
        namespace="default",
        labels=LABELS,
        delta=request.param == "delta",
        work_dir=work,
    ):
        wait_until(lambda: _outcome(port, "dns") == "ok" or None, timeout=20, what="the gateway serves")
        yield port


def _outcome(port: int, case: str) -> str:
    try:
        reply = echo_call(
            f"127.0.0.1:{port}", case, authority="grpc.example.com", metadata=[("x-case", case)], timeout=5
        )
    except grpc.RpcError as err:
        return str(err.code().name)
    return "ok" if reply.message == case else f"wrong reply {reply.message!r}"


@pytest.mark.parametrize("case", list(CASES))
def test_the_certificate_must_carry_one_of_the_policys_subject_alt_names(
    gateway_port: int, tls_upstream: GrpcEchoServer, case: str
) -> None:
    before = tls_upstream.requests
    outcome = _outcome(gateway_port, case)
    if CASES[case][1]:
        assert outcome == "ok", case
        assert tls_upstream.requests == before + 1
    else:
        # The handshake failed, so the backend never saw the call.
        assert outcome == "UNAVAILABLE", case
        assert tls_upstream.requests == before
