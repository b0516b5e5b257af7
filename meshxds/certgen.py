"""``meshxds certgen``: a self-signed CA and the xDS certificates, without cert-manager.

Like Envoy Gateway's ``certgen``: one CA, a server certificate for meshxds (its Service names),
and one client certificate per proxy identity with the SPIFFE ID Istio would issue,
``spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT``; the namespace in it is what meshxds
checks a proxy's claimed ``node.metadata.namespace`` against. Each bundle is a directory with
``tls.crt``, ``tls.key`` (mode 0600) and ``ca.crt``, the keys of a ``kubernetes.io/tls`` Secret
(``kubectl create secret generic NAME --from-file=DIR``).

EC P-256 keys, SHA-256 signatures. An existing ``ca.crt``/``ca.key`` in the output directory is
reused, so more proxies can be added later without re-issuing the others.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_SERVER_NAMES",
    "Authority",
    "Issued",
    "issue_proxy",
    "issue_server",
    "load_or_make_ca",
    "make_ca",
    "spiffe_id",
    "write_bundle",
]

DEFAULT_SERVER_NAMES = (
    "meshxds.meshxds-system.svc",
    "meshxds.meshxds-system.svc.cluster.local",
    "localhost",
    "127.0.0.1",
)
"""The deploy/ Service's names, and loopback for the demo."""
_BACKDATE = datetime.timedelta(minutes=5)  # tolerate clock skew between nodes


@dataclass(frozen=True, slots=True, kw_only=True)
class Authority:
    cert_pem: bytes
    key_pem: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Issued:
    """A leaf certificate; ``chain_pem`` is leaf then CA."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    chain_pem: bytes


def spiffe_id(*, trust_domain: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


def make_ca(*, common_name: str = "meshxds xDS CA", days: int = 3650) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    not_before = datetime.datetime.now(datetime.UTC) - _BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert_pem=_pem(cert), key_pem=_key_pem(key))


def load_or_make_ca(directory: Path, *, days: int = 3650) -> Authority:
    """The CA in ``directory`` (``ca.crt``, ``ca.key``), made and written there if absent."""
    cert_path, key_path = directory / "ca.crt", directory / "ca.key"
    if cert_path.exists() and key_path.exists():
        return Authority(cert_pem=cert_path.read_bytes(), key_pem=key_path.read_bytes())
    ca = make_ca(days=days)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(ca.cert_pem)
    _write_private(key_path, ca.key_pem)
    return ca


def issue_server(ca: Authority, names: Sequence[str], *, days: int = 365) -> Issued:
    """A serverAuth certificate for ``names`` (DNS names; IP literals become IP SANs)."""
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    return _issue(ca, names[0], sans, ExtendedKeyUsageOID.SERVER_AUTH, days)


def issue_proxy(
    ca: Authority,
    *,
    namespace: str,
    service_account: str,
    trust_domain: str = "cluster.local",
    days: int = 365,
) -> Issued:
    """A clientAuth certificate whose only SAN is the proxy's SPIFFE ID."""
    uri = spiffe_id(trust_domain=trust_domain, namespace=namespace, service_account=service_account)
    cn = f"{service_account}.{namespace}"[:64]
    return _issue(ca, cn, [x509.UniformResourceIdentifier(uri)], ExtendedKeyUsageOID.CLIENT_AUTH, days)


def write_bundle(directory: Path, issued: Issued, ca: Authority) -> Path:
    """``tls.crt`` (the chain), ``tls.key`` (0600) and ``ca.crt`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(issued.chain_pem)
    _write_private(directory / "tls.key", issued.key_pem)
    (directory / "ca.crt").write_bytes(ca.cert_pem)
    return directory


def _issue(
    ca: Authority, common_name: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier, days: int
) -> Issued:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"the CA key is {type(ca_key).__name__}; certgen signs with EC keys")
    key = ec.generate_private_key(ec.SECP256R1())
    not_before = datetime.datetime.now(datetime.UTC) - _BACKDATE
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_before + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_pem = _pem(cert)
    return Issued(cert_pem=cert_pem, key_pem=_key_pem(key), chain_pem=cert_pem + ca.cert_pem)


def _usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
