"""The pipeline does as little as a change needs: nothing, EDS only (to the holders), or a
translation whose unchanged resources keep their bytes and whose untouched identities keep their
very snapshot."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from meshxds.identity import ProxyIdentity
from meshxds.model.manifests import ResourceSet, SourcedDocument, parse_documents
from meshxds.options import GATEWAY_NAME_LABEL, TranslateOptions
from meshxds.pipeline import Pipeline, SnapshotBuilder, changes_between, translate
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs
from meshxds.xds.cache import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, Snapshot, SnapshotCache
from meshxds.xds.render import snapshot_to_json

GW_A = ProxyIdentity.of(namespace="gateway-system", labels={GATEWAY_NAME_LABEL: "a"})
GW_B = ProxyIdentity.of(namespace="gateway-system", labels={GATEWAY_NAME_LABEL: "b"})
CLUSTER_A = "outbound|8080||svc-a.default.svc.cluster.local"
CLUSTER_B = "outbound|8080||svc-b.default.svc.cluster.local"


def mesh() -> list[dict[str, Any]]:
    docs = gateway_api_docs([gateway_listener(8080)], name="a")
    docs += gateway_api_docs([gateway_listener(8081)], name="b")[1:]
    docs += routed_service_docs(
        "svc-a", upstream_port=9001, hostnames=["a.example.com"], gateway=("gateway-system", "a")
    )
    docs += routed_service_docs(
        "svc-b", upstream_port=9002, hostnames=["b.example.com"], gateway=("gateway-system", "b")
    )
    return docs


def resource_set(docs: list[dict[str, Any]], previous: ResourceSet | None = None) -> ResourceSet:
    """Parse ``docs``; objects equal to ``previous``'s are kept as the same objects, as both
    sources do."""
    parsed = parse_documents(SourcedDocument(path=f"m{i}.yaml", index=0, body=d) for i, d in enumerate(docs))
    if previous is None:
        return parsed
    objects: dict[Any, dict[tuple[str, str], Any]] = {}
    for model, by_key in parsed.objects.items():
        old = previous.objects.get(model, {})
        objects[model] = {k: old[k] if old.get(k) == o else o for k, o in by_key.items()}
    return ResourceSet(objects=objects, origins=parsed.origins, warnings=parsed.warnings)


def slice_of(docs: list[dict[str, Any]], service: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "EndpointSlice" and d["metadata"]["name"] == f"{service}-1")


def addresses(snapshot_json: dict[str, Any], cluster: str) -> list[str]:
    cla = next(e for e in snapshot_json["endpoints"] if e["cluster_name"] == cluster)
    return [
        lb["endpoint"]["address"]["socket_address"]["address"]
        for locality in cla.get("endpoints", [])
        for lb in locality["lb_endpoints"]
    ]


def test_an_unchanged_read_keeps_the_builder() -> None:
    pipeline = Pipeline()
    first = resource_set(mesh())
    builder = pipeline.update(first, [GW_A])
    assert pipeline.update(resource_set(mesh(), first), [GW_A]) is builder
    assert (pipeline.full_updates, pipeline.fast_updates) == (1, 0)


def test_an_endpoint_edit_rebuilds_only_that_load_assignment_for_its_holders() -> None:
    pipeline = Pipeline()
    docs = mesh()
    before = resource_set(docs)
    old = pipeline.update(before, [GW_A, GW_B])
    snap_a, snap_b = old(GW_A), old(GW_B)

    edited = copy.deepcopy(docs)
    slice_of(edited, "svc-a")["endpoints"].append({"addresses": ["127.0.0.2"], "conditions": {"ready": True}})
    new = pipeline.update(resource_set(edited, before), [GW_A, GW_B])

    assert (pipeline.full_updates, pipeline.fast_updates) == (1, 1)
    assert new.translation.gateway_api is old.translation.gateway_api  # nothing translated
    assert new(GW_B) is snap_b  # another gateway's proxies: the very same snapshot, nothing to send
    after_a = new(GW_A)
    for type_url in (TYPE_CLUSTER, TYPE_LISTENER, TYPE_ROUTE):
        assert after_a.get(type_url) == snap_a.get(type_url)
        for name, resource in after_a.get(type_url).items():
            assert resource is snap_a.get(type_url)[name]
    assert after_a.get(TYPE_ENDPOINT)[CLUSTER_A].version != snap_a.get(TYPE_ENDPOINT)[CLUSTER_A].version
    assert addresses(snapshot_to_json(after_a), CLUSTER_A) == ["127.0.0.1", "127.0.0.2"]
    after_a.check_consistent()


def test_a_fast_path_result_equals_a_fresh_translation() -> None:
    pipeline = Pipeline()
    docs = mesh()
    before = resource_set(docs)
    pipeline.update(before, [GW_A])
    edited = copy.deepcopy(docs)
    slice_of(edited, "svc-a")["endpoints"][0]["addresses"] = ["127.0.0.9"]
    slice_of(edited, "svc-b")["endpoints"][0]["conditions"] = {"ready": False}
    after = resource_set(edited, before)
    fast = pipeline.update(after, [GW_A])
    assert pipeline.fast_updates == 1
    fresh = SnapshotBuilder(translate(after))
    # Built before the change (GW_A) and first built after it (GW_B) alike.
    for identity in (GW_A, GW_B):
        assert snapshot_to_json(fast(identity)) == snapshot_to_json(fresh(identity))
    assert addresses(snapshot_to_json(fast(GW_B)), CLUSTER_B) == []


def test_a_route_edit_translates_and_keeps_untouched_identities_snapshots() -> None:
    pipeline = Pipeline(options=TranslateOptions())
    docs = mesh()
    before = resource_set(docs)
    old = pipeline.update(before, [GW_A, GW_B])
    snap_a, snap_b = old(GW_A), old(GW_B)
    edited = copy.deepcopy(docs)
    route = next(d for d in edited if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "svc-a")
    route["spec"]["hostnames"] = ["a2.example.com"]
    new = pipeline.update(resource_set(edited, before), [GW_A, GW_B])
    assert (pipeline.full_updates, pipeline.fast_updates) == (2, 0)
    assert new(GW_B) is snap_b
    after_a = new(GW_A)
    assert after_a is not snap_a
    # Only the route table and the listener holding it were built again (the listener's filters
    # depend on its routes); the listener's bytes, and so its version, did not change.
    assert new.memo.builds == 2
    listener = "127.0.0.1_8080" if "127.0.0.1_8080" in after_a.get(TYPE_LISTENER) else "0.0.0.0_8080"
    assert after_a.get(TYPE_LISTENER)[listener].version == snap_a.get(TYPE_LISTENER)[listener].version
    assert after_a.get(TYPE_ROUTE)["http.8080"].version != snap_a.get(TYPE_ROUTE)["http.8080"].version
    assert after_a.get(TYPE_CLUSTER)[CLUSTER_A] is snap_a.get(TYPE_CLUSTER)[CLUSTER_A]
    assert after_a.get(TYPE_ENDPOINT)[CLUSTER_A] is snap_a.get(TYPE_ENDPOINT)[CLUSTER_A]


def test_a_route_edit_after_an_endpoint_edit_builds_only_what_the_route_changed() -> None:
    """The endpoint fast path's memo carries every resource it reused, so the translation after
    it finds them: nothing of gateway b is built again, and b keeps its very snapshot."""
    pipeline = Pipeline(options=TranslateOptions())
    docs = mesh()
    before = resource_set(docs)
    pipeline.update(before, [GW_A, GW_B])
    moved = copy.deepcopy(docs)
    slice_of(moved, "svc-a")["endpoints"][0]["addresses"] = ["127.0.0.9"]
    after_endpoints = resource_set(moved, before)
    fast = pipeline.update(after_endpoints, [GW_A, GW_B])
    assert pipeline.last_path == "endpoints"
    snap_a, snap_b = fast(GW_A), fast(GW_B)
    edited = copy.deepcopy(moved)
    route = next(d for d in edited if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "svc-a")
    route["spec"]["hostnames"] = ["a2.example.com"]
    new = pipeline.update(resource_set(edited, after_endpoints), [GW_A, GW_B])
    assert pipeline.last_path == "translated"
    assert new(GW_B) is snap_b
    assert new.memo.builds == 2  # a's route table and the listener holding it, as without the fast path
    assert new(GW_A).get(TYPE_ENDPOINT)[CLUSTER_A] is snap_a.get(TYPE_ENDPOINT)[CLUSTER_A]


def test_changes_between_sees_added_removed_and_modified_objects() -> None:
    docs = mesh()
    before = resource_set(docs)
    edited = [d for d in copy.deepcopy(docs) if d["metadata"].get("name") != "svc-b-1"]
    slice_of(edited, "svc-a")["endpoints"][0]["addresses"] = ["127.0.0.9"]
    changes = changes_between(before, resource_set(edited, before))
    assert changes.endpoints_only
    assert sorted(o.name for o in changes.objects) == ["svc-a-1", "svc-a-1", "svc-b-1"]
    assert not changes_between(before, resource_set(docs, before))


def test_a_route_edit_reuses_the_other_routes_and_the_other_gateways_config() -> None:
    pipeline = Pipeline()
    docs = mesh()
    before = resource_set(docs)
    old = pipeline.update(before, [GW_A, GW_B]).translation.gateway_api
    edited = copy.deepcopy(docs)
    route = next(d for d in edited if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "svc-a")
    route["spec"]["hostnames"] = ["a2.example.com"]
    new = pipeline.update(resource_set(edited, before), [GW_A, GW_B]).translation.gateway_api
    route_b = next(r for r, _ in old.memo.compiled.values() if getattr(r, "name", "") == "svc-b")
    assert new.memo.compiled[id(route_b)][1] is old.memo.compiled[id(route_b)][1]
    assert new.gateways[("gateway-system", "b")] is old.gateways[("gateway-system", "b")]
    assert new.gateways[("gateway-system", "a")] is not old.gateways[("gateway-system", "a")]


def test_a_service_edit_compiles_every_route_again() -> None:
    pipeline = Pipeline()
    docs = mesh()
    before = resource_set(docs)
    old = pipeline.update(before, [GW_A]).translation.gateway_api
    edited = copy.deepcopy(docs)
    service = next(d for d in edited if d["kind"] == "Service" and d["metadata"]["name"] == "svc-b")
    service["spec"]["ports"][0]["appProtocol"] = "http2"
    new = pipeline.update(resource_set(edited, before), [GW_A]).translation.gateway_api
    assert not set(map(id, (c for _, c in new.memo.compiled.values()))) & set(
        map(id, (c for _, c in old.memo.compiled.values()))
    )


def test_a_route_edit_after_an_endpoint_edit_serves_the_current_endpoints() -> None:
    """Reused compiled routes hold clusters computed from older endpoints: what is served
    must still equal a fresh translation."""
    pipeline = Pipeline()
    docs = mesh()
    first = resource_set(docs)
    pipeline.update(first, [GW_A, GW_B])
    moved = copy.deepcopy(docs)
    slice_of(moved, "svc-b")["endpoints"][0]["addresses"] = ["127.0.0.7"]
    second = resource_set(moved, first)
    pipeline.update(second, [GW_A, GW_B])
    renamed = copy.deepcopy(moved)
    route = next(d for d in renamed if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "svc-a")
    route["spec"]["hostnames"] = ["a2.example.com"]
    third = resource_set(renamed, second)
    builder = pipeline.update(third, [GW_A, GW_B])
    assert (pipeline.full_updates, pipeline.fast_updates) == (2, 1)
    fresh = SnapshotBuilder(translate(third))
    for identity in (GW_A, GW_B):
        assert snapshot_to_json(builder(identity)) == snapshot_to_json(fresh(identity))
    assert addresses(snapshot_to_json(builder(GW_B)), CLUSTER_B) == ["127.0.0.7"]


def sidecar(i: int) -> ProxyIdentity:
    return ProxyIdentity.of(namespace="default", labels={"app": "web", "pod-template-hash": f"h{i}"})


def gateway_pod(i: int) -> ProxyIdentity:
    return ProxyIdentity.of(
        namespace="gateway-system", labels={GATEWAY_NAME_LABEL: "a", "pod-template-hash": f"h{i}"}
    )


async def test_identities_that_left_leave_nothing_in_the_cache_the_builder_or_the_next_builder() -> None:
    """A rollout: gateway pods and sidecars with new label sets connect and go; once their grace
    period is over, no structure keeps them, across an endpoint and a route edit."""
    import asyncio
    import time

    pipeline = Pipeline()
    docs = mesh()
    first = resource_set(docs)
    cache = SnapshotCache(pipeline.update(first, [GW_A]), grace=0.05)
    leave, stay = asyncio.Event(), asyncio.Event()
    got: dict[ProxyIdentity, Snapshot | None] = {}

    async def stream(identity: ProxyIdentity) -> None:
        got[identity] = await cache.snapshot(identity)
        await (stay if identity == GW_A else leave).wait()

    async def until(predicate: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 5
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)

    staying = asyncio.create_task(stream(GW_A))
    await until(lambda: GW_A in got, "GW_A served")
    builder = pipeline.builder
    assert builder is not None
    churn = [gateway_pod(i) for i in range(10)] + [sidecar(i) for i in range(10)]
    tasks = [asyncio.create_task(stream(identity)) for identity in churn]
    await until(lambda: all(i in got for i in churn), "the churn served")
    assert builder.identities() >= set(churn)
    assert len(builder.translation.istio._configs) >= len(churn)

    # An endpoint edit while they are connected: the fast path carries them into the next builder.
    edited = copy.deepcopy(docs)
    slice_of(edited, "svc-a")["endpoints"][0]["addresses"] = ["127.0.0.9"]
    second = resource_set(edited, first)
    carried = pipeline.update(second, [GW_A, *churn])
    leave.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    cache.set_builder(carried)  # published after they left, within their grace period
    assert carried.identities() >= set(churn)

    await until(lambda: cache.identities() == {GW_A}, "the churn to be released")
    assert carried.identities() == {GW_A}
    # The Istio translator's per-identity memo is shared by the builders of one translation.
    assert set(carried.translation.istio._configs) <= {(GW_A, False), (GW_A, True)}
    # The staying gateway keeps its very snapshot; a route edit made now carries only it.
    kept = carried(GW_A)
    assert await cache.snapshot(GW_A) is kept
    renamed = copy.deepcopy(edited)
    route = next(d for d in renamed if d["kind"] == "HTTPRoute" and d["metadata"]["name"] == "svc-b")
    route["spec"]["hostnames"] = ["b2.example.com"]
    third = pipeline.update(resource_set(renamed, second), [GW_A])
    cache.set_builder(third)
    assert third.identities() == {GW_A}
    assert all(third(GW_A).version(t) == kept.version(t) for t in kept.resources)  # a's did not change
    stay.set()
    await asyncio.wait_for(staying, 5)


def test_an_updated_endpoint_index_answers_as_a_fresh_one() -> None:
    """The fast path's index is made from the last one and the change; it must equal a fresh one:
    a slice edited, one added, one moved to another Service, one deleted."""
    from meshxds.translators.upstream import EndpointIndex

    docs = mesh()
    before = resource_set(docs)
    edited = copy.deepcopy(docs)
    slice_of(edited, "svc-a")["endpoints"][0]["addresses"] = ["127.0.0.9"]
    extra = copy.deepcopy(slice_of(edited, "svc-a"))
    extra["metadata"]["name"] = "svc-a-2"
    extra["endpoints"][0]["addresses"] = ["127.0.0.7"]
    moved = slice_of(edited, "svc-b")
    moved["metadata"]["labels"]["kubernetes.io/service-name"] = "svc-a"
    edited.append(extra)
    after = resource_set(edited, before)
    changes = changes_between(before, after)
    updated = EndpointIndex.updated(EndpointIndex(before), after, changes.objects)
    fresh = EndpointIndex(after)
    for service in ("svc-a", "svc-b"):
        key = ("default", service)
        assert sorted(s.name for s in updated._slices.get(key, [])) == sorted(
            s.name for s in fresh._slices.get(key, [])
        )
        assert updated.labelled("default", service, "", 80) == fresh.labelled("default", service, "", 80)
    deleted = [d for d in edited if d is not extra]
    after_delete = resource_set(deleted, after)
    changes = changes_between(after, after_delete)
    again = EndpointIndex.updated(updated, after_delete, changes.objects)
    assert sorted(s.name for s in again._slices[("default", "svc-a")]) == ["svc-a-1", "svc-b-1"]


# --- WorkloadEntries: on the endpoint fast path while their ServiceEntries stay EDS ---------------

SIDECAR = ProxyIdentity.of(namespace="default", labels={"app": "client"})
VMS = "outbound|8080||vms.example.internal"


def workload(name: str, address: str, app: str = "vm") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"address": address, "labels": {"app": app}},
    }


def vm_mesh(resolution: str = "STATIC") -> list[dict[str, Any]]:
    entry = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "vms", "namespace": "default"},
        "spec": {
            "hosts": ["vms.example.internal"],
            "location": "MESH_INTERNAL",
            "ports": [{"number": 8080, "name": "http", "protocol": "HTTP"}],
            "resolution": resolution,
            "workloadSelector": {"labels": {"app": "vm"}},
        },
    }
    return [entry, workload("vm-1", "10.0.0.1"), workload("vm-2", "10.0.0.2", app="other")]


def test_a_workload_entry_edit_takes_the_fast_path_and_equals_a_fresh_translation() -> None:
    pipeline = Pipeline()
    docs = vm_mesh()
    current = resource_set(docs)
    first = pipeline.update(current, [SIDECAR])
    assert addresses(snapshot_to_json(first(SIDECAR)), VMS) == ["10.0.0.1"]
    edits: list[Callable[[list[dict[str, Any]]], None]] = [
        lambda d: d[1]["spec"].update(address="10.0.0.9"),  # an address moves
        lambda d: d[2]["spec"]["labels"].update(app="vm"),  # a workload joins by its labels
        lambda d: d.append(workload("vm-3", "10.0.0.3")),  # a new one
        lambda d: d.pop(1),  # one goes
    ]
    expected = [
        ["10.0.0.9"],
        ["10.0.0.2", "10.0.0.9"],
        ["10.0.0.2", "10.0.0.3", "10.0.0.9"],
        ["10.0.0.2", "10.0.0.3"],
    ]
    for count, (edit, want) in enumerate(zip(edits, expected, strict=True), start=1):
        edit(docs)
        current = resource_set(copy.deepcopy(docs), current)
        fast = pipeline.update(current, [SIDECAR])
        assert pipeline.fast_updates == count, pipeline.last_path
        assert fast.translation.istio is first.translation.istio  # nothing translated
        assert addresses(snapshot_to_json(fast(SIDECAR)), VMS) == want
        fresh = SnapshotBuilder(translate(current))
        assert snapshot_to_json(fast(SIDECAR)) == snapshot_to_json(fresh(SIDECAR))


def test_a_workload_entry_that_would_make_a_cluster_dns_is_translated_in_full() -> None:
    for docs, edit in (
        (vm_mesh(), lambda d: d[1]["spec"].update(address="vm-1.example.internal")),  # a hostname
        (vm_mesh("DNS"), lambda d: d[1]["spec"].update(address="10.0.0.9")),  # a DNS entry's
    ):
        pipeline = Pipeline()
        before = resource_set(docs)
        pipeline.update(before, [SIDECAR])
        edited = copy.deepcopy(docs)
        edit(edited)
        after = resource_set(edited, before)
        full = pipeline.update(after, [SIDECAR])
        assert (pipeline.full_updates, pipeline.fast_updates) == (2, 0)
        assert snapshot_to_json(full(SIDECAR)) == snapshot_to_json(SnapshotBuilder(translate(after))(SIDECAR))


def test_translating_one_gateway_gives_its_proxies_what_the_whole_translation_gives() -> None:
    docs = mesh()
    # A route of gateway b with a missing backend: a warning of b's part only.
    broken = copy.deepcopy(
        next(d for d in docs if d["kind"] == "HTTPRoute" and "svc-b" in d["metadata"]["name"])
    )
    broken["metadata"]["name"] = "broken-b"
    broken["spec"]["rules"][0]["backendRefs"][0]["name"] = "missing"
    resources = resource_set([*docs, broken])
    whole = translate(resources)
    part = translate(resources, gateways=[("gateway-system", "a")])
    assert set(part.gateway_api.gateways) == {("gateway-system", "a")}
    assert part.config_for(GW_A) == whole.config_for(GW_A)
    assert snapshot_to_json(SnapshotBuilder(part)(GW_A)) == snapshot_to_json(SnapshotBuilder(whole)(GW_A))
    assert {s.name for s in part.statuses} < {s.name for s in whole.statuses}
    assert not any("broken-b" in str(s.as_dict()) for s in part.statuses)
    assert any(s.name == "broken-b" for s in whole.statuses)


def test_a_backend_config_policy_added_reaches_the_cluster() -> None:
    """A BackendConfigPolicy shapes clusters routes compile to: adding one is no reuse case."""
    pipeline = Pipeline()
    docs = mesh()
    before = resource_set(docs)
    pipeline.update(before, [GW_A])
    policy = {
        "apiVersion": "gateway.kgateway.dev/v1alpha1",
        "kind": "BackendConfigPolicy",
        "metadata": {"name": "svc-a", "namespace": "default"},
        "spec": {"targetRefs": [{"group": "", "kind": "Service", "name": "svc-a"}], "connectTimeout": "3s"},
    }
    new = pipeline.update(resource_set([*docs, policy], before), [GW_A]).translation.gateway_api
    (config,) = (c for (_, name), c in new.gateways.items() if name == "a")
    assert {c.name: c.connect_timeout_s for c in config.clusters}[CLUSTER_A] == 3.0
