"""Kubernetes TLS Secrets → IR secrets delivered over SDS.

The key never leaves as text: it is kept as ``SecretBytes`` and only Envoy's SDS response
carries it. A Secret that is missing, not allowed, or not a usable certificate and key gives a
message (the listener's condition), never an exception.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from meshxds import ir, names
from meshxds.model import core, gatewayapi
from meshxds.model.manifests import ResourceSet

if TYPE_CHECKING:  # backends.py reads CA bundles from here (BackendTLSPolicy)
    from meshxds.translators.backends import BackendIndex

__all__ = [
    "ca_bundle",
    "certificate_problem",
    "resolve_ca_certificate_ref",
    "resolve_certificate_ref",
    "secret_value",
    "tls_secret_from",
]


def secret_value(secret: core.Secret, key: str) -> bytes | None:
    """A Secret's ``data`` (base64) or ``stringData`` value; ``None`` when absent or undecodable."""
    if key in secret.string_data:
        return secret.string_data[key].encode()
    raw = secret.data.get(key)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None


# What Envoy (BoringSSL) serves, measured with ``envoy --mode validate`` (1.40): RSA keys of 2048
# bits or more, ECDSA on these curves, Ed25519. Anything else fails the whole listener.
_RSA_MIN_BITS = 2048
_CURVES = frozenset({"secp256r1", "secp384r1", "secp521r1"})


def certificate_problem(chain: bytes, key: bytes) -> str | None:
    """Why Envoy would reject this pair, or ``None``: both must parse as PEM, the key must be one
    Envoy serves, and it must be the first (leaf) certificate's key."""
    try:
        certificates = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        return f"tls.crt is not a PEM certificate ({exc})"
    try:
        private = load_pem_private_key(key, password=None)
    except (ValueError, TypeError) as exc:
        return f"tls.key is not an unencrypted PEM private key ({exc})"
    except Exception as exc:  # an algorithm cryptography cannot load (UnsupportedAlgorithm)
        return f"tls.key is a key Envoy cannot serve ({exc})"
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < _RSA_MIN_BITS:
            return f"tls.key is a {private.key_size}-bit RSA key; Envoy needs {_RSA_MIN_BITS} bits or more"
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        if private.curve.name not in _CURVES:
            curve = private.curve.name
            return f"tls.key is an ECDSA key on {curve}; Envoy serves P-256, P-384 and P-521 only"
    elif not isinstance(private, ed25519.Ed25519PrivateKey):
        kind = type(private).__name__.removeprefix("_")
        return f"tls.key is a {kind} key; Envoy serves RSA, ECDSA and Ed25519"
    try:
        leaf_key = certificates[0].public_key()
    except ValueError as exc:  # a certificate whose key cryptography cannot read
        return f"tls.crt's first certificate has an unreadable key ({exc})"
    spki = (Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    if leaf_key.public_bytes(*spki) != private.public_key().public_bytes(*spki):
        return "tls.key does not match tls.crt (the private key is not the first certificate's)"
    return None


def tls_secret_from(secret: core.Secret) -> ir.TlsSecret | str:
    """The SDS secret for a ``kubernetes.io/tls`` (or generic) Secret, or what is wrong with it."""
    chain, key = secret_value(secret, "tls.crt"), secret_value(secret, "tls.key")
    if chain is None or key is None:
        return f"Secret {secret.namespace}/{secret.name} has no tls.crt and tls.key"
    problem = certificate_problem(chain, key)
    if problem is not None:
        return f"Secret {secret.namespace}/{secret.name}: {problem}"
    return ir.TlsSecret(
        name=names.sds_secret_name(secret.namespace, secret.name),
        certificate_chain=chain,
        private_key=ir.SecretBytes(key),
        source=ir.ObjectRef(kind="Secret", namespace=secret.namespace, name=secret.name),
    )


def resolve_certificate_ref(
    resources: ResourceSet,
    backends: BackendIndex,
    ref: gatewayapi.SecretObjectReference,
    *,
    gateway: gatewayapi.Gateway,
    at: str,
) -> ir.TlsSecret | str:
    """A Gateway listener's certificateRef, checked like the spec asks (kind, ReferenceGrant)."""
    if (ref.group, ref.kind) != ("", "Secret"):
        return f"{at}: certificateRefs of kind {ref.group or 'core'}/{ref.kind} are not supported"
    namespace = ref.namespace or gateway.namespace
    refused = _not_granted(backends, gateway, "Secret", namespace, ref.name, at)
    if refused is not None:
        return refused
    secret = resources.get(core.Secret, namespace, ref.name)
    if secret is None:
        return f"{at}: Secret {namespace}/{ref.name} not found"
    return tls_secret_from(secret)


def resolve_ca_certificate_ref(
    resources: ResourceSet,
    backends: BackendIndex,
    ref: gatewayapi.FrontendCACertificateRef,
    *,
    gateway: gatewayapi.Gateway,
    at: str,
) -> bytes | tuple[str, str]:
    """A ``spec.tls.frontend`` CA reference → its PEM bundle (``ca.crt`` of a ConfigMap, the Core
    kind, or of a Secret), or ``(reason, message)`` as GEP-91 names them."""
    if ref.group != "" or ref.kind not in ("ConfigMap", "Secret"):
        return (
            "InvalidCACertificateKind",
            f"{at}: CA certificates of kind {ref.group or 'core'}/{ref.kind} are not supported",
        )
    namespace = ref.namespace or gateway.namespace
    refused = _not_granted(backends, gateway, ref.kind, namespace, ref.name, at)
    if refused is not None:
        return "RefNotPermitted", refused
    return ca_bundle(resources, ref.kind, namespace, ref.name, at=at)


def ca_bundle(
    resources: ResourceSet, kind: str, namespace: str, name: str, *, at: str
) -> bytes | tuple[str, str]:
    """The PEM bundle under ``ca.crt`` of a ConfigMap or Secret (``kind``), or ``(reason,
    message)``: ``InvalidCACertificateRef`` when it is missing or holds no PEM certificate."""
    bundle: bytes | None = None
    if kind == "ConfigMap":
        config_map = resources.get(core.ConfigMap, namespace, name)
        if config_map is None:
            return "InvalidCACertificateRef", f"{at}: ConfigMap {namespace}/{name} not found"
        text = config_map.data.get("ca.crt")
        bundle = text.encode() if text is not None else None
    else:
        secret = resources.get(core.Secret, namespace, name)
        if secret is None:
            return "InvalidCACertificateRef", f"{at}: Secret {namespace}/{name} not found"
        bundle = secret_value(secret, "ca.crt")
    if not bundle:
        return "InvalidCACertificateRef", f"{at}: {kind} {namespace}/{name} has no ca.crt"
    try:
        certificates = x509.load_pem_x509_certificates(bundle)
    except ValueError:
        certificates = []
    if not certificates:
        return (
            "InvalidCACertificateRef",
            f"{at}: {kind} {namespace}/{name}: ca.crt is not a PEM certificate bundle",
        )
    return bundle


def _not_granted(
    backends: BackendIndex, gateway: gatewayapi.Gateway, kind: str, namespace: str, name: str, at: str
) -> str | None:
    """Why the Gateway may not read core ``kind`` ``namespace/name`` (no ReferenceGrant admits it
    across namespaces), or ``None`` when it may."""
    if backends.reference_allowed(
        from_group=gatewayapi.GROUP,
        from_kind="Gateway",
        from_namespace=gateway.namespace,
        to_group="",
        to_kind=kind,
        to_namespace=namespace,
        to_name=name,
    ):
        return None
    return (
        f"{at}: no ReferenceGrant in namespace {namespace} allows Gateways from "
        f"{gateway.namespace} to use {kind} {name}"
    )
