"""The fake API server speaks what the official ``kubernetes`` client expects: discovery, list
with resourceVersion, watch streams (bookmarks, timeouts, 410), status writes with conflicts,
Leases, 404 for kinds without a CRD — driven here by the real client through a kubeconfig."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config

from meshxds.model.manifests import KINDS
from meshxds.testing.fake_apiserver import FakeApiServer, merge_patch, plural_of

GW = "gateway.networking.k8s.io"


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval_s=0.2) as api:
        yield api


@pytest.fixture
def api_client(fake: FakeApiServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    kubeconfig = fake.write_kubeconfig(tmp_path / "kubeconfig", token="t0ken")
    api = config.new_client_from_config(str(kubeconfig), persist_config=False)
    yield api
    api.close()


def route(name: str, namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec or {"hostnames": [f"{name}.example.com"]},
    }


def raw(response: Any) -> Any:
    return json.loads(response.data)


def watch_lines(response: Any, *, until: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Events read from a watch response (at most ``until``)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            events.append(json.loads(line))
            if len(events) >= until:
                response.close()
                return events
        if time.monotonic() > deadline:
            break
    return events


def test_plurals_follow_the_crd_convention() -> None:
    assert [plural_of(k) for k in ("Gateway", "GatewayClass", "HTTPListenerPolicy", "ServiceEntry")] == [
        "gateways",
        "gatewayclasses",
        "httplistenerpolicies",
        "serviceentries",
    ]


def test_merge_patch_is_rfc7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "keep": True}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
        "keep": True,
    }


def test_discovery_lists_core_groups_and_installed_crds_only(
    fake: FakeApiServer, api_client: client.ApiClient
) -> None:
    groups = {
        g["name"] for g in raw(client.ApisApi(api_client).get_api_versions(_preload_content=False))["groups"]
    }
    assert "discovery.k8s.io" in groups and "coordination.k8s.io" in groups
    assert GW not in groups
    core = raw(client.CoreV1Api(api_client).get_api_resources(_preload_content=False))
    assert {"services", "secrets", "pods", "namespaces"} <= {r["name"] for r in core["resources"]}
    custom = client.CustomObjectsApi(api_client)
    with pytest.raises(client.ApiException) as missing:
        custom.get_api_resources(GW, "v1", _preload_content=False)
    assert missing.value.status == 404

    fake.install_kinds(m for m in KINDS.values() if m.API_GROUP == GW)
    resources = raw(custom.get_api_resources(GW, "v1", _preload_content=False))["resources"]
    names = {r["name"]: r for r in resources}
    assert names["httproutes"]["kind"] == "HTTPRoute" and names["httproutes"]["namespaced"] is True
    assert names["gatewayclasses"]["namespaced"] is False
    assert "gateways/status" in names
    assert fake.requests[-1].token == "t0ken"


def test_kinds_without_a_crd_answer_404(api_client: client.ApiClient) -> None:
    custom = client.CustomObjectsApi(api_client)
    with pytest.raises(client.ApiException) as exc:
        custom.list_cluster_custom_object(
            "networking.istio.io", "v1", "virtualservices", _preload_content=False
        )
    assert exc.value.status == 404
    assert json.loads(exc.value.body)["kind"] == "Status"


def test_list_carries_resource_version_and_items_in_any_served_version(
    fake: FakeApiServer, api_client: client.ApiClient
) -> None:
    fake.install_crd(GW, "HTTPRoute", versions=("v1", "v1beta1"))
    fake.apply(route("a"))
    fake.apply(route("b", "other"))
    custom = client.CustomObjectsApi(api_client)
    listed = raw(custom.list_cluster_custom_object(GW, "v1beta1", "httproutes", _preload_content=False))
    assert listed["metadata"]["resourceVersion"] == str(fake.resource_version)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listed["items"]] == [
        ("default", "a"),
        ("other", "b"),
    ]
    assert {i["apiVersion"] for i in listed["items"]} == {f"{GW}/v1beta1"}
    one_ns = raw(
        custom.list_namespaced_custom_object(GW, "v1", "other", "httproutes", _preload_content=False)
    )
    assert [i["metadata"]["name"] for i in one_ns["items"]] == ["b"]
    services = raw(client.CoreV1Api(api_client).list_service_for_all_namespaces(_preload_content=False))
    assert services["items"] == [] and services["metadata"]["resourceVersion"]


def test_watch_streams_changes_and_bookmarks_from_a_resource_version(
    fake: FakeApiServer, api_client: client.ApiClient
) -> None:
    fake.install_crd(GW, "HTTPRoute")
    fake.apply(route("before"))
    start = str(fake.resource_version)

    def later() -> None:
        time.sleep(0.1)
        fake.apply(route("added"))
        fake.apply(route("added", hostnames=["changed.example.com"]))
        fake.delete(f"{GW}/v1", "HTTPRoute", "default", "added")

    threading.Thread(target=later, daemon=True).start()
    response = client.CustomObjectsApi(api_client).list_cluster_custom_object(
        GW,
        "v1",
        "httproutes",
        watch=True,
        resource_version=start,
        allow_watch_bookmarks=True,
        timeout_seconds=5,
        _preload_content=False,
    )
    events = watch_lines(response, until=4)
    types = [e["type"] for e in events]
    assert types[:3] == ["ADDED", "MODIFIED", "DELETED"], types
    assert events[1]["object"]["metadata"]["generation"] == 2  # a spec change bumps generation
    assert types[3] == "BOOKMARK"
    assert int(events[3]["object"]["metadata"]["resourceVersion"]) >= int(
        events[2]["object"]["metadata"]["resourceVersion"]
    )
    assert "before" not in {e["object"]["metadata"].get("name") for e in events}


def test_watch_without_resource_version_starts_with_the_current_state(
    fake: FakeApiServer, api_client: client.ApiClient
) -> None:
    fake.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
    response = client.CoreV1Api(api_client).list_namespace(
        watch=True, timeout_seconds=1, _preload_content=False
    )
    events = watch_lines(response, until=5, timeout=3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "team-a")]


def test_watch_ends_after_timeout_seconds(fake: FakeApiServer, api_client: client.ApiClient) -> None:
    started = time.monotonic()
    response = client.CoreV1Api(api_client).list_service_for_all_namespaces(
        watch=True, resource_version=str(fake.resource_version), timeout_seconds=1, _preload_content=False
    )
    assert watch_lines(response, until=1, timeout=5) == []
    assert 0.9 < time.monotonic() - started < 3


def test_expired_resource_version_gets_410_as_an_error_event_or_http(
    fake: FakeApiServer, api_client: client.ApiClient
) -> None:
    old = str(fake.resource_version)
    fake.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    fake.expire()
    core = client.CoreV1Api(api_client)
    response = core.list_namespace(watch=True, resource_version=old, _preload_content=False)
    events = watch_lines(response, until=1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    fake.expired_as_http = True
    with pytest.raises(client.ApiException) as exc:
        core.list_namespace(watch=True, resource_version=old, _preload_content=False)
    assert exc.value.status == 410
    # A fresh list's version can be watched again.
    rv = raw(core.list_namespace(_preload_content=False))["metadata"]["resourceVersion"]
    response = core.list_namespace(watch=True, resource_version=rv, timeout_seconds=1, _preload_content=False)
    assert watch_lines(response, until=1, timeout=3) == []


def test_expire_sends_410_to_open_watches(fake: FakeApiServer, api_client: client.ApiClient) -> None:
    fake.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})
    rv = str(fake.resource_version - 1)
    threading.Timer(0.2, fake.expire).start()
    response = client.CoreV1Api(api_client).list_namespace(
        watch=True, resource_version=rv, timeout_seconds=5, _preload_content=False
    )
    events = watch_lines(response, until=2)
    assert [e["type"] for e in events] == ["ADDED", "ERROR"]
    assert events[1]["object"]["code"] == 410


def test_dropped_watch_breaks_the_stream(fake: FakeApiServer, api_client: client.ApiClient) -> None:
    threading.Timer(0.2, fake.drop_watches).start()
    response = client.CoreV1Api(api_client).list_namespace(
        watch=True, resource_version=str(fake.resource_version), timeout_seconds=5, _preload_content=False
    )
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ProtocolError):  # the chunked body never ended
        watch_lines(response, until=1)
    assert time.monotonic() - started < 2


def test_status_subresource_merge_patch_with_conflicts(
    fake: FakeApiServer, api_client: client.ApiClient
) -> None:
    fake.install_crd(GW, "HTTPRoute")
    stored = fake.apply(route("r"))
    rv = stored["metadata"]["resourceVersion"]
    custom = client.CustomObjectsApi(api_client)
    patched = raw(
        custom.patch_namespaced_custom_object_status(
            GW,
            "v1",
            "default",
            "httproutes",
            "r",
            {"metadata": {"resourceVersion": rv}, "status": {"parents": []}},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
    )
    assert patched["status"] == {"parents": []}
    assert patched["metadata"]["generation"] == 1  # status writes never bump generation
    assert patched["spec"] == stored["spec"]
    with pytest.raises(client.ApiException) as stale:
        custom.patch_namespaced_custom_object_status(
            GW,
            "v1",
            "default",
            "httproutes",
            "r",
            {"metadata": {"resourceVersion": rv}, "status": {"x": 1}},
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
    assert stale.value.status == 409
    # A write to the main resource cannot change status (it has a status subresource).
    body = raw(
        custom.get_namespaced_custom_object(GW, "v1", "default", "httproutes", "r", _preload_content=False)
    )
    body["status"] = {"parents": [{"controllerName": "evil"}]}
    body["spec"]["hostnames"] = ["new.example.com"]
    replaced = raw(
        custom.replace_namespaced_custom_object(
            GW, "v1", "default", "httproutes", "r", body, _preload_content=False
        )
    )
    assert replaced["status"] == {"parents": []}
    assert replaced["metadata"]["generation"] == 2
    assert fake.status_writes()[0].path.endswith("/httproutes/r/status")


def test_leases_create_read_and_conditional_update(fake: FakeApiServer, api_client: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api_client)
    body = client.V1Lease(
        metadata=client.V1ObjectMeta(name="lead", namespace="ns"),
        spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=5),
    )
    created = raw(leases.create_namespaced_lease("ns", body, _preload_content=False))
    with pytest.raises(client.ApiException) as exists:
        leases.create_namespaced_lease("ns", body, _preload_content=False)
    assert exists.value.status == 409
    read = leases.read_namespaced_lease("lead", "ns")  # the typed model parses our JSON too
    assert read.spec.holder_identity == "a"
    update = client.V1Lease(
        metadata=client.V1ObjectMeta(
            name="lead", namespace="ns", resource_version=created["metadata"]["resourceVersion"]
        ),
        spec=client.V1LeaseSpec(holder_identity="b", lease_duration_seconds=5),
    )
    leases.replace_namespaced_lease("lead", "ns", update, _preload_content=False)
    with pytest.raises(client.ApiException) as conflict:
        leases.replace_namespaced_lease("lead", "ns", update, _preload_content=False)
    assert conflict.value.status == 409


def test_stop_and_start_again_on_the_same_port_keeps_the_store(
    fake: FakeApiServer, api_client: client.ApiClient
) -> None:
    fake.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kept"}})
    port = fake.port
    fake.stop()
    core = client.CoreV1Api(api_client)
    with pytest.raises(urllib3.exceptions.MaxRetryError):  # connection refused
        core.list_namespace(_preload_content=False, _request_timeout=1)
    fake.start()
    assert fake.port == port
    assert [n["metadata"]["name"] for n in raw(core.list_namespace(_preload_content=False))["items"]] == [
        "kept"
    ]


def test_installing_a_crd_is_visible_to_crd_watches(
    fake: FakeApiServer, api_client: client.ApiClient
) -> None:
    start = str(fake.resource_version)
    threading.Timer(0.1, lambda: fake.install_crd("networking.istio.io", "VirtualService")).start()
    response = client.CustomObjectsApi(api_client).list_cluster_custom_object(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        watch=True,
        resource_version=start,
        timeout_seconds=3,
        _preload_content=False,
    )
    events = watch_lines(response, until=1)
    assert events[0]["type"] == "ADDED"
    assert events[0]["object"]["metadata"]["name"] == "virtualservices.networking.istio.io"
