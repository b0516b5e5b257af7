"""A Service port as every frontend sees it (protocol decision, endpoint key), and the subsets of
its endpoints Istio's DestinationRules select."""

from __future__ import annotations

from typing import Any

from meshxds import ir
from meshxds.model import core
from meshxds.model.manifests import ResourceSet, SourcedDocument, parse_documents
from meshxds.translators.protocol import Protocol
from meshxds.translators.upstream import EndpointIndex, service_port


def _resources() -> ResourceSet:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080},
                    {"name": "api", "port": 90, "targetPort": "api", "appProtocol": "grpc"},
                ]
            },
        },
        *(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "labels": {"version": version}},
            }
            for name, version in (("a", "v1"), ("b", "v2"))
        ),
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "web-1",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "b"}},
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "a"}},
            ],
        },
    ]
    return parse_documents(SourcedDocument(path="m.yaml", index=i, body=d) for i, d in enumerate(docs))


def _service(resources: ResourceSet) -> core.Service:
    found = resources.get(core.Service, "default", "web")
    assert found is not None
    return found


def test_a_service_port_carries_its_protocol_decision_and_endpoint_key() -> None:
    resources = _resources()
    http, api = (service_port(_service(resources), i) for i in range(2))
    assert (http.number, http.name, http.protocol) == (80, "http", Protocol.HTTP)
    assert http.decision.source_field == "spec.ports[0].name"
    assert http.endpoint_key == ir.EndpointKey(
        namespace="default", service="web", port_name="http", target_port=8080
    )
    assert (api.protocol, api.decision.source_field) == (Protocol.GRPC, "spec.ports[1].appProtocol")
    # A named targetPort is found in the slices by the Service port's name.
    assert api.endpoint_key is not None and api.endpoint_key.target_port is None
    assert http.endpoints == ()  # no index given: the frontend reads endpoints by key


def test_a_subset_selects_endpoints_by_label_and_names_them_in_its_key() -> None:
    resources = _resources()
    port = service_port(_service(resources), 0, endpoints=EndpointIndex(resources))
    everything, key = port.subset({})
    assert [e.address for e in everything] == ["10.0.0.1", "10.0.0.2"]
    assert key == port.endpoint_key
    v2, v2_key = port.subset({"version": "v2"})
    assert [e.address for e in v2] == ["10.0.0.2"]
    assert v2_key is not None and v2_key.subset == (("version", "v2"),)
    # The key names the same endpoints the index gives for it (what the endpoint fast path reads).
    assert EndpointIndex(resources).endpoints(v2_key) == v2
    assert port.subset({"version": "v3"})[0] == ()
