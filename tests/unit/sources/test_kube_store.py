"""The Kubernetes source's store: objects validated one by one like files (errors name the API
path, object and field), an invalid object skipped but reported, changes no translator can see
(resourceVersion, managedFields, our own status writes) not waking a translation, Pods and
Namespaces trimmed, and Secrets handed on only when a gateway references them."""

from __future__ import annotations

import base64
from typing import Any

from meshxds.model import core, gatewayapi
from meshxds.model.manifests import KINDS
from meshxds.sources.kube_store import ObjectStore, trim

GW = "gateway.networking.k8s.io"
ROUTE_PATH = f"/apis/{GW}/v1/namespaces/default/httproutes/web"


def route(name: str = "web", rv: str = "1", port: Any = 8080, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv, "generation": 1},
        "spec": {"rules": [{"backendRefs": [{"name": "svc", "port": port}]}]},
        **extra,
    }


def secret(name: str, namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": base64.b64encode(b"c").decode(), "tls.key": base64.b64encode(b"k").decode()},
    }


def gateway(*cert_refs: dict[str, str], name: str = "gw") -> dict[str, Any]:
    return {
        "apiVersion": f"{GW}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "gatewayClassName": "meshxds",
            "listeners": [
                {
                    "name": "https",
                    "port": 443,
                    "protocol": "HTTPS",
                    "tls": {"mode": "Terminate", "certificateRefs": list(cert_refs)},
                }
            ],
        },
    }


class Counter:
    def __init__(self) -> None:
        self.changes = 0
        self.statuses = 0

    def change(self) -> None:
        self.changes += 1

    def status(self) -> None:
        self.statuses += 1


def store_of(*models: Any) -> tuple[ObjectStore, Counter]:
    counter = Counter()
    return ObjectStore(models or KINDS.values(), on_change=counter.change, on_status=counter.status), counter


def test_snapshot_waits_for_every_kind_to_be_listed_or_absent() -> None:
    store, _ = store_of(gatewayapi.HTTPRoute, core.Service)
    assert not store.synced and store.pending() == [f"{GW}/HTTPRoute", "core/Service"]
    store.replace(gatewayapi.HTTPRoute, [(route(), ROUTE_PATH)])
    assert not store.synced
    store.mark_absent(core.Service)
    assert store.synced
    snap = store.snapshot()
    assert [r.name for r in snap.all(gatewayapi.HTTPRoute)] == ["web"]
    assert snap.origins["HTTPRoute/default/web"] == ROUTE_PATH


def test_an_invalid_object_is_skipped_and_reported_with_its_api_path_and_field() -> None:
    store, _ = store_of(gatewayapi.HTTPRoute)
    bad = route("bad", port=99999)
    store.replace(gatewayapi.HTTPRoute, [(route(), ROUTE_PATH), (bad, ROUTE_PATH.replace("web", "bad"))])
    snap = store.snapshot()
    assert [r.name for r in snap.all(gatewayapi.HTTPRoute)] == ["web"]  # the others still served
    (error,) = snap.errors
    assert error.path == f"/apis/{GW}/v1/namespaces/default/httproutes/bad"
    assert error.ref == "HTTPRoute/default/bad"
    assert error.field_path == "spec.rules[0].backendRefs[0].port"
    # Fixing it brings it in.
    store.apply(gatewayapi.HTTPRoute, "MODIFIED", route("bad", rv="2"), error.path)
    assert [r.name for r in store.snapshot().all(gatewayapi.HTTPRoute)] == ["bad", "web"]
    assert store.snapshot().errors == ()


def test_unknown_fields_become_warnings_like_files() -> None:
    store, _ = store_of(gatewayapi.HTTPRoute)
    body = route()
    body["spec"]["sessionPersistence"] = {"sessionName": "x"}
    store.replace(gatewayapi.HTTPRoute, [(body, ROUTE_PATH)])
    assert any("sessionPersistence" in w and ROUTE_PATH in w for w in store.snapshot().warnings)


def test_changes_no_translation_can_see_do_not_wake_one() -> None:
    store, counter = store_of(gatewayapi.HTTPRoute)
    store.replace(gatewayapi.HTTPRoute, [(route(), ROUTE_PATH)])
    assert counter.changes == 1
    # A new resourceVersion, managedFields, and a status we wrote: the same translation.
    same = route(rv="7", status={"parents": [{"controllerName": "meshxds.io/gateway-controller"}]})
    same["metadata"]["managedFields"] = [{"manager": "kubectl"}]
    assert not store.apply(gatewayapi.HTTPRoute, "MODIFIED", same, ROUTE_PATH)
    assert counter.changes == 1
    assert counter.statuses == 2  # ...but the status writer hears about it
    assert store.body(gatewayapi.HTTPRoute, "default", "web")["metadata"]["resourceVersion"] == "7"
    # A relist with the same objects changes nothing either.
    assert not store.replace(gatewayapi.HTTPRoute, [(same, ROUTE_PATH)])
    # A spec change does.
    assert store.apply(gatewayapi.HTTPRoute, "MODIFIED", route(rv="8", port=9090), ROUTE_PATH)
    assert counter.changes == 2
    assert store.apply(gatewayapi.HTTPRoute, "DELETED", route(rv="9"), ROUTE_PATH)
    assert store.snapshot().all(gatewayapi.HTTPRoute) == []


def test_pod_status_is_read_so_its_changes_count() -> None:
    store, counter = store_of(core.Pod)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "labels": {"app": "a"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i", "env": [{"name": "SECRET"}]}]},
        "status": {"podIP": "10.0.0.1", "phase": "Running", "conditions": [{"type": "Ready"}]},
    }
    store.replace(core.Pod, [(pod, "/api/v1/namespaces/default/pods/p")])
    stored = store.body(core.Pod, "default", "p")
    assert stored is not None
    assert stored["spec"] == {"nodeName": "n1"} and stored["status"] == {"podIP": "10.0.0.1"}
    moved = {**pod, "status": {"podIP": "10.0.0.2"}}
    assert store.apply(core.Pod, "MODIFIED", moved, "/api/v1/namespaces/default/pods/p")
    assert store.snapshot().all(core.Pod)[0].status.pod_ip == "10.0.0.2"
    assert counter.changes == 2


def test_trim_drops_what_is_never_read() -> None:
    body = secret("s")
    body["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/last-applied-configuration": '{"data": {"tls.key": "..."}}',
        "keep": "me",
    }
    body["metadata"]["managedFields"] = [{}]
    out = trim(core.Secret, body)
    assert out["metadata"]["annotations"] == {"keep": "me"}
    assert "managedFields" not in out["metadata"]
    ns = trim(
        core.Namespace,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "n"},
            "spec": {},
            "status": {"phase": "Active"},
        },
    )
    assert set(ns) == {"apiVersion", "kind", "metadata"}


def test_only_secrets_a_gateway_references_are_handed_on() -> None:
    store, _ = store_of(gatewayapi.Gateway, core.Secret)
    store.replace(
        core.Secret,
        [
            (secret(n, ns), f"/api/v1/namespaces/{ns}/secrets/{n}")
            for n, ns in [("cert", "default"), ("db-password", "default"), ("other-ns-cert", "certs")]
        ],
    )
    store.replace(
        gatewayapi.Gateway,
        [(gateway({"name": "cert"}, {"name": "other-ns-cert", "namespace": "certs"}), "/g")],
    )
    names = [(s.namespace, s.name) for s in store.snapshot().all(core.Secret)]
    assert names == [("certs", "other-ns-cert"), ("default", "cert")]
    # Dropping the reference drops the Secret from the next read.
    store.apply(gatewayapi.Gateway, "MODIFIED", gateway({"name": "cert"}), "/g")
    assert [s.name for s in store.snapshot().all(core.Secret)] == ["cert"]


def test_istio_credential_names_keep_their_secrets() -> None:
    istio_gateway = KINDS[("networking.istio.io", "Gateway")]
    store, _ = store_of(core.Secret, istio_gateway)
    store.replace(core.Secret, [(secret("istio-cert", "istio-system"), "/s1"), (secret("unrelated"), "/s2")])
    body = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "ig", "namespace": "istio-system"},
        "spec": {
            "selector": {"istio": "ingressgateway"},
            "servers": [
                {
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["*"],
                    "tls": {"mode": "SIMPLE", "credentialName": "istio-cert"},
                }
            ],
        },
    }
    store.replace(istio_gateway, [(body, "/ig")])
    assert [s.name for s in store.snapshot().all(core.Secret)] == ["istio-cert"]


def test_a_kind_found_absent_later_loses_its_objects() -> None:
    store, counter = store_of(gatewayapi.HTTPRoute)
    store.replace(gatewayapi.HTTPRoute, [(route(), ROUTE_PATH)])
    assert store.mark_absent(gatewayapi.HTTPRoute)
    assert store.snapshot().all(gatewayapi.HTTPRoute) == []
    assert not store.mark_absent(gatewayapi.HTTPRoute)  # nothing more to say
    assert store.absent() == [gatewayapi.HTTPRoute]
    assert counter.changes == 2
