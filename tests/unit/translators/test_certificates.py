"""A TLS Secret is checked as Envoy will load it: what Envoy refuses never reaches a listener.

Each case is also given to the real Envoy (``envoy --mode validate``), so the rule and Envoy's
verdict cannot drift apart (issue 10: config Envoy rejects, reported as fine)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from meshxds.testing.certs import SigningKey, issue, make_ca, private_key_pem, self_signed
from meshxds.testing.envoy_validate import validate_bootstrap
from meshxds.translators.certificates import certificate_problem


def pair(make: Callable[[], SigningKey]) -> tuple[bytes, bytes]:
    key = make()
    return self_signed(key), private_key_pem(key)


def mismatched() -> tuple[bytes, bytes]:
    chain, _ = pair(lambda: ec.generate_private_key(ec.SECP256R1()))
    return chain, private_key_pem(ec.generate_private_key(ec.SECP256R1()))


def ca_issued() -> tuple[bytes, bytes]:
    leaf = issue(make_ca(), ["web.example.com"])
    return leaf.chain_pem, leaf.key_pem


def ca_first() -> tuple[bytes, bytes]:
    ca = make_ca()
    leaf = issue(ca, ["web.example.com"])
    return ca.cert_pem + leaf.cert_pem, leaf.key_pem  # the leaf is not first


CASES: dict[str, tuple[Callable[[], tuple[bytes, bytes]], str | None]] = {
    "rsa-2048": (lambda: pair(lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)), None),
    "rsa-4096": (lambda: pair(lambda: rsa.generate_private_key(public_exponent=65537, key_size=4096)), None),
    "p-256": (lambda: pair(lambda: ec.generate_private_key(ec.SECP256R1())), None),
    "p-384": (lambda: pair(lambda: ec.generate_private_key(ec.SECP384R1())), None),
    "p-521": (lambda: pair(lambda: ec.generate_private_key(ec.SECP521R1())), None),
    "ed25519": (lambda: pair(ed25519.Ed25519PrivateKey.generate), None),
    "leaf-then-ca": (ca_issued, None),
    "rsa-1024": (
        lambda: pair(lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024)),
        "1024-bit RSA key; Envoy needs 2048 bits or more",
    ),
    "secp256k1": (
        lambda: pair(lambda: ec.generate_private_key(ec.SECP256K1())),
        "ECDSA key on secp256k1",
    ),
    "mismatched": (mismatched, "does not match"),
    "ca-first": (ca_first, "does not match"),
}


def bootstrap(chain: bytes, key: bytes) -> dict[str, Any]:
    tls = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
        "common_tls_context": {
            "tls_certificates": [
                {
                    "certificate_chain": {"inline_bytes": base64.b64encode(chain).decode()},
                    "private_key": {"inline_bytes": base64.b64encode(key).decode()},
                }
            ]
        },
    }
    tcp = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": "t",
        "cluster": "c",
    }
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "tls",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [
                        {
                            "filters": [{"name": "tcp", "typed_config": tcp}],
                            "transport_socket": {"name": "tls", "typed_config": tls},
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "c",
                    "type": "STATIC",
                    "load_assignment": {"cluster_name": "c", "endpoints": [{"lb_endpoints": [endpoint]}]},
                }
            ],
        }
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_key_is_refused_exactly_when_envoy_refuses_it(case: str, tmp_path: Path) -> None:
    make, expected = CASES[case]
    chain, key = make()
    problem = certificate_problem(chain, key)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and expected in problem
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap(chain, key)))
    verdict = validate_bootstrap(path)
    assert (verdict.returncode == 0) == (problem is None), verdict.stderr[-500:]


def test_text_that_is_not_pem_is_refused() -> None:
    chain, key = pair(lambda: ec.generate_private_key(ec.SECP256R1()))
    assert "not a PEM certificate" in (certificate_problem(b"nonsense", key) or "")
    assert "not an unencrypted PEM private key" in (certificate_problem(chain, b"nonsense") or "")
