"""What the Istio translator reports, as records: the object, the field, the level, Istio's
code where one matches (``translators/istio/messages.py``)."""

from __future__ import annotations

import re
from typing import Any

from meshxds.conditions import AnalysisMessage, Level, MessageType
from meshxds.identity import ProxyIdentity
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.translators.istio import IstioTranslator, messages

GATEWAY: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "edge", "namespace": "istio-system"},
    "spec": {
        "selector": {"istio": "edge"},
        "servers": [
            {
                "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                "hosts": ["*"],
                "tls": {"mode": "SIMPLE", "credentialName": "missing-cert"},
            },
            {
                "port": {"number": 8443, "name": "https-mesh", "protocol": "HTTPS"},
                "hosts": ["*"],
                "tls": {"mode": "ISTIO_MUTUAL"},
            },
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]},
        ],
    },
}
VIRTUAL_SERVICE: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "web", "namespace": "istio-system"},
    "spec": {
        "hosts": ["web.example.com"],
        "gateways": ["edge"],
        "http": [
            {"match": [{"uri": {"regex": "("}}], "route": [{"destination": {"host": "web"}}]},
            {"route": [{"destination": {"host": "nowhere.example.com", "port": {"number": 80}}}]},
        ],
    },
}
SERVICE_ENTRY: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "ServiceEntry",
    "metadata": {"name": "passthrough", "namespace": "default"},
    "spec": {"hosts": ["api.example.com"], "ports": [{"number": 443, "name": "tls", "protocol": "TLS"}]},
}


def check(*docs: dict[str, Any]) -> tuple[AnalysisMessage, ...]:
    resources = parse_documents(
        SourcedDocument(path="mesh.yaml", index=i, body=d) for i, d in enumerate(docs)
    )
    return IstioTranslator(resources).check()


def summary(found: tuple[AnalysisMessage, ...]) -> list[tuple[str, str, str, str]]:
    return [(m.level.value, m.type.code, m.object.ref if m.object else "", m.field) for m in found]


def test_gateway_and_virtual_service_problems_name_object_field_and_code() -> None:
    found = check(GATEWAY, VIRTUAL_SERVICE)
    gateway, vs = "Gateway.networking.istio.io/istio-system/edge", "VirtualService/istio-system/web"
    # In the order found: listeners by port (80 before 443), rules in order.
    assert summary(found) == [
        ("WARNING", "IST0101", vs, "spec.http[0].route[0]"),
        ("WARNING", "IST0101", vs, "spec.http[0]"),
        ("WARNING", "IST0122", vs, "spec.http[0].match[0]"),
        ("WARNING", "IST0101", vs, "spec.http[1].route[0]"),
        ("WARNING", "IST0101", vs, "spec.http[1]"),
        ("ERROR", "IST0101", gateway, "spec.servers[0].tls.credentialName"),
        ("ERROR", "MXD0001", gateway, "spec.servers[1].tls.mode"),
    ]
    secret = found[5]
    assert secret.type == messages.REFERENCED_RESOURCE_NOT_FOUND
    assert secret.object is not None
    assert (secret.object.kind, secret.object.namespace, secret.object.name) == (
        "Gateway",
        "istio-system",
        "edge",
    )
    assert secret.message == "Secret istio-system/missing-cert not found"
    assert found[3].message == "host nowhere.example.com is not a known service"


def test_the_upstream_layers_sentences_are_kept_whole() -> None:
    (entry,) = check(SERVICE_ENTRY)
    assert (entry.level, entry.type, entry.object, entry.field) == (
        Level.WARNING,
        messages.UNCLASSIFIED,
        None,
        "",
    )
    assert str(entry).startswith("ServiceEntry/default/passthrough: resolution NONE")


def test_a_proxy_config_carries_its_own_messages_by_level() -> None:
    resources = parse_documents(
        SourcedDocument(path="mesh.yaml", index=i, body=d) for i, d in enumerate((GATEWAY, VIRTUAL_SERVICE))
    )
    translator = IstioTranslator(resources)
    config = translator.config_for(
        ProxyIdentity.of(namespace="istio-system", labels={"istio": "edge"}), sidecar=True
    )
    assert [m.type.code for m in config.errors] == ["IST0101", "MXD0001"]
    assert all(m.level is Level.WARNING for m in config.warnings)
    assert len(config.messages) == len(config.errors) + len(config.warnings) == 7


def test_codes_are_istios_or_ours_and_each_names_one_type() -> None:
    types = [v for v in vars(messages).values() if isinstance(v, MessageType)]
    assert len({t.code for t in types}) == len(types) == len({t.name for t in types})
    assert all(re.fullmatch(r"(IST|MXD)\d{4}", t.code) for t in types)
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", t.name) for t in types)
