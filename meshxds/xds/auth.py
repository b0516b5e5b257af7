"""Who may get what over xDS: the TLS files (re-read when they change), the namespace a client
certificate proves, and which Secrets an unauthenticated stream never receives.

A proxy *claims* its identity in ``node.metadata`` (``meshxds.identity``); with mTLS the claim is
checked against its certificate, so a proxy can never obtain another namespace's config or keys
by copying its labels. The certificate names the namespace in one of two forms:

- a SPIFFE URI SAN ``spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT``, as Istio issues
  them (preferred; ``--xds-trust-domain`` pins the trust domain);
- otherwise a DNS SAN ``NAME.NAMESPACE.svc`` or ``NAME.NAMESPACE.svc.CLUSTER_DOMAIN``, the form
  Kubernetes service names take (the namespace is the second label).

No gRPC here (``server.py`` alone knows transports): this module deals in PEM bytes.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from meshxds.errors import MeshxdsError
from meshxds.identity import ProxyIdentity
from meshxds.xds.cache import PUSH_ORDER, TYPE_SECRET, CachedResource, Snapshot

__all__ = [
    "PeerIdentity",
    "PeerIdentityError",
    "ReloadingTls",
    "TlsConfigError",
    "TlsFiles",
    "TlsMaterial",
    "XdsSecurity",
    "XdsTransport",
    "is_loopback",
    "is_public_secret",
    "peer_identity",
    "refusal",
    "without_private_secrets",
]

log = logging.getLogger(__name__)

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SPIFFE_PATH = re.compile(r"/ns/([^/]+)/sa/([^/]+)")


class TlsConfigError(MeshxdsError):
    """The xDS TLS files cannot be used (missing, unreadable, or a key that is not the cert's)."""


class PeerIdentityError(MeshxdsError):
    """A client certificate that proves no single namespace."""


class XdsTransport(Enum):
    """How the xDS port is served, which decides what a stream is trusted with."""

    PLAINTEXT = "plaintext"
    """No TLS: anyone who reaches the port may claim any identity."""
    TLS = "tls"
    """Server TLS only: encrypted, but clients are not authenticated."""
    MTLS = "mtls"
    """Clients present a certificate of ``--xds-client-ca``; its namespace is checked."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """The server's certificate chain and key, and the CA that signs client certificates (mTLS)."""

    cert: str
    """PEM certificate chain, leaf first."""
    key: str
    """PEM private key of the leaf."""
    client_ca: str | None = None
    """PEM CA bundle clients' certificates must chain to; ``None``: server TLS only."""

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())

    def load(self) -> TlsMaterial:
        """Read and check the files: a key that does not match the leaf fails here, not at a handshake."""
        chain, key = _read(self.cert), _read(self.key)
        client_ca = _read(self.client_ca) if self.client_ca else None
        try:
            leaf = x509.load_pem_x509_certificate(chain)
            private = serialization.load_pem_private_key(key, password=None)
        except ValueError as exc:
            raise TlsConfigError(f"{self.cert} / {self.key}: not a PEM certificate and key: {exc}") from exc
        if leaf.public_key() != private.public_key():
            raise TlsConfigError(f"{self.key} is not the private key of the certificate in {self.cert}")
        if client_ca is not None:
            try:
                if not x509.load_pem_x509_certificates(client_ca):
                    raise ValueError("no certificate")
            except ValueError as exc:
                raise TlsConfigError(f"{self.client_ca}: not a PEM CA bundle: {exc}") from exc
        return TlsMaterial(chain_pem=chain, key_pem=key, client_ca_pem=client_ca)


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsMaterial:
    """What ``TlsFiles`` held when read."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)
    client_ca_pem: bytes | None = None


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TlsConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc


class ReloadingTls:
    """``TlsFiles`` re-read when any of them changes, as Istio and Envoy Gateway do.

    ``poll`` is cheap (a ``stat`` per file), so the server calls it on every TLS handshake:
    a rotated certificate (a Kubernetes Secret volume swaps a symlink; ``stat`` follows it)
    serves the next connection. Files caught half-written, or a key that does not match its
    certificate yet, keep the last good material until a later change completes them.
    """

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        self._stamp = self._stat()
        self.current = files.load()
        self._failed_stamp: tuple[tuple[int, ...], ...] | None = None

    def _stat(self) -> tuple[tuple[int, ...], ...]:
        stamps: list[tuple[int, ...]] = []
        for path in self.files.paths:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((-1,))
                continue
            stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return tuple(stamps)

    def poll(self) -> TlsMaterial | None:
        """New material when the files changed and are usable; ``None`` to keep the current."""
        stamp = self._stat()
        if stamp == self._stamp:
            return None
        try:
            material = self.files.load()
        except TlsConfigError as exc:
            if stamp != self._failed_stamp:  # once per change, not once per handshake
                self._failed_stamp = stamp
                log.warning("xDS TLS files changed but cannot be used yet (%s); keeping the previous", exc)
            return None
        self._stamp, self.current = stamp, material
        log.info("xDS TLS files reloaded cert=%s client_ca=%s", self.files.cert, self.files.client_ca or "-")
        return material


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerIdentity:
    """What a verified client certificate proves."""

    namespace: str
    service_account: str = ""
    """From a SPIFFE ID; empty for the DNS form."""
    source: str
    """The SAN it was read from, for logs (``spiffe://…`` or ``dns:…``)."""


def peer_identity(cert_pem: bytes, *, trust_domain: str | None = None) -> PeerIdentity:
    """The namespace ``cert_pem`` proves (see the module docstring for the two forms).

    Raises ``PeerIdentityError`` when it proves none, or names several namespaces.
    """
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerIdentityError("the client certificate has no subjectAltName") from None
    except ValueError as exc:
        raise PeerIdentityError(f"the client certificate cannot be read: {exc}") from exc
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]
    if uris:
        return _one(_from_spiffe(uri, trust_domain) for uri in uris)
    if trust_domain is not None:
        raise PeerIdentityError(f"the client certificate has no SPIFFE ID of trust domain {trust_domain}")
    found = [p for p in (_from_dns(name) for name in san.get_values_for_type(x509.DNSName)) if p]
    if not found:
        raise PeerIdentityError(
            "the client certificate names no namespace: expected a URI SAN spiffe://DOMAIN/ns/NS/sa/SA "
            "or a DNS SAN NAME.NS.svc[.CLUSTER_DOMAIN]"
        )
    return _one(found)


def _from_spiffe(uri: str, trust_domain: str | None) -> PeerIdentity:
    domain, _, path = uri.removeprefix("spiffe://").partition("/")
    match = _SPIFFE_PATH.fullmatch("/" + path)
    if not domain or match is None or not _DNS_LABEL.fullmatch(match[1]):
        raise PeerIdentityError(f"{uri} is not a SPIFFE ID of the form spiffe://DOMAIN/ns/NS/sa/SA")
    if trust_domain is not None and domain != trust_domain:
        raise PeerIdentityError(f"{uri} is not of trust domain {trust_domain}")
    return PeerIdentity(namespace=match[1], service_account=match[2], source=uri)


def _from_dns(name: str) -> PeerIdentity | None:
    labels = name.lower().split(".")
    if len(labels) < 3 or labels[2] != "svc" or not all(_DNS_LABEL.fullmatch(x) for x in labels[:2]):
        return None
    return PeerIdentity(namespace=labels[1], source=f"dns:{name}")


def _one(found: Iterable[PeerIdentity]) -> PeerIdentity:
    peers = list(found)
    namespaces = sorted({p.namespace for p in peers})
    if len(namespaces) > 1:
        raise PeerIdentityError(f"the client certificate names several namespaces: {', '.join(namespaces)}")
    return peers[0]


def refusal(peer: PeerIdentity, claimed: ProxyIdentity) -> str | None:
    """Why a stream claiming ``claimed`` must be refused to ``peer``; ``None`` if it may proceed."""
    if claimed.namespace != peer.namespace:
        return (
            f"node.metadata.namespace {claimed.namespace!r} is not the namespace {peer.namespace!r} "
            f"of the client certificate ({peer.source})"
        )
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class XdsSecurity:
    """How xDS is served and what an unauthenticated stream may receive."""

    tls: TlsFiles | None = None
    """``None``: plaintext."""
    trust_domain: str | None = None
    """With mTLS: the SPIFFE trust domain client certificates must carry (``None``: any)."""
    allow_insecure_secrets: bool = False
    """Serve private keys to streams whose identity no certificate proves (plaintext or TLS
    without a client CA). Off: those streams get public Secrets (CA bundles) only."""

    @property
    def transport(self) -> XdsTransport:
        if self.tls is None:
            return XdsTransport.PLAINTEXT
        return XdsTransport.MTLS if self.tls.client_ca else XdsTransport.TLS

    @property
    def withholds_secrets(self) -> bool:
        return self.transport is not XdsTransport.MTLS and not self.allow_insecure_secrets


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (or ``[v6]:port``) binds only the loopback interface."""
    host = address.rpartition(":")[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname may resolve anywhere


def is_public_secret(resource: CachedResource) -> bool:
    """Only a validation context (a CA bundle) is public; certificates with keys, session ticket
    keys and generic secrets are not. Unparseable bytes count as private (fail closed)."""
    secret = secret_pb2.Secret()
    try:
        secret.ParseFromString(resource.any.value)
    except Exception:
        return False
    return bool(secret.WhichOneof("type") == "validation_context")


def without_private_secrets(snapshot: Snapshot) -> tuple[Snapshot, tuple[str, ...]]:
    """``snapshot`` minus its private Secrets, and their names; the same object if it has none."""
    secrets = snapshot.get(TYPE_SECRET)
    withheld = tuple(sorted(name for name, r in secrets.items() if not is_public_secret(r)))
    if not withheld:
        return snapshot, ()
    kept: dict[str, Mapping[str, CachedResource]] = {t: snapshot.get(t) for t in PUSH_ORDER}
    kept[TYPE_SECRET] = MappingProxyType({n: r for n, r in secrets.items() if n not in withheld})
    return Snapshot(resources=kept), withheld
