"""Parsing is validation: manifests → typed objects, or errors naming file, object and field."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from meshxds.errors import ManifestError, ManifestErrors
from meshxds.model import core, gatewayapi
from meshxds.model.base import unknown_fields, validate_known
from meshxds.model.manifests import KINDS, ResourceSet, SourcedDocument, parse_document, parse_documents


def service(name: str = "nginx", namespace: str | None = "default", **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": spec or {"ports": [{"port": 80}]},
    }


def doc(body: Any, *, path: str = "dir/app.yaml", index: int = 0) -> SourcedDocument:
    return SourcedDocument(path=path, index=index, body=body)


def only_error(body: Any, *, index: int = 0) -> ManifestError:
    with pytest.raises(ManifestErrors) as info:
        parse_documents([doc(body, index=index)])
    (error,) = info.value.errors
    return error


# --- errors name file, object and field ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "index", "file", "ref", "field_path", "message"),
    [
        pytest.param(
            service(ports=[{"port": "eighty"}]),
            0,
            "dir/app.yaml",
            "Service/default/nginx",
            "spec.ports[0].port",
            "valid integer",
            id="wrong type names the list index",
        ),
        pytest.param(
            service(ports=[{"port": 80}, {"port": 70000}]),
            0,
            "dir/app.yaml",
            "Service/default/nginx",
            "spec.ports[1].port",
            "65535",
            id="out of range port",
        ),
        pytest.param(
            service(ports=[{"port": 80, "protocol": "QUIC"}]),
            2,
            "dir/app.yaml#2",
            "Service/default/nginx",
            "spec.ports[0].protocol",
            "TCP",
            id="later document in a file carries its index",
        ),
        pytest.param(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "r", "namespace": "apps"},
                "spec": {"rules": [{"backendRefs": [{"name": "svc", "port": 80, "weight": -1}]}]},
            },
            0,
            "dir/app.yaml",
            "HTTPRoute/apps/r",
            "spec.rules[0].backendRefs[0].weight",
            "greater than or equal to 0",
            id="camelCase field path in nested lists",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "x"}},
            0,
            "dir/app.yaml",
            "Service/x/?",
            "metadata.name",
            "Field required",
            id="missing name",
        ),
        pytest.param(
            {"kind": "Service", "metadata": {"name": "a", "namespace": "b"}},
            0,
            "dir/app.yaml",
            "Service/b/a",
            "apiVersion",
            "apiVersion is required",
            id="missing apiVersion",
        ),
        pytest.param(
            {"apiVersion": "v1", "metadata": {"name": "a", "namespace": "b"}},
            0,
            "dir/app.yaml",
            "?/b/a",
            "kind",
            "kind is required",
            id="missing kind",
        ),
        pytest.param(
            {"apiVersion": "gateway.networking.k8s.io/v9", "kind": "Gateway", "metadata": {"name": "g"}},
            0,
            "dir/app.yaml",
            "Gateway/g",
            "apiVersion",
            "v9",
            id="unsupported version of a known kind",
        ),
        pytest.param(
            ["not", "a", "mapping"],
            0,
            "dir/app.yaml",
            "",
            "",
            "must be a mapping",
            id="document is not a mapping",
        ),
    ],
)
def test_malformed_manifest_names_file_object_and_field(
    body: Any, index: int, file: str, ref: str, field_path: str, message: str
) -> None:
    error = only_error(body, index=index)
    assert (error.path, error.ref, error.field_path) == (file, ref, field_path)
    assert message in error.message
    assert error.as_dict() == {"file": file, "object": ref, "field": field_path, "message": error.message}
    for part in (file, ref, field_path):
        assert part in str(error)


def test_several_problems_in_one_object_are_all_mentioned() -> None:
    error = only_error(service(ports=[{"port": "x"}, {"port": 0}]))
    assert error.field_path == "spec.ports[0].port"
    assert "spec.ports[1].port" in error.message


def test_validation_error_is_chained() -> None:
    error = only_error(service(ports=[{"port": "x"}]))
    assert isinstance(error.__cause__, pydantic.ValidationError)


def test_all_errors_of_a_read_are_reported_at_once() -> None:
    docs = [
        doc(service("a", ports=[{"port": "x"}]), path="one.yaml"),
        doc(service("ok"), path="one.yaml", index=1),
        doc({"apiVersion": "v1"}, path="two.yaml"),
        doc(service("b", ports=[{"port": 0}]), path="three.yaml"),
    ]
    with pytest.raises(ManifestErrors) as info:
        parse_documents(docs)
    assert [(e.path, e.ref) for e in info.value.errors] == [
        ("one.yaml", "Service/default/a"),
        ("two.yaml", "?/?"),
        ("three.yaml", "Service/default/b"),
    ]
    assert str(info.value).count("\n") == 2, "one line per error"


# --- duplicates, defaults, ignored kinds, unknown fields ------------------------------------------


def test_duplicates_are_errors_naming_both_places() -> None:
    docs = [doc(service("web"), path="a.yaml"), doc(service("web", namespace=None), path="b.yaml", index=3)]
    with pytest.raises(ManifestErrors) as info:
        parse_documents(docs)
    (error,) = info.value.errors
    assert (error.path, error.ref) == ("b.yaml#3", "Service/default/web")
    assert "defined twice (first in a.yaml)" in error.message


def test_same_name_in_other_namespace_or_kind_is_no_duplicate() -> None:
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "default"},
    }
    resources = parse_documents([doc(service("web")), doc(service("web", namespace="other")), doc(route)])
    assert len(resources) == 3


def test_namespace_defaults_to_default() -> None:
    resources = parse_documents([doc(service("web", namespace=None))])
    (svc,) = resources.all(core.Service)
    assert svc.namespace == "default"
    assert svc.ref == "Service/default/web"
    assert resources.origins == {"Service/default/web": "dir/app.yaml"}


def test_cluster_scoped_kinds_get_no_namespace() -> None:
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "meshxds"},
        "spec": {"controllerName": "meshxds.io/gateway-controller"},
    }
    obj, warnings = parse_document(doc(body))
    assert isinstance(obj, gatewayapi.GatewayClass)
    assert (obj.namespace, obj.ref, warnings) == ("", "GatewayClass/meshxds", [])


def test_unknown_kind_is_a_warning_not_an_error() -> None:
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa", "namespace": "apps"}}
    resources = parse_documents([doc(account), doc(service())])
    assert len(resources) == 1
    (warning,) = resources.warnings
    assert warning.startswith("dir/app.yaml: ServiceAccount/apps/sa: kind ServiceAccount of v1 is not read")


def test_known_kind_of_another_group_is_unknown() -> None:
    body = {"apiVersion": "example.com/v1", "kind": "Service", "metadata": {"name": "x"}}
    obj, warnings = parse_document(doc(body))
    assert obj is None
    assert "not read by meshxds" in warnings[0]


def test_unknown_fields_warn_with_their_path() -> None:
    body = service(ports=[{"port": 80, "colour": "blue"}], extraThing={"a": 1})
    body["status"] = {"loadBalancer": {}}  # status is ours to write: never a warning
    body["metadata"]["finalizers"] = ["x"]  # metadata extras are Kubernetes' business
    resources = parse_documents([doc(body)])
    prefix = "dir/app.yaml: Service/default/nginx: field"
    assert resources.warnings == (
        f"{prefix} spec.extraThing is not supported by meshxds; ignored",
        f"{prefix} spec.ports[0].colour is not supported by meshxds; ignored",
    )


def test_unknown_fields_deep_in_gateway_api_objects() -> None:
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "apps"},
        "spec": {"rules": [{"matches": [{"path": {"type": "Exact", "value": "/", "caseSensitive": False}}]}]},
    }
    obj, _ = parse_document(doc(body))
    assert obj is not None
    assert unknown_fields(obj) == ["spec.rules[0].matches[0].path.caseSensitive"]


HTTPROUTE = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "r", "namespace": "apps", "managedFields": [{"manager": "kubectl"}]},
    "spec": {
        "parentRefs": [{"name": "gw"}],
        "rules": [
            {
                "matches": [{"path": {"type": "Exact", "value": "/"}}],
                "backendRefs": [{"name": "s", "port": 80}],
            }
        ],
    },
    "status": {"parents": []},
}


def test_a_manifest_without_unknown_fields_validates_in_one_strict_pass() -> None:
    strict = validate_known(gatewayapi.HTTPRoute, HTTPROUTE)
    assert type(strict) is gatewayapi.HTTPRoute  # the very class, not a copy of it
    assert strict == gatewayapi.HTTPRoute.model_validate(HTTPROUTE)
    assert type(strict.spec.rules[0].matches[0].path) is type(
        gatewayapi.HTTPRoute.model_validate(HTTPROUTE).spec.rules[0].matches[0].path
    )


@pytest.mark.parametrize(
    "where",
    [
        lambda b: b.__setitem__("spex", {}),
        lambda b: b["spec"].__setitem__("hostname", "typo"),
        lambda b: b["spec"]["rules"][0]["matches"][0]["path"].__setitem__("caseSensitive", False),
        lambda b: b["spec"]["rules"][0]["backendRefs"][0].__setitem__("wieght", 1),
    ],
)
def test_an_unknown_field_anywhere_leaves_the_strict_pass_for_the_warning_path(where: Any) -> None:
    import copy

    body = copy.deepcopy(HTTPROUTE)
    where(body)
    assert validate_known(gatewayapi.HTTPRoute, body) is None
    obj, warnings = parse_document(doc(body))
    assert obj is not None and len(warnings) == 1 and "is not supported by meshxds" in warnings[0]


def test_an_invalid_manifest_leaves_the_strict_pass_and_reads_the_same_error() -> None:
    import copy

    body = copy.deepcopy(HTTPROUTE)
    body["spec"]["rules"][0]["backendRefs"][0]["port"] = "eighty"
    assert validate_known(gatewayapi.HTTPRoute, body) is None
    with pytest.raises(ManifestError, match="backendRefs"):
        parse_document(doc(body))


def test_the_strict_pass_leaves_the_models_own_validators_in_place() -> None:
    # The lenient models are still complete afterwards (their validators are not rebuilt).
    validate_known(core.Service, service())
    assert all(m.__pydantic_complete__ for m in KINDS.values())
    assert core.Service.model_validate(service(extra=1)).spec.__pydantic_extra__ == {"extra": 1}


def test_pod_details_beyond_routing_are_not_warned_about() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"podIP": "10.0.0.1", "phase": "Running"},
    }
    obj, warnings = parse_document(doc(pod))
    assert isinstance(obj, core.Pod)
    assert (obj.spec.node_name, obj.status.pod_ip, warnings) == ("n1", "10.0.0.1", [])


def test_empty_documents_are_skipped() -> None:
    assert len(parse_documents([doc(None), doc(service(), index=1), doc(None, index=2)])) == 1


# --- the typed model ------------------------------------------------------------------------------


def test_camel_case_aliases_and_frozen_objects() -> None:
    obj, _ = parse_document(
        doc(service(ports=[{"name": "h", "port": 8080, "appProtocol": "http2", "targetPort": 80}]))
    )
    assert isinstance(obj, core.Service)
    port = obj.port(8080)
    assert port is not None
    assert (port.app_protocol, port.target_port, port.protocol) == ("http2", 80, "TCP")
    assert obj.port(9999) is None
    with pytest.raises(pydantic.ValidationError):
        port.port = 1


def test_endpoint_slice_readiness_and_service_name() -> None:
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "s", "namespace": "default", "labels": {"kubernetes.io/service-name": "nginx"}},
        "addressType": "IPv4",
        "ports": [{"port": 9080}],
        "endpoints": [
            {"addresses": ["10.0.0.1"]},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
            {"addresses": ["10.0.0.3"], "conditions": {"ready": False}},
        ],
    }
    obj, warnings = parse_document(doc(body))
    assert isinstance(obj, core.EndpointSlice)
    assert obj.service_name == "nginx"
    assert [e.is_ready for e in obj.endpoints] == [True, True, False], "unknown readiness counts as ready"
    assert warnings == []


def test_reference_grant_reads_the_from_keyword() -> None:
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "g", "namespace": "backends"},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "apps"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    obj, warnings = parse_document(doc(body))
    assert isinstance(obj, gatewayapi.ReferenceGrant)
    assert obj.spec.from_[0].namespace == "apps"
    assert warnings == []


def test_httproute_defaults_match_the_spec() -> None:
    body = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"}}
    obj, _ = parse_document(doc(body))
    assert isinstance(obj, gatewayapi.HTTPRoute)
    (rule,) = obj.spec.rules
    (match,) = rule.matches
    assert (match.path.type, match.path.value) == ("PathPrefix", "/")


def test_every_kind_is_registered_under_its_group() -> None:
    assert KINDS[("", "Service")] is core.Service
    assert KINDS[("discovery.k8s.io", "EndpointSlice")] is core.EndpointSlice
    assert KINDS[("gateway.networking.k8s.io", "HTTPRoute")] is gatewayapi.HTTPRoute


def test_resource_set_is_sorted_and_indexed() -> None:
    objects = [
        parse_document(doc(service(n, namespace=ns)))[0] for n, ns in [("b", "x"), ("a", "y"), ("a", "x")]
    ]
    resources = ResourceSet.of([o for o in objects if o is not None], warnings=["w"])
    assert [s.key for s in resources.all(core.Service)] == [("x", "a"), ("x", "b"), ("y", "a")]
    assert resources.get(core.Service, "y", "a") is objects[1]
    assert resources.get(core.Service, "y", "b") is None
    assert resources.all(gatewayapi.Gateway) == []
    assert [o.key for o in resources] == [("x", "a"), ("x", "b"), ("y", "a")]
    assert resources.warnings == ("w",)


@pytest.mark.parametrize(
    ("where", "name"),
    [("set", ":authority"), ("add", "x y"), ("set", "")],
)
def test_a_header_name_the_crd_refuses_is_an_error_with_its_path(where: str, name: str) -> None:
    import copy

    body = copy.deepcopy(HTTPROUTE)
    modifier = {where: [{"name": name, "value": "v"}]}
    body["spec"]["rules"][0]["filters"] = [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": modifier}
    ]
    with pytest.raises(ManifestError) as raised:
        parse_document(doc(body))
    assert raised.value.field_path == f"spec.rules[0].filters[0].requestHeaderModifier.{where}[0].name"


def test_header_names_the_crd_allows_parse() -> None:
    import copy

    body = copy.deepcopy(HTTPROUTE)
    modifier = {"set": [{"name": "Host", "value": "v"}], "remove": ["x-a_b.c~"]}
    body["spec"]["rules"][0]["filters"] = [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": modifier}
    ]
    obj, _ = parse_document(doc(body))
    assert obj is not None
