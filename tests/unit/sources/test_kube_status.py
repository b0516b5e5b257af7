"""Status write-back: ``lastTransitionTime`` kept while a condition keeps its status, nothing
written when nothing changed, other controllers' route parents untouched, entries for Gateways a
route left removed, a 409 re-read and retried, and no write at all when not the leader."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshxds.conditions import ObjectStatus
from meshxds.model import gatewayapi
from meshxds.sources.kube_api import ApiResource, KubeApi, connect
from meshxds.sources.kube_status import StatusWriter, status_patch
from meshxds.sources.kube_store import ObjectStore
from meshxds.testing.fake_apiserver import FakeApiServer

GW = "gateway.networking.k8s.io"
OURS = "meshxds.io/gateway-controller"
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"


def cond(type_: str, status: bool, generation: int = 1, reason: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason or type_,
        "message": f"{type_}.",
        "observedGeneration": generation,
    }


def parent(gateway: str, *conditions: dict[str, Any], controller: str = OURS) -> dict[str, Any]:
    return {
        "parentRef": {"group": GW, "kind": "Gateway", "namespace": "gw-ns", "name": gateway},
        "controllerName": controller,
        "conditions": list(conditions),
    }


def obj(kind: str, name: str, status: dict[str, Any] | None = None, rv: str = "5") -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": f"{GW}/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "gw-ns" if kind == "Gateway" else "default",
            "resourceVersion": rv,
        },
    }
    if kind == "GatewayClass":
        del body["metadata"]["namespace"]
    if status is not None:
        body["status"] = status
    return body


# --- status_patch (pure) -------------------------------------------------------------------------


def test_first_write_stamps_every_condition_and_names_the_resource_version() -> None:
    desired = {"conditions": [cond("Accepted", True), cond("Programmed", True)]}
    patch = status_patch(obj("Gateway", "g"), desired, kind="Gateway", controller_name=OURS, now=T0)
    assert patch is not None
    assert patch["metadata"] == {"resourceVersion": "5"}
    assert [c["lastTransitionTime"] for c in patch["status"]["conditions"]] == [T0, T0]


def test_nothing_to_write_when_only_the_clock_moved() -> None:
    desired = {
        "conditions": [cond("Accepted", True)],
        "listeners": [{"name": "http", "attachedRoutes": 1, "conditions": [cond("Programmed", True)]}],
    }
    first = status_patch(obj("Gateway", "g"), desired, kind="Gateway", controller_name=OURS, now=T0)
    assert first is not None
    written = obj("Gateway", "g", status=first["status"], rv="6")
    assert status_patch(written, desired, kind="Gateway", controller_name=OURS, now=T1) is None


def test_a_condition_that_flips_gets_a_new_transition_time_and_the_others_keep_theirs() -> None:
    before = {
        "conditions": [
            {**cond("Accepted", True), "lastTransitionTime": T0},
            {**cond("Programmed", True), "lastTransitionTime": T0},
        ]
    }
    desired = {
        "conditions": [
            cond("Accepted", True, generation=2),
            cond("Programmed", False, generation=2, reason="Invalid"),
        ]
    }
    patch = status_patch(
        obj("Gateway", "g", status=before), desired, kind="Gateway", controller_name=OURS, now=T1
    )
    assert patch is not None
    by_type = {c["type"]: c for c in patch["status"]["conditions"]}
    assert by_type["Accepted"]["lastTransitionTime"] == T0
    assert by_type["Accepted"]["observedGeneration"] == 2
    assert by_type["Programmed"]["lastTransitionTime"] == T1


def test_route_parents_of_other_controllers_are_kept() -> None:
    theirs = parent(
        "theirs", {**cond("Accepted", True), "lastTransitionTime": T0}, controller="example.com/other"
    )
    ours_before = parent("gw", {**cond("Accepted", True), "lastTransitionTime": T0})
    current = obj("HTTPRoute", "r", status={"parents": [ours_before, theirs]})
    desired = {
        "parents": [
            parent("gw", cond("Accepted", True), cond("ResolvedRefs", False, reason="BackendNotFound"))
        ]
    }
    patch = status_patch(current, desired, kind="HTTPRoute", controller_name=OURS, now=T1)
    assert patch is not None
    parents = patch["status"]["parents"]
    assert parents[0] == theirs
    (ours,) = [p for p in parents if p["controllerName"] == OURS]
    assert [(c["type"], c["lastTransitionTime"]) for c in ours["conditions"]] == [
        ("Accepted", T0),
        ("ResolvedRefs", T1),
    ]
    # Same again, whatever the order the server keeps: nothing to write.
    rewritten = obj("HTTPRoute", "r", status={"parents": list(reversed(parents))}, rv="9")
    assert status_patch(rewritten, desired, kind="HTTPRoute", controller_name=OURS, now=T1) is None


def test_policy_ancestors_of_other_controllers_are_kept() -> None:
    theirs = {
        "ancestorRef": {"group": GW, "kind": "Gateway", "namespace": "gw-ns", "name": "theirs"},
        "controllerName": "example.com/other",
        "conditions": [{**cond("Accepted", True), "lastTransitionTime": T0}],
    }
    current = obj("BackendTLSPolicy", "p", status={"ancestors": [theirs]})
    ours = {
        "ancestorRef": {"group": GW, "kind": "Gateway", "namespace": "gw-ns", "name": "gw"},
        "controllerName": OURS,
        "conditions": [cond("Accepted", False, reason="NoValidCACertificate")],
    }
    patch = status_patch(
        current, {"ancestors": [ours]}, kind="BackendTLSPolicy", controller_name=OURS, now=T1
    )
    assert patch is not None
    assert "parents" not in patch["status"]
    ancestors = patch["status"]["ancestors"]
    assert ancestors[0] == theirs
    assert ancestors[1]["conditions"][0]["reason"] == "NoValidCACertificate"
    assert ancestors[1]["conditions"][0]["lastTransitionTime"] == T1


# --- the writer, against the fake API server -----------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeApiServer]:
    with FakeApiServer() as api:
        for kind in ("GatewayClass", "Gateway", "HTTPRoute"):
            api.install_crd(GW, kind, namespaced=kind != "GatewayClass")
        yield api


@pytest.fixture
def kube(fake: FakeApiServer, tmp_path: Path) -> Iterator[KubeApi]:
    api = connect(kubeconfig=str(fake.write_kubeconfig(tmp_path / "kubeconfig")))
    yield api
    api.close()


MODELS = (
    gatewayapi.GatewayClass,
    gatewayapi.Gateway,
    gatewayapi.HTTPRoute,
    gatewayapi.GRPCRoute,
    gatewayapi.TLSRoute,
    gatewayapi.TCPRoute,
)
RESOURCES = {
    gatewayapi.GatewayClass: ApiResource(GW, "v1", "GatewayClass", "gatewayclasses", False),
    gatewayapi.Gateway: ApiResource(GW, "v1", "Gateway", "gateways", True),
    gatewayapi.HTTPRoute: ApiResource(GW, "v1", "HTTPRoute", "httproutes", True),
}


def load(fake: FakeApiServer, store: ObjectStore) -> None:
    """The store as the watches would have it: what the server holds now."""
    for model in MODELS:
        res = RESOURCES.get(model)
        items = fake.objects(GW, model.KIND) if res is not None else []
        store.replace(model, [(i, "/x") for i in items])


def statuses() -> list[ObjectStatus]:
    return [
        ObjectStatus(
            kind="GatewayClass", namespace="", name="meshxds", status={"conditions": [cond("Accepted", True)]}
        ),
        ObjectStatus(
            kind="Gateway",
            namespace="gw-ns",
            name="gw",
            status={"conditions": [cond("Accepted", True)], "listeners": []},
        ),
        ObjectStatus(
            kind="HTTPRoute",
            namespace="default",
            name="r",
            status={
                "parents": [
                    parent("gw", cond("Accepted", True)),
                    parent("not-ours", cond("Accepted", False, reason="NoMatchingParent")),
                ]
            },
        ),
    ]


def seed(fake: FakeApiServer) -> None:
    fake.apply(
        {
            "apiVersion": f"{GW}/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "meshxds"},
            "spec": {"controllerName": OURS},
        }
    )
    fake.apply(
        {
            "apiVersion": f"{GW}/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "gw-ns"},
            "spec": {},
        }
    )
    fake.apply(
        {
            "apiVersion": f"{GW}/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "default"},
            "spec": {},
        }
    )


def writer(kube: KubeApi, store: ObjectStore, leader: list[bool] | None = None) -> StatusWriter:
    flag = leader if leader is not None else [True]
    return StatusWriter(
        kube,
        store,
        resource_of=RESOURCES.get,
        controller_name=OURS,
        may_write=lambda: flag[0],
        clock=lambda: T0,
    )


def test_writes_our_objects_once_and_only_our_parents(fake: FakeApiServer, kube: KubeApi) -> None:
    seed(fake)
    store = ObjectStore(MODELS)
    load(fake, store)
    w = writer(kube, store)
    report = w.write(statuses())
    assert (report.written, report.failed) == (3, 0)
    route_status = fake.get(f"{GW}/v1", "HTTPRoute", "default", "r")["status"]
    assert [p["parentRef"]["name"] for p in route_status["parents"]] == [
        "gw"
    ]  # not the Gateway we do not own
    # Again, with the store not yet updated by the watch: no request at all.
    before = len(fake.requests)
    assert w.write(statuses()).written == 0
    assert len(fake.requests) == before
    # And with the store caught up: still nothing.
    load(fake, store)
    assert w.write(statuses()).unchanged == 3
    assert len(fake.requests) == before


def test_a_conflict_is_read_again_and_retried(fake: FakeApiServer, kube: KubeApi) -> None:
    seed(fake)
    store = ObjectStore(MODELS)
    load(fake, store)
    # Someone changes the route after our store saw it: our patch names a stale resourceVersion.
    fake.apply(
        {
            "apiVersion": f"{GW}/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "default", "labels": {"x": "y"}},
            "spec": {},
        }
    )
    report = writer(kube, store).write(statuses())
    assert (report.written, report.failed) == (3, 0)
    route_writes = [r for r in fake.requests_for(path="/httproutes/r/status$")]
    assert [(r.method, r.status) for r in route_writes] == [("PATCH", 409), ("GET", 200), ("PATCH", 200)]
    assert fake.get(f"{GW}/v1", "HTTPRoute", "default", "r")["metadata"]["labels"] == {"x": "y"}


def test_a_route_that_leaves_our_gateway_loses_our_entry(fake: FakeApiServer, kube: KubeApi) -> None:
    seed(fake)
    store = ObjectStore(MODELS)
    load(fake, store)
    w = writer(kube, store)
    w.write(statuses())
    load(fake, store)
    without_route = [s for s in statuses() if s.kind != "HTTPRoute"]
    assert w.write(without_route).written == 1
    assert fake.get(f"{GW}/v1", "HTTPRoute", "default", "r")["status"] == {"parents": []}


def test_not_the_leader_writes_nothing(fake: FakeApiServer, kube: KubeApi) -> None:
    seed(fake)
    store = ObjectStore(MODELS)
    load(fake, store)
    leader = [False]
    w = writer(kube, store, leader)
    assert w.write(statuses()).written == 0
    assert fake.status_writes() == []
    leader[0] = True
    assert w.write(statuses()).written == 3


def test_objects_not_in_the_store_or_gone_are_skipped(fake: FakeApiServer, kube: KubeApi) -> None:
    seed(fake)
    store = ObjectStore(MODELS)
    load(fake, store)
    fake.delete(f"{GW}/v1", "HTTPRoute", "default", "r")
    report = writer(kube, store).write(statuses())
    assert report.skipped == 1 and report.written == 2 and report.failed == 0


# --- Gateway status.addresses and GatewayClass supportedFeatures --------------------------------

FEATURES = [{"name": "Gateway"}, {"name": "HTTPRoute"}]
ADDRESSES = [{"type": "IPAddress", "value": "203.0.113.7"}, {"type": "Hostname", "value": "lb.example.com"}]


def test_addresses_are_written_and_an_empty_list_is_written_only_to_remove_ours() -> None:
    desired = {"addresses": ADDRESSES, "conditions": [cond("Programmed", True)]}
    patch = status_patch(obj("Gateway", "g"), desired, kind="Gateway", controller_name=OURS, now=T0)
    assert patch is not None and patch["status"]["addresses"] == ADDRESSES
    written = obj("Gateway", "g", status=patch["status"], rv="6")
    assert status_patch(written, desired, kind="Gateway", controller_name=OURS, now=T1) is None
    # No address known any more: a merge-patch null removes the list written before ...
    gone = {**desired, "addresses": []}
    patch = status_patch(written, gone, kind="Gateway", controller_name=OURS, now=T1)
    assert patch is not None and patch["status"]["addresses"] is None
    # ... and an object that never had one gets no write for it.
    fresh = obj("Gateway", "g", status={"conditions": written["status"]["conditions"]}, rv="7")
    assert status_patch(fresh, gone, kind="Gateway", controller_name=OURS, now=T1) is None


def test_writer_puts_addresses_and_supported_features_on_the_api_server(
    fake: FakeApiServer, kube: KubeApi
) -> None:
    seed(fake)
    store = ObjectStore(MODELS)
    load(fake, store)
    w = writer(kube, store)
    gateway_class, gateway, route = statuses()
    with_fields = [
        ObjectStatus(
            kind="GatewayClass",
            namespace="",
            name="meshxds",
            status={**gateway_class.status, "supportedFeatures": FEATURES},
        ),
        ObjectStatus(
            kind="Gateway", namespace="gw-ns", name="gw", status={"addresses": ADDRESSES, **gateway.status}
        ),
        route,
    ]
    assert w.write(with_fields).written == 3
    assert fake.get(f"{GW}/v1", "GatewayClass", "", "meshxds")["status"]["supportedFeatures"] == FEATURES
    assert fake.get(f"{GW}/v1", "Gateway", "gw-ns", "gw")["status"]["addresses"] == ADDRESSES
    # The addresses go away: removed on the server, the rest untouched.
    load(fake, store)
    with_fields[1] = ObjectStatus(
        kind="Gateway", namespace="gw-ns", name="gw", status={"addresses": [], **gateway.status}
    )
    assert w.write(with_fields).written == 1
    stored = fake.get(f"{GW}/v1", "Gateway", "gw-ns", "gw")["status"]
    assert "addresses" not in stored and stored["conditions"][0]["type"] == "Accepted"
