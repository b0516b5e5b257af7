"""meshxds.xds.auth: the namespace a client certificate proves, the claim check, the TLS files'
reload, which Secrets an unauthenticated stream gets; and the serve flags that choose them."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from meshxds.certgen import issue_proxy, issue_server, make_ca, write_bundle
from meshxds.cli import _parser, _security
from meshxds.identity import ProxyIdentity
from meshxds.serve import ServeOptions, check_exposure
from meshxds.testing.certs import self_signed
from meshxds.xds.auth import (
    PeerIdentity,
    PeerIdentityError,
    ReloadingTls,
    TlsConfigError,
    TlsFiles,
    XdsSecurity,
    XdsTransport,
    is_loopback,
    peer_identity,
    refusal,
    without_private_secrets,
)
from meshxds.xds.cache import TYPE_SECRET, CachedResource, Snapshot


def cert_with(*sans: x509.GeneralName) -> bytes:
    return self_signed(ec.generate_private_key(ec.SECP256R1()), common_name="proxy", sans=sans)


URI, DNS = x509.UniformResourceIdentifier, x509.DNSName


def test_a_spiffe_id_names_namespace_and_service_account() -> None:
    peer = peer_identity(cert_with(URI("spiffe://cluster.local/ns/team-a/sa/gw")))
    assert peer == PeerIdentity(
        namespace="team-a", service_account="gw", source="spiffe://cluster.local/ns/team-a/sa/gw"
    )


def test_the_spiffe_id_wins_over_dns_names() -> None:
    peer = peer_identity(cert_with(DNS("gw.team-b.svc"), URI("spiffe://td/ns/team-a/sa/gw")))
    assert peer.namespace == "team-a"


@pytest.mark.parametrize(
    "name", ["gw.team-a.svc", "gw.team-a.svc.cluster.local", "GW.Team-A.svc.cluster.local"]
)
def test_a_kubernetes_service_dns_name_names_the_namespace(name: str) -> None:
    peer = peer_identity(cert_with(DNS("unrelated.example.com"), DNS(name)))
    assert peer.namespace == "team-a" and peer.source == f"dns:{name}"


@pytest.mark.parametrize(
    ("sans", "message"),
    [
        ((), "no subjectAltName"),
        ((DNS("gw.example.com"),), "names no namespace"),
        ((URI("spiffe://td/ns/a/sa/x"), URI("spiffe://td/ns/b/sa/x")), "several namespaces"),
        ((DNS("gw.a.svc"), DNS("gw.b.svc")), "several namespaces"),
        ((URI("spiffe://td/team-a"),), "not a SPIFFE ID"),
        ((URI("spiffe://td/ns/Team_A/sa/gw"),), "not a SPIFFE ID"),
        ((URI("spiffe://td/ns/a/sa/gw/extra"),), "not a SPIFFE ID"),
    ],
    ids=[
        "no-san",
        "dns-elsewhere",
        "two-spiffe-namespaces",
        "two-dns-namespaces",
        "no-ns",
        "bad-ns",
        "extra",
    ],
)
def test_a_certificate_proving_no_single_namespace_is_an_error(
    sans: tuple[x509.GeneralName, ...], message: str
) -> None:
    with pytest.raises(PeerIdentityError, match=message):
        peer_identity(cert_with(*sans))


def test_the_trust_domain_is_checked_when_pinned() -> None:
    pem = cert_with(URI("spiffe://other.example/ns/team-a/sa/gw"))
    assert peer_identity(pem, trust_domain="other.example").namespace == "team-a"
    with pytest.raises(PeerIdentityError, match=r"not of trust domain cluster\.local"):
        peer_identity(pem, trust_domain="cluster.local")
    with pytest.raises(PeerIdentityError, match="no SPIFFE ID"):
        peer_identity(cert_with(DNS("gw.team-a.svc")), trust_domain="cluster.local")


def test_a_claim_of_another_namespace_is_refused_whatever_its_labels() -> None:
    peer = PeerIdentity(namespace="team-a", source="spiffe://td/ns/team-a/sa/gw")
    own = ProxyIdentity.of(namespace="team-a", labels={"gateway.networking.k8s.io/gateway-name": "b"})
    assert refusal(peer, own) is None
    stolen = ProxyIdentity.of(namespace="team-b", labels={"gateway.networking.k8s.io/gateway-name": "b"})
    reason = refusal(peer, stolen)
    assert reason is not None and "'team-b'" in reason and "'team-a'" in reason
    # No namespace claimed means "default", which must be proved like any other.
    assert refusal(peer, ProxyIdentity.of()) is not None


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:18000", True),
        ("127.1.2.3:0", True),
        ("localhost:18000", True),
        ("[::1]:18000", True),
        ("0.0.0.0:18000", False),
        ("[::]:18000", False),
        ("10.0.0.5:18000", False),
        ("meshxds.example.com:18000", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def secret(name: str, message: secret_pb2.Secret) -> CachedResource:
    message.name = name
    return CachedResource.from_message(name, message)


def test_unauthenticated_streams_get_ca_bundles_but_no_private_secrets() -> None:
    key = secret_pb2.Secret(tls_certificate=common_pb2.TlsCertificate(private_key={"inline_bytes": b"KEY"}))
    ca = secret_pb2.Secret(
        validation_context=common_pb2.CertificateValidationContext(trusted_ca={"inline_bytes": b"CA"})
    )
    generic = secret_pb2.Secret(generic_secret=secret_pb2.GenericSecret(secret={"inline_bytes": b"x"}))
    resources = {n: secret(n, m) for n, m in (("key", key), ("ca", ca), ("generic", generic))}
    snapshot = Snapshot(resources={TYPE_SECRET: resources})
    view, withheld = without_private_secrets(snapshot)
    assert withheld == ("generic", "key")
    assert set(view.get(TYPE_SECRET)) == {"ca"}
    public_only = Snapshot(resources={TYPE_SECRET: {"ca": resources["ca"]}})
    assert without_private_secrets(public_only) == (public_only, ())


def test_security_transport_and_who_gets_keys() -> None:
    files = TlsFiles(cert="c", key="k")
    assert XdsSecurity().transport is XdsTransport.PLAINTEXT and XdsSecurity().withholds_secrets
    assert XdsSecurity(tls=files).transport is XdsTransport.TLS and XdsSecurity(tls=files).withholds_secrets
    mtls = XdsSecurity(tls=TlsFiles(cert="c", key="k", client_ca="ca"))
    assert mtls.transport is XdsTransport.MTLS and not mtls.withholds_secrets
    assert not XdsSecurity(allow_insecure_secrets=True).withholds_secrets


def test_tls_files_are_reloaded_only_when_changed_and_usable(tmp_path: Path) -> None:
    ca = make_ca()
    bundle = write_bundle(tmp_path, issue_server(ca, ["localhost"]), ca)
    files = TlsFiles(
        cert=str(bundle / "tls.crt"), key=str(bundle / "tls.key"), client_ca=str(bundle / "ca.crt")
    )
    tls = ReloadingTls(files)
    first = tls.current
    assert tls.poll() is None  # unchanged
    other = issue_server(ca, ["localhost"])
    (bundle / "tls.crt").write_bytes(other.chain_pem)  # the key not written yet: a mismatch
    assert tls.poll() is None and tls.current is first
    (bundle / "tls.key").write_bytes(other.key_pem)
    reloaded = tls.poll()
    assert reloaded is not None and reloaded.chain_pem == other.chain_pem and tls.current is reloaded
    assert tls.poll() is None


def test_unusable_tls_files_fail_at_start(tmp_path: Path) -> None:
    ca = make_ca()
    bundle = write_bundle(tmp_path, issue_proxy(ca, namespace="a", service_account="b"), ca)
    with pytest.raises(TlsConfigError, match="cannot read"):
        TlsFiles(cert=str(tmp_path / "missing.crt"), key=str(bundle / "tls.key")).load()
    stranger = write_bundle(tmp_path / "other", issue_server(ca, ["x"]), ca)
    with pytest.raises(TlsConfigError, match="is not the private key"):
        TlsFiles(cert=str(bundle / "tls.crt"), key=str(stranger / "tls.key")).load()
    with pytest.raises(TlsConfigError, match="not a PEM CA bundle"):
        TlsFiles(
            cert=str(bundle / "tls.crt"), key=str(bundle / "tls.key"), client_ca=str(bundle / "tls.key")
        ).load()


def serve_args(*extra: str) -> list[str]:
    return ["serve", "--config-dir", "x", *extra]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--xds-tls-cert", "c"), "go together"),
        (("--xds-client-ca", "ca"), "needs --xds-tls-cert"),
        (("--xds-trust-domain", "td"), "needs --xds-client-ca"),
        (("--xds-tls-cert", "c", "--xds-tls-key", "k", "--insecure-xds"), "contradicts"),
    ],
)
def test_contradictory_security_flags_are_refused(flags: tuple[str, ...], message: str) -> None:
    result = _security(_parser().parse_args(serve_args(*flags)))
    assert isinstance(result, str) and message in result


def test_security_flags_build_the_options() -> None:
    args = _parser().parse_args(
        serve_args(
            "--xds-tls-cert", "c", "--xds-tls-key", "k", "--xds-client-ca", "ca", "--xds-trust-domain", "td"
        )
    )
    assert _security(args) == XdsSecurity(
        tls=TlsFiles(cert="c", key="k", client_ca="ca"), trust_domain="td", allow_insecure_secrets=False
    )


@pytest.mark.parametrize(
    ("options", "problems"),
    [
        (ServeOptions(), []),
        (ServeOptions(xds_address="0.0.0.0:18000"), ["--insecure-xds"]),
        (ServeOptions(xds_address="0.0.0.0:18000", insecure_xds=True), []),
        (
            ServeOptions(xds_address="0.0.0.0:18000", security=XdsSecurity(tls=TlsFiles(cert="c", key="k"))),
            [],
        ),
        (ServeOptions(admin_address="0.0.0.0:18080"), ["--insecure-admin"]),
        (ServeOptions(admin_address="0.0.0.0:18080", insecure_admin=True), []),
    ],
    ids=["loopback", "plaintext-open", "plaintext-flagged", "tls-open", "admin-open", "admin-flagged"],
)
def test_exposure_beyond_loopback_needs_a_flag(options: ServeOptions, problems: list[str]) -> None:
    found = check_exposure(options)
    assert len(found) == len(problems)
    for text, flag in zip(found, problems, strict=True):
        assert flag in text and "not loopback" in text
