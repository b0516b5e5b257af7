"""IstioTranslator costs nothing on a Gateway-API-only mesh: the service registry is built only
when an Istio gateway or a sidecar needs it."""

from __future__ import annotations

from typing import Any

from meshxds.identity import ProxyIdentity
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.options import GATEWAY_NAME_LABEL
from meshxds.pipeline import SnapshotBuilder, translate
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs
from meshxds.xds.render import snapshot_to_json


def _gateway_api_only() -> list[SourcedDocument]:
    docs = [
        *gateway_api_docs([gateway_listener(8080)]),
        *routed_service_docs("web", upstream_port=9000, hostnames=["web.example.com"]),
    ]
    return [SourcedDocument(path="mesh.yaml", index=i, body=d) for i, d in enumerate(docs)]


def _sidecar_snapshot(virtual_service: dict[str, object]) -> dict[str, Any]:
    """The default namespace's sidecar config, as JSON, with ``virtual_service`` beside the mesh."""
    docs = [d.body for d in _gateway_api_only()]
    docs.append(virtual_service)
    translation = translate(
        parse_documents(SourcedDocument(path="m.yaml", index=i, body=d) for i, d in enumerate(docs))
    )
    return snapshot_to_json(SnapshotBuilder(translation)(ProxyIdentity.of(namespace="default")))


def _virtual_service(http: list[dict[str, object]]) -> dict[str, object]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"hosts": ["web"], "http": http},
    }


def test_gateway_api_proxies_never_build_the_registry() -> None:
    translation = translate(parse_documents(_gateway_api_only()))
    assert not translation.istio.has_config
    gateway = ProxyIdentity.of(namespace="gateway-system", labels={GATEWAY_NAME_LABEL: "http"})
    config = translation.config_for(gateway)
    assert [lis.name for lis in config.listeners] == ["0.0.0.0_8080"]
    assert translation.istio._registry is None


def test_a_sidecar_still_gets_every_service() -> None:
    translation = translate(parse_documents(_gateway_api_only()))
    config = translation.config_for(ProxyIdentity.of(namespace="default"))
    assert [c.name for c in config.clusters] == ["outbound|8080||web.default.svc.cluster.local"]
    assert translation.istio._registry is not None


def test_a_virtualservice_retry_backoff_is_the_routes_base_interval() -> None:
    snapshot = _sidecar_snapshot(
        _virtual_service(
            [
                {
                    "route": [{"destination": {"host": "web"}}],
                    "retries": {"attempts": 3, "retryOn": "503", "backoff": "50ms"},
                }
            ]
        )
    )
    policies = [
        route["route"]["retry_policy"]
        for config in snapshot["routes"]
        for vhost in config["virtual_hosts"]
        for route in vhost["routes"]
        if "web.default" in vhost["name"] and "retry_policy" in route.get("route", {})
    ]
    assert policies, snapshot["routes"]
    for policy in policies:
        assert policy["num_retries"] == 3 and policy["retriable_status_codes"] == [503]
        assert policy["retry_back_off"] == {"base_interval": "0.050s", "max_interval": "0.500s"}


def test_a_direct_response_given_as_bytes_answers_those_bytes() -> None:
    snapshot = _sidecar_snapshot(
        _virtual_service(
            [
                {
                    "match": [{"uri": {"exact": "/binary"}}],
                    "directResponse": {"status": 200, "body": {"bytes": "AP9oaQo="}},
                },
                {"directResponse": {"status": 503, "body": {"string": "down"}}},
            ]
        )
    )
    bodies = [
        route["direct_response"]["body"]
        for config in snapshot["routes"]
        for vhost in config["virtual_hosts"]
        for route in vhost["routes"]
        if "web.default" in vhost["name"] and "direct_response" in route
    ]
    # The proto's JSON form prints inline_bytes as base64 again: the decoded b"\x00\xffhi\n".
    assert bodies == [{"inline_bytes": "AP9oaQo="}, {"inline_string": "down"}]
