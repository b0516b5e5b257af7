"""meshxds.testing.certs: certificates that real TLS stacks accept, and Secrets that decode back."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshxds.testing.certs import (
    CertificateAuthority,
    ClientCertificate,
    ServerCertificate,
    issue,
    issue_client,
    make_ca,
    opaque_secret_manifest,
    tls_secret_manifest,
    write_pem_files,
)

HOSTNAMES = ["gateway.test", "*.example.com", "127.0.0.1"]


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return make_ca()


@pytest.fixture(scope="module")
def server(ca: CertificateAuthority) -> ServerCertificate:
    return issue(ca, HOSTNAMES)


@pytest.fixture(scope="module")
def client(ca: CertificateAuthority) -> ClientCertificate:
    return issue_client(ca, "client.example")


def _load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _verify_server(ca: CertificateAuthority, cert: ServerCertificate, name: str) -> None:
    verifier = PolicyBuilder().store(Store([_load(ca.cert_pem)])).build_server_verifier(x509.DNSName(name))
    chain = x509.load_pem_x509_certificates(cert.chain_pem)
    verifier.verify(chain[0], chain[1:])


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_name: str) -> ssl.SSLObject:
    """A TLS handshake through memory BIOs (no sockets); returns the client side."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server_side = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", client_side), ("server", server_side)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return client_side
    raise AssertionError("TLS handshake did not finish in 20 rounds")


def _server_context(tmp_path: Path, cert: ServerCertificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    chain_path, key_path = write_pem_files(tmp_path, "server", cert)
    context.load_cert_chain(chain_path, key_path)
    return context


def test_ca_is_a_ca_valid_from_yesterday_for_30_days(ca: CertificateAuthority) -> None:
    cert = _load(ca.cert_pem)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign is True
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "meshxds test CA"
    now = datetime.datetime.now(datetime.UTC)
    assert now - datetime.timedelta(days=1, minutes=5) < cert.not_valid_before_utc < now
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=30)


def test_server_certificate_lists_every_hostname_as_san(server: ServerCertificate) -> None:
    cert = _load(server.cert_pem)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["gateway.test", "*.example.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert server.hostnames == tuple(HOSTNAMES)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gateway.test"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_server_chain_is_leaf_then_ca(ca: CertificateAuthority, server: ServerCertificate) -> None:
    assert server.chain_pem == server.cert_pem + ca.cert_pem
    assert [c.subject for c in x509.load_pem_x509_certificates(server.chain_pem)] == [
        _load(server.cert_pem).subject,
        _load(ca.cert_pem).subject,
    ]


@pytest.mark.parametrize(
    "name",
    ["gateway.test", "a.example.com", "anything.example.com"],
    ids=["cert-san-exact", "cert-san-wildcard-a", "cert-san-wildcard-anything"],
)
def test_chain_verifies_against_the_ca(
    ca: CertificateAuthority, server: ServerCertificate, name: str
) -> None:
    _verify_server(ca, server, name)


@pytest.mark.parametrize(
    "name",
    ["other.test", "example.com", "a.b.example.com"],
    ids=["cert-san-unlisted", "cert-wildcard-not-apex", "cert-wildcard-one-label-only"],
)
def test_chain_does_not_verify_for_other_names(
    ca: CertificateAuthority, server: ServerCertificate, name: str
) -> None:
    with pytest.raises(VerificationError):
        _verify_server(ca, server, name)


def test_chain_does_not_verify_against_another_ca(server: ServerCertificate) -> None:
    with pytest.raises(VerificationError):
        _verify_server(make_ca("someone else"), server, "gateway.test")


def test_openssl_accepts_the_chain_for_a_wildcard_name(
    tmp_path: Path, ca: CertificateAuthority, server: ServerCertificate
) -> None:
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    tls = _handshake(_server_context(tmp_path, server), client_ctx, "api.example.com")
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    assert x509.load_der_x509_certificate(der) == _load(server.cert_pem)


def test_openssl_rejects_the_chain_from_another_ca(tmp_path: Path, server: ServerCertificate) -> None:
    client_ctx = ssl.create_default_context(cadata=make_ca().cert_pem.decode())
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_server_context(tmp_path, server), client_ctx, "gateway.test")


def test_client_certificate_works_for_mtls(
    tmp_path: Path, ca: CertificateAuthority, server: ServerCertificate, client: ClientCertificate
) -> None:
    cert = _load(client.cert_pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "client.example"
    verified = PolicyBuilder().store(Store([_load(ca.cert_pem)])).build_client_verifier().verify(cert, [])
    assert verified.subjects == [x509.DNSName("client.example")]

    server_ctx = _server_context(tmp_path, server)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(cadata=ca.cert_pem.decode())
    client_ctx = ssl.create_default_context(cadata=ca.cert_pem.decode())
    chain_path, key_path = write_pem_files(tmp_path, "client", client)
    client_ctx.load_cert_chain(chain_path, key_path)
    _handshake(server_ctx, client_ctx, "gateway.test")


def test_issue_rejects_a_bare_string_and_no_names(ca: CertificateAuthority) -> None:
    with pytest.raises(TypeError):
        issue(ca, "gateway.test")  # a str is a Sequence[str]: caught at runtime
    with pytest.raises(ValueError):
        issue(ca, [])


def test_tls_secret_decodes_back_to_the_pems(ca: CertificateAuthority, server: ServerCertificate) -> None:
    secret = tls_secret_manifest("gw-cert", "infra", server, ca=ca)
    assert secret["apiVersion"] == "v1"
    assert secret["kind"] == "Secret"
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"] == {"name": "gw-cert", "namespace": "infra"}
    decoded = {key: base64.b64decode(value) for key, value in secret["data"].items()}
    assert decoded == {"tls.crt": server.chain_pem, "tls.key": server.key_pem, "ca.crt": ca.cert_pem}


def test_tls_secret_without_ca_has_no_ca_crt(server: ServerCertificate) -> None:
    assert set(tls_secret_manifest("gw-cert", "infra", server)["data"]) == {"tls.crt", "tls.key"}


def test_opaque_secret_decodes_back(ca: CertificateAuthority) -> None:
    secret = opaque_secret_manifest("ca", "infra", {"cacert": ca.cert_pem, "b": b"\x00\xff"})
    assert secret["type"] == "Opaque"
    assert list(secret["data"]) == ["b", "cacert"]
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == {
        "cacert": ca.cert_pem,
        "b": b"\x00\xff",
    }


def test_write_pem_files_writes_chain_and_private_key(tmp_path: Path, server: ServerCertificate) -> None:
    cert_path, key_path = write_pem_files(tmp_path / "certs", "gw", server)
    assert (cert_path.name, key_path.name) == ("gw.crt", "gw.key")
    assert cert_path.read_bytes() == server.chain_pem
    assert key_path.read_bytes() == server.key_pem
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_reprs_hide_private_keys(
    ca: CertificateAuthority, server: ServerCertificate, client: ClientCertificate
) -> None:
    for material in (ca, server, client):
        shown = repr(material)
        assert "key_pem" not in shown
        assert "PRIVATE KEY" not in shown
        assert material.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
