"""BackendTLSPolicy: the model's CRD rules, which Service ports get which upstream TLS (sectionName,
precedence), the policy's conditions and ancestors, fail-closed on unusable CAs, and the Envoy
``UpstreamTlsContext`` it becomes (ALPN, SNI, SANs, the CA over SDS, the validation nothing passes)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from meshxds import ir
from meshxds.errors import ManifestErrors
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.testing.certs import make_ca
from meshxds.translators.backendtls import SYSTEM_CA_FILE
from meshxds.translators.gatewayapi import GatewayAPIResult, translate_gateway_api
from meshxds.xds.resources import build_cluster

GW = "gateway.networking.k8s.io/v1"
CLUSTER = "outbound|9000||echo.default.svc.cluster.local"


def policy(name: str = "echo-tls", **validation: Any) -> dict[str, Any]:
    return {
        "apiVersion": GW,
        "kind": "BackendTLSPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "targetRefs": [{"group": "", "kind": "Service", "name": "echo"}],
            "validation": {"hostname": "echo.example.com", **validation},
        },
    }


def base(ca_pem: str) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": GW,
            "kind": "GatewayClass",
            "metadata": {"name": "meshxds"},
            "spec": {"controllerName": "meshxds.io/gateway-controller"},
        },
        {
            "apiVersion": GW,
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
            "spec": {
                "gatewayClassName": "meshxds",
                "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {"ports": [{"name": "grpc", "port": 9000, "appProtocol": "grpc"}]},
        },
        {
            "apiVersion": GW,
            "kind": "GRPCRoute",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "rules": [{"backendRefs": [{"name": "echo", "port": 9000}]}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "echo-ca", "namespace": "default"},
            "data": {"ca.crt": ca_pem},
        },
    ]


@pytest.fixture(scope="module")
def ca_pem() -> str:
    return make_ca("backend-ca").cert_pem.decode()


def run(docs: list[dict[str, Any]]) -> GatewayAPIResult:
    return translate_gateway_api(
        parse_documents([SourcedDocument(path="in.yaml", index=i, body=d) for i, d in enumerate(docs)])
    )


def echo_cluster(result: GatewayAPIResult) -> ir.Cluster:
    (found,) = [c for c in result.gateways[("default", "gw")].clusters if c.name == CLUSTER]
    return found


def conditions(result: GatewayAPIResult, name: str = "echo-tls") -> dict[str, tuple[str, str]]:
    (status,) = [s for s in result.statuses if s.kind == "BackendTLSPolicy" and s.name == name]
    (ancestor,) = status.status["ancestors"]
    assert ancestor["ancestorRef"] == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "namespace": "default",
        "name": "gw",
    }
    return {c["type"]: (c["status"], c["reason"]) for c in ancestor["conditions"]}


def context(cluster: ir.Cluster) -> tls_pb2.UpstreamTlsContext:
    out = build_cluster(cluster)
    assert out.transport_socket.name == "envoy.transport_sockets.tls"
    ctx = tls_pb2.UpstreamTlsContext()
    out.transport_socket.typed_config.Unpack(ctx)
    return ctx


# --- model ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda v: v.pop("caCertificateRefs"), "must specify either"),
        (lambda v: v.update(wellKnownCACertificates="System"), "must not contain both"),
        (lambda v: v.update(subjectAltNames=[{"type": "Hostname", "uri": "spiffe://x"}]), "needs hostname"),
        (lambda v: v.update(subjectAltNames=[{"type": "URI"}]), "needs uri"),
        (lambda v: v.update(hostname="*.example.com"), "hostname"),
    ],
)
def test_a_policy_the_crd_refuses_is_an_error(change: Any, words: str) -> None:
    body = policy(caCertificateRefs=[{"group": "", "kind": "ConfigMap", "name": "echo-ca"}])
    body = copy.deepcopy(body)
    change(body["spec"]["validation"])
    with pytest.raises(ManifestErrors) as info:
        parse_documents([SourcedDocument(path="p.yaml", index=0, body=body)])
    assert words in str(info.value)


def test_a_policy_needs_a_target() -> None:
    body = policy(wellKnownCACertificates="System")
    body["spec"]["targetRefs"] = []
    with pytest.raises(ManifestErrors, match="targetRefs"):
        parse_documents([SourcedDocument(path="p.yaml", index=0, body=body)])


# --- translation ------------------------------------------------------------------------------------


def test_a_service_port_without_policy_stays_plaintext(ca_pem: str) -> None:
    assert echo_cluster(run(base(ca_pem))).upstream_tls is None


def test_ca_ref_gives_sni_san_alpn_h2_and_the_ca_over_sds(ca_pem: str) -> None:
    result = run(
        [*base(ca_pem), policy(caCertificateRefs=[{"group": "", "kind": "ConfigMap", "name": "echo-ca"}])]
    )
    tls = echo_cluster(result).upstream_tls
    assert tls is not None
    assert (tls.sni, tls.subject_alt_names, tls.alpn, tls.reject_all) == (
        "echo.example.com",
        ("echo.example.com",),
        ("h2",),
        False,
    )
    (ca,) = result.gateways[("default", "gw")].ca_secrets
    assert tls.ca_secret == ca.name and ca.ca_certificates.decode().strip() == ca_pem.strip()
    assert result.gateways[("default", "gw")].validate() == []
    assert conditions(result) == {"Accepted": ("True", "Accepted"), "ResolvedRefs": ("True", "ResolvedRefs")}
    ctx = context(echo_cluster(result))
    assert ctx.sni == "echo.example.com"
    assert list(ctx.common_tls_context.alpn_protocols) == ["h2"]
    combined = ctx.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == ca.name
    (san,) = combined.default_validation_context.match_typed_subject_alt_names
    assert (san.san_type, san.matcher.exact) == (common_pb2.SubjectAltNameMatcher.DNS, "echo.example.com")


def test_system_cas_and_subject_alt_names_replace_the_hostname(ca_pem: str) -> None:
    sans = [{"type": "Hostname", "hostname": "a.example.com"}, {"type": "URI", "uri": "spiffe://td/ns/x"}]
    result = run([*base(ca_pem), policy(wellKnownCACertificates="System", subjectAltNames=sans)])
    tls = echo_cluster(result).upstream_tls
    assert tls is not None
    assert (tls.ca_file, tls.ca_secret, tls.subject_alt_names, tls.uri_subject_alt_names) == (
        SYSTEM_CA_FILE,
        None,
        ("a.example.com",),
        ("spiffe://td/ns/x",),
    )
    validation = context(echo_cluster(result)).common_tls_context.validation_context
    assert validation.trusted_ca.filename == SYSTEM_CA_FILE
    assert [(m.san_type, m.matcher.exact) for m in validation.match_typed_subject_alt_names] == [
        (common_pb2.SubjectAltNameMatcher.DNS, "a.example.com"),
        (common_pb2.SubjectAltNameMatcher.URI, "spiffe://td/ns/x"),
    ]


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ({"group": "", "kind": "ConfigMap", "name": "missing"}, "InvalidCACertificateRef"),
        ({"group": "example.com", "kind": "Bundle", "name": "echo-ca"}, "InvalidKind"),
    ],
)
def test_no_usable_ca_fails_closed_and_says_why(ca_pem: str, ref: dict[str, str], reason: str) -> None:
    result = run([*base(ca_pem), policy(caCertificateRefs=[ref])])
    assert conditions(result) == {
        "Accepted": ("False", "NoValidCACertificate"),
        "ResolvedRefs": ("False", reason),
    }
    cluster = echo_cluster(result)
    assert cluster.upstream_tls is not None and cluster.upstream_tls.reject_all
    assert result.gateways[("default", "gw")].ca_secrets == ()
    validation = context(cluster).common_tls_context.validation_context
    assert validation.trusted_ca.filename  # never a context that trusts anything
    assert list(validation.verify_certificate_hash) == [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    ]


def test_a_new_ca_is_a_new_secret_name(ca_pem: str) -> None:
    """So Envoy rebuilds the cluster and drops connections the old CA verified."""
    ref = [{"group": "", "kind": "ConfigMap", "name": "echo-ca"}]
    before = echo_cluster(run([*base(ca_pem), policy(caCertificateRefs=ref)])).upstream_tls
    other = make_ca("another").cert_pem.decode()
    after = echo_cluster(run([*base(other), policy(caCertificateRefs=ref)])).upstream_tls
    assert before is not None and after is not None and before.ca_secret != after.ca_secret


def test_a_malformed_bundle_is_an_invalid_ref(ca_pem: str) -> None:
    docs = base("not a certificate")
    result = run([*docs, policy(caCertificateRefs=[{"group": "", "kind": "ConfigMap", "name": "echo-ca"}])])
    assert conditions(result)["ResolvedRefs"] == ("False", "InvalidCACertificateRef")


def test_the_older_policy_wins_and_the_other_is_conflicted(ca_pem: str) -> None:
    older = policy("z-older", caCertificateRefs=[{"group": "", "kind": "ConfigMap", "name": "echo-ca"}])
    older["metadata"]["creationTimestamp"] = "2025-01-01T00:00:00Z"
    newer = policy("a-newer", wellKnownCACertificates="System")
    newer["metadata"]["creationTimestamp"] = "2025-02-01T00:00:00Z"
    result = run([*base(ca_pem), newer, older])
    tls = echo_cluster(result).upstream_tls
    assert tls is not None and tls.ca_secret is not None
    assert tls.ca_secret.startswith("backendtlspolicy-ca/default/z-older/")
    assert conditions(result, "z-older")["Accepted"] == ("True", "Accepted")
    assert conditions(result, "a-newer")["Accepted"] == ("False", "Conflicted")


def test_section_name_targets_one_port_by_name(ca_pem: str) -> None:
    other_port = policy(wellKnownCACertificates="System")
    other_port["spec"]["targetRefs"][0]["sectionName"] = "metrics"
    assert echo_cluster(run([*base(ca_pem), other_port])).upstream_tls is None
    this_port = copy.deepcopy(other_port)
    this_port["spec"]["targetRefs"][0]["sectionName"] = "grpc"
    assert echo_cluster(run([*base(ca_pem), this_port])).upstream_tls is not None


def test_an_http1_port_offers_http11(ca_pem: str) -> None:
    docs = base(ca_pem)
    docs[2]["spec"]["ports"][0]["appProtocol"] = "http"
    docs[3]["kind"] = "HTTPRoute"
    result = run([*docs, policy(wellKnownCACertificates="System")])
    (cluster,) = result.gateways[("default", "gw")].clusters
    assert cluster.upstream_tls is not None and cluster.upstream_tls.alpn == ("http/1.1",)
    assert list(context(cluster).common_tls_context.alpn_protocols) == ["http/1.1"]
