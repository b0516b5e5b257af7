"""HTTP/2 connection reuse across hosts with Istio Gateways (Istio #9429 / #13589), real Envoy.

Three HTTPS servers share one port: ``a.example.com`` and ``b.example.com`` (two servers, two
Gateways even) name the same ``credentialName``; ``other.example.org`` has its own. A browser
reuses a connection made with SNI ``a.example.com`` for every host the certificate covers:

- ``b.example.com`` shares the TLS settings → one filter chain → the reused connection reaches
  b's route (never 404);
- ``other.example.org`` has other settings → 421 Misdirected Request on a's connection (never
  404), and a fresh connection with its SNI works.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from istio_support import (
    PortReservation,
    Stack,
    backend,
    gateway,
    run_stack,
    server,
    virtual_service,
    write_manifests,
)

from meshxds.testing.certs import CertificateAuthority, issue, make_ca, tls_secret_manifest
from meshxds.testing.h2tls import H2TlsConnection
from meshxds.testing.ports import wait_until
from meshxds.testing.upstreams import H2cOnlyServer, Http1OnlyServer

PROXY_NS = "istio-system"


@dataclass
class Reuse:
    stack: Stack
    port: int
    ca: CertificateAuthority
    a: H2cOnlyServer
    b: Http1OnlyServer
    other: H2cOnlyServer

    def connect(self, sni: str) -> H2TlsConnection:
        return H2TlsConnection("127.0.0.1", self.port, server_name=sni, ca_pem=self.ca.cert_pem)


def _https(port: int, host: str, credential: str, name: str) -> dict[str, Any]:
    return server(port, "HTTPS", [host], name=name, tls={"mode": "SIMPLE", "credentialName": credential})


def manifests(port: int, ca: CertificateAuthority, real: dict[str, int]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        # a and b in two Gateways (two teams), same credential; other in a's Gateway.
        gateway(
            "gw-a",
            "team-a",
            [
                _https(port, "a.example.com", "shared-cert", "https-a"),
                _https(port, "other.example.org", "other-cert", "https-other"),
            ],
        ),
        gateway("gw-b", "team-b", [_https(port, "b.example.com", "shared-cert", "https-b")]),
        tls_secret_manifest("shared-cert", PROXY_NS, issue(ca, ["*.example.com"])),
        tls_secret_manifest("other-cert", PROXY_NS, issue(ca, ["other.example.org"])),
        *backend("a", "team-a", port=80, upstream_port=real["a"], app_protocol="http2"),
        *backend("b", "team-b", port=80, upstream_port=real["b"]),
        *backend("other", "team-a", port=80, upstream_port=real["other"], port_name="http2-other"),
    ]
    for name, namespace, host, gw in (
        ("a", "team-a", "a.example.com", "team-a/gw-a"),
        ("b", "team-b", "b.example.com", "team-b/gw-b"),
        ("other", "team-a", "other.example.org", "team-a/gw-a"),
    ):
        docs.append(
            virtual_service(
                name,
                namespace,
                {"hosts": [host], "gateways": [gw], "http": [{"route": [{"destination": {"host": name}}]}]},
            )
        )
    return docs


@pytest.fixture
def reuse(tmp_path: Path, manifest_dir: Path, harness_processes: list[Any]) -> Iterator[Reuse]:
    ca = make_ca()
    with (
        PortReservation(1) as reserved,
        H2cOnlyServer(name="a") as a,
        Http1OnlyServer(name="b") as b,
        H2cOnlyServer(name="other") as other,
    ):
        port = reserved.ports[0]
        write_manifests(manifest_dir, manifests(port, ca, {"a": a.port, "b": b.port, "other": other.port}))
        with run_stack(
            tmp_path,
            manifest_dir,
            namespace=PROXY_NS,
            listener_ports=[port],
            reserved=reserved,
            processes=harness_processes,
        ) as stack:
            state = Reuse(stack=stack, port=port, ca=ca, a=a, b=b, other=other)

            def serving() -> bool:
                with state.connect("a.example.com") as conn:
                    return conn.request(authority="a.example.com").status == 200

            wait_until(serving, timeout=15, what="HTTPS listener serving a.example.com")
            a.reset()
            yield state


def test_one_filter_chain_for_the_shared_credential(reuse: Reuse) -> None:
    dump = reuse.stack.envoy.config_dump()
    listeners = next(c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump"))
    listener = next(
        item["active_state"]["listener"]
        for item in listeners["dynamic_listeners"]
        if item["name"] == f"127.0.0.1_{reuse.port}"
    )
    by_names = sorted(
        tuple(chain.get("filter_chain_match", {}).get("server_names", []))
        for chain in listener["filter_chains"]
    )
    assert by_names == [("a.example.com", "b.example.com"), ("other.example.org",)]


def test_reused_connection_reaches_the_host_sharing_the_credential(reuse: Reuse) -> None:
    with reuse.connect("a.example.com") as conn:
        assert conn.negotiated_alpn == "h2"
        assert "*.example.com" in conn.peer_certificate_sans()
        assert conn.request(authority="a.example.com").status == 200
        reused = conn.request(path="/b", authority="b.example.com")
        assert reused.status == 200, reused.text
        assert reused.headers.get("x-upstream-name") == "b"
        first_port = conn.local_port
        assert conn.request(authority="a.example.com").headers.get("x-upstream-name") == "a"
        assert conn.local_port == first_port
    assert (reuse.a.requests, reuse.b.requests) == (2, 1)


def test_host_with_another_credential_gets_421_never_404(reuse: Reuse) -> None:
    with reuse.connect("a.example.com") as conn:
        misdirected = conn.request(authority="other.example.org")
        assert misdirected.status == 421, misdirected.text
        assert conn.request(authority="a.example.com").status == 200  # the connection stays usable
    assert reuse.other.requests == 0
    with reuse.connect("other.example.org") as conn:
        assert conn.peer_certificate_sans() == ["other.example.org"]
        assert conn.request(authority="other.example.org").status == 200
        # And the other way round: the shared certificate's hosts are misdirected here.
        assert conn.request(authority="b.example.com").status == 421
        assert conn.request(authority="a.example.com").status == 421
    assert reuse.other.requests == 1


def test_host_no_server_names_is_404(reuse: Reuse) -> None:
    with reuse.connect("a.example.com") as conn:
        assert conn.request(authority="nobody.example.net").status == 404
