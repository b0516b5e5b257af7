"""An Istio Gateway server's protocol is classified by ``protocol.py`` (case-insensitively, as
Istio parses it): HTTP kinds get the connection manager, plain-TCP kinds a TCP proxy, the rest an
error."""

from __future__ import annotations

from typing import Any

import pytest

from meshxds.identity import ProxyIdentity
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.translators.istio import IstioConfig, IstioTranslator

SELECTOR = {"istio": "ingressgateway"}


def _config(protocol: str) -> IstioConfig:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]},
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
            "spec": {
                "selector": SELECTOR,
                "servers": [{"port": {"number": 8080, "name": "p", "protocol": protocol}, "hosts": ["*"]}],
            },
        },
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "hosts": ["*"],
                "gateways": ["gw"],
                "http": [{"route": [{"destination": {"host": "web", "port": {"number": 80}}}]}],
                "tcp": [{"route": [{"destination": {"host": "web", "port": {"number": 80}}}]}],
            },
        },
    ]
    resources = parse_documents(SourcedDocument(path="m.yaml", index=i, body=d) for i, d in enumerate(docs))
    identity = ProxyIdentity.of(namespace="default", labels=SELECTOR)
    return IstioTranslator(resources).config_for(identity, sidecar=False)


@pytest.mark.parametrize("protocol", ["HTTP", "http", "HTTP2", "GRPC", "grpc-web"])
def test_http_kinds_get_the_connection_manager(protocol: str) -> None:
    config = _config(protocol)
    assert not config.errors
    (listener,) = config.config.listeners
    assert all(chain.route_table is not None for chain in listener.chains)


@pytest.mark.parametrize(
    ("protocol", "warns"),
    [("TCP", False), ("tcp", False), ("MONGO", True), ("Redis", True), ("mysql", True)],
)
def test_plain_tcp_kinds_get_a_tcp_proxy(protocol: str, warns: bool) -> None:
    config = _config(protocol)
    assert not config.errors
    (listener,) = config.config.listeners
    assert [c.tcp_backends[0].cluster for c in listener.chains] == [
        "outbound|80||web.default.svc.cluster.local"
    ]
    assert any("is proxied as plain TCP" in str(w) for w in config.warnings) is warns


@pytest.mark.parametrize("protocol", ["HTTP_PROXY", "UDP", "QUIC"])
def test_other_protocols_are_not_served(protocol: str) -> None:
    config = _config(protocol)
    assert not config.config.listeners
    assert [e for e in config.errors if str(e).endswith(f"port.protocol: {protocol} is not supported")]
