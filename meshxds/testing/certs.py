"""Throwaway TLS material for HTTPS gateway tests: a CA, server and client certificates, Secrets.

Everything is generated in memory with ``cryptography`` (EC P-256, SHA-256), valid for 30 days from
one day ago, and handed out as PEM bytes::

    ca = make_ca()
    cert = issue(ca, ["gw.example.com", "*.example.com"])
    secret = tls_secret_manifest("gw-cert", "default", cert)      # Gateway API / Istio credentialName
    chain_path, key_path = write_pem_files(tmp_path, "gw", cert)  # Istio's file-path style

Private keys are never part of a ``repr`` and never logged.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateAuthority",
    "ClientCertificate",
    "ServerCertificate",
    "SigningKey",
    "issue",
    "issue_client",
    "make_ca",
    "opaque_secret_manifest",
    "private_key_pem",
    "self_signed",
    "tls_secret_manifest",
    "write_pem_files",
]

_VALID_BEFORE_NOW = datetime.timedelta(days=1)
_VALIDITY = datetime.timedelta(days=30)
_CN_MAX = 64  # RFC 5280 ub-common-name


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateAuthority:
    """A self-signed CA that can issue server and client certificates."""

    cert_pem: bytes
    """The CA certificate: what clients trust, and ``ca.crt`` in a Secret."""
    key_pem: bytes = field(repr=False)
    """The CA's PKCS#8 private key; never in ``repr``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerCertificate:
    """A serverAuth leaf certificate for ``hostnames``, signed by a :class:`CertificateAuthority`."""

    cert_pem: bytes
    """The leaf certificate alone."""
    key_pem: bytes = field(repr=False)
    """The leaf's PKCS#8 private key; never in ``repr``."""
    chain_pem: bytes
    """Leaf then CA: what a server presents, and ``tls.crt`` in a Secret."""
    hostnames: tuple[str, ...]
    """Every subjectAltName (DNS names, wildcards, IP literals) in the order given."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientCertificate:
    """A clientAuth leaf certificate for mTLS tests, signed by a :class:`CertificateAuthority`."""

    cert_pem: bytes
    """The leaf certificate alone."""
    key_pem: bytes = field(repr=False)
    """The leaf's PKCS#8 private key; never in ``repr``."""
    chain_pem: bytes
    """Leaf then CA."""
    common_name: str
    """The subject CN (also a DNS SAN when it is a valid DNS name)."""


def make_ca(common_name: str = "meshxds test CA") -> CertificateAuthority:
    """A fresh self-signed CA (basicConstraints CA:TRUE, pathlen 0, keyCertSign)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:_CN_MAX])])
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert_pem=_cert_pem(cert), key_pem=_key_pem(key))


def issue(ca: CertificateAuthority, hostnames: Sequence[str]) -> ServerCertificate:
    """A serverAuth certificate whose subjectAltName lists every hostname.

    Wildcards (``*.example.com``) are DNS names like any other; IP literals (``127.0.0.1``) become
    IP-address SANs, and ``scheme://...`` (a SPIFFE id) URI SANs. The subject CN is the first
    hostname.
    """
    if isinstance(hostnames, str):
        raise TypeError("hostnames must be a list of names, not one string")
    names = tuple(hostnames)
    if not names:
        raise ValueError("issue() needs at least one hostname")
    sans = x509.SubjectAlternativeName([_general_name(h) for h in names])
    cert_pem, key_pem = _sign_leaf(ca, names[0], sans, ExtendedKeyUsageOID.SERVER_AUTH)
    return ServerCertificate(
        cert_pem=cert_pem, key_pem=key_pem, chain_pem=cert_pem + ca.cert_pem, hostnames=names
    )


def issue_client(ca: CertificateAuthority, common_name: str) -> ClientCertificate:
    """A clientAuth certificate with subject CN ``common_name`` (also a DNS SAN when it is a valid name)."""
    if not common_name:
        raise ValueError("issue_client() needs a common name")
    sans = x509.SubjectAlternativeName([x509.DNSName(common_name)]) if _is_dns_name(common_name) else None
    cert_pem, key_pem = _sign_leaf(ca, common_name, sans, ExtendedKeyUsageOID.CLIENT_AUTH)
    return ClientCertificate(
        cert_pem=cert_pem, key_pem=key_pem, chain_pem=cert_pem + ca.cert_pem, common_name=common_name
    )


def tls_secret_manifest(
    name: str,
    namespace: str,
    cert: ServerCertificate | ClientCertificate,
    *,
    ca: CertificateAuthority | None = None,
) -> dict[str, Any]:
    """A ``kubernetes.io/tls`` Secret: ``tls.crt`` (the chain), ``tls.key``, and ``ca.crt`` if ``ca``."""
    data = {"tls.crt": cert.chain_pem, "tls.key": cert.key_pem}
    if ca is not None:
        data["ca.crt"] = ca.cert_pem
    return _secret(name, namespace, "kubernetes.io/tls", data)


def opaque_secret_manifest(name: str, namespace: str, data: Mapping[str, bytes]) -> dict[str, Any]:
    """An ``Opaque`` Secret with each value base64-encoded under ``data`` (keys sorted)."""
    return _secret(name, namespace, "Opaque", data)


def write_pem_files(
    directory: str | os.PathLike[str], name: str, cert: ServerCertificate | ClientCertificate
) -> tuple[Path, Path]:
    """Write ``<name>.crt`` (the chain) and ``<name>.key`` (mode 0600) into ``directory``; return both."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    cert_path = folder / f"{name}.crt"
    key_path = folder / f"{name}.key"
    cert_path.write_bytes(cert.chain_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert.key_pem)
    return cert_path, key_path


def _sign_leaf(
    ca: CertificateAuthority,
    common_name: str,
    sans: x509.SubjectAlternativeName | None,
    usage: x509.ObjectIdentifier,
) -> tuple[bytes, bytes]:
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"CA key is {type(ca_key).__name__}, expected an EC key from make_ca()")
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:_CN_MAX])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if sans is not None:
        builder = builder.add_extension(sans, critical=False)
    return _cert_pem(builder.sign(ca_key, hashes.SHA256())), _key_pem(key)


def _secret(name: str, namespace: str, type_: str, data: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": type_,
        "data": {key: base64.b64encode(data[key]).decode("ascii") for key in sorted(data)},
    }


def _general_name(hostname: str) -> x509.GeneralName:
    if "://" in hostname:
        return x509.UniformResourceIdentifier(hostname)  # e.g. a SPIFFE id
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def _is_dns_name(value: str) -> bool:
    labels = value.split(".")
    return all(label and len(label) <= 63 and label.replace("-", "").isalnum() for label in labels)


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    not_before = datetime.datetime.now(datetime.UTC) - _VALID_BEFORE_NOW
    return not_before, not_before + _VALIDITY


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def self_signed(
    key: SigningKey, *, common_name: str = "web.example.com", sans: Sequence[x509.GeneralName] = ()
) -> bytes:
    """A self-signed certificate (PEM) for ``key`` of any type Envoy may or may not serve: for
    tests of what a key or a SAN makes of a certificate, where no CA is wanted."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:_CN_MAX])])
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return _cert_pem(builder.sign(key, algorithm))


def private_key_pem(key: SigningKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM, the form ``tls.key`` holds."""
    return _key_pem(key)


def _key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
