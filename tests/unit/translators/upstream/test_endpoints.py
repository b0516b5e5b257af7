"""EndpointIndex: a cluster without a subset gets what the labelled endpoints give, each address
once, without reading Pod labels."""

from __future__ import annotations

from typing import Any

from meshxds import ir
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.translators.upstream import EndpointIndex


def _slice(name: str, endpoints: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "endpoints": endpoints,
        **extra,
    }


def _pod(name: str, version: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"version": version}},
    }


def _index() -> EndpointIndex:
    ports = [{"name": "http", "port": 8080}]
    docs = [
        _pod("a", "v1"),
        _pod("b", "v2"),
        # One address behind two Pods (labels differ): one endpoint without a subset.
        _slice(
            "web-1",
            [
                {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "a"}},
                {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "b"}},
                {"addresses": ["10.0.0.9"], "conditions": {"ready": False}},
            ],
            ports=ports,
        ),
        _slice("web-2", [{"addresses": ["10.0.0.1", "not-an-ip"]}], ports=ports),
        _slice("web-3", [{"addresses": ["10.0.0.3"]}]),  # no ports: the Service's targetPort
        _slice("web-4", [{"addresses": ["web.example.com"]}], addressType="FQDN", ports=ports),
    ]
    resources = parse_documents(SourcedDocument(path="m.yaml", index=i, body=d) for i, d in enumerate(docs))
    return EndpointIndex(resources)


def test_every_ready_ip_once_in_address_order() -> None:
    index = _index()
    key = ir.EndpointKey(namespace="default", service="web", port_name="http", target_port=9000)
    assert index.endpoints(key) == (
        ir.LbEndpoint(address="10.0.0.1", port=8080),
        ir.LbEndpoint(address="10.0.0.2", port=8080),
        ir.LbEndpoint(address="10.0.0.3", port=9000),
    )
    labelled = index.labelled("default", "web", "http", 9000)
    assert index.endpoints(key) == tuple(sorted({e.endpoint for e in labelled}))


def test_a_subset_selects_by_pod_labels() -> None:
    key = ir.EndpointKey(
        namespace="default", service="web", port_name="http", target_port=9000, subset=(("version", "v2"),)
    )
    assert _index().endpoints(key) == (ir.LbEndpoint(address="10.0.0.2", port=8080),)
