"""The Istio build context: where a message points, and what a build reports."""

from __future__ import annotations

from meshxds import ir
from meshxds.conditions import Level, ObjectKey
from meshxds.model import istio
from meshxds.model.manifests import ResourceSet, SourcedDocument, parse_documents
from meshxds.translators.istio.clusters import ClusterBuilder
from meshxds.translators.istio.context import At, BuildContext
from meshxds.translators.istio.messages import SCHEMA_VALIDATION_ERROR, UNSUPPORTED_FEATURE
from meshxds.translators.istio.registry import ServiceRegistry

GATEWAY = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "Gateway",
    "metadata": {"name": "gw", "namespace": "edge"},
    "spec": {
        "selector": {"app": "gw"},
        "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
    },
}


def _resources() -> ResourceSet:
    return parse_documents([SourcedDocument(path="gw.yaml", index=0, body=GATEWAY)])


def _build(resources: ResourceSet) -> BuildContext:
    registry = ServiceRegistry(resources)
    return BuildContext(
        proxy_namespace="edge",
        proxy_labels={"app": "gw"},
        registry=registry,
        clusters=ClusterBuilder(resources, registry, "edge"),
        secrets={},
        listener_address="0.0.0.0",
    )


def test_at_names_the_object_as_meshxds_prints_it() -> None:
    (gateway,) = _resources().all(istio.Gateway)
    at = At.of(gateway, "spec.servers[0]")
    assert at.object == ObjectKey(
        kind="Gateway", namespace="edge", name="gw", ref="Gateway.networking.istio.io/edge/gw"
    )
    assert at.sub(".tls").sub(".mode").field == "spec.servers[0].tls.mode"
    assert at.field == "spec.servers[0]"  # sub() never changes its receiver


def test_at_source_names_a_registered_services_object() -> None:
    at = At.source(ir.ObjectRef(kind="ServiceEntry", namespace="default", name="api"))
    assert at.object == ObjectKey(
        kind="ServiceEntry", namespace="default", name="api", ref="ServiceEntry/default/api"
    )
    assert at.field == ""


def test_a_build_reports_records_with_their_level() -> None:
    resources = _resources()
    (gateway,) = resources.all(istio.Gateway)
    build = _build(resources)
    at = At.of(gateway, "spec.servers[0]")
    build.error(at.sub(".tls"), SCHEMA_VALIDATION_ERROR, "an HTTPS server needs tls")
    build.warn(None, UNSUPPORTED_FEATURE, "port 80: shared")
    error, warning = build.messages
    assert (error.level, error.type.code, error.field) == (Level.ERROR, "IST0106", "spec.servers[0].tls")
    assert error.object is not None and error.object.name == "gw"
    assert (warning.level, warning.object, warning.field) == (Level.WARNING, None, "")
