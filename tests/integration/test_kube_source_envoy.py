"""The Foundation scenario through the Kubernetes source, end to end with real parts:
``meshxds serve --kubeconfig`` against the in-process fake API server (driven by the real
``kubernetes`` client), a real Envoy over ADS, an HTTP/2-only upstream and an HTTP/1.1-only one.

Then the source's promises, each on a fresh stack: an HTTPRoute edit goes live; cut watch
connections, a forced 410 and a 5 s API outage lose nothing (Envoy keeps serving meanwhile, and
afterwards the served config equals a translation of a fresh list); a CRD installed later is
picked up; Gateway and HTTPRoute status is written (observedGeneration, only on change).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EnvoyFactory, MeshxdsFactory
from test_gateway_http2_scenario import (
    GATEWAY_LABELS,
    HTTP1_VARIANTS,
    HTTP2_VARIANTS,
    Variant,
    cluster,
    gateway_yaml,
    service_yaml,
)

from meshxds.identity import ProxyIdentity
from meshxds.model.manifests import KINDS
from meshxds.options import TranslateOptions
from meshxds.pipeline import SnapshotBuilder, translate
from meshxds.sources.files import read_directory
from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.fake_apiserver import FakeApiServer
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.server import MeshxdsProcess
from meshxds.testing.stack import attached
from meshxds.testing.upstreams import H2cOnlyServer, Http1OnlyServer, curl
from meshxds.translators.gatewayapi.features import supported_features
from meshxds.xds.render import dumps, snapshot_to_json

GW = "gateway.networking.k8s.io"
OURS = "meshxds.io/gateway-controller"
GATEWAY_API = [m for m in KINDS.values() if m.API_GROUP == GW]


def install_gateway_api(fake: FakeApiServer, *, without: tuple[str, ...] = ()) -> None:
    fake.install_kinds(m for m in GATEWAY_API if m.KIND not in without)


def kube_args(kubeconfig: Path, *extra: str) -> tuple[str, ...]:
    return ("--kubeconfig", str(kubeconfig), "--listener-address", "127.0.0.1", *extra)


def fresh_config(fake: FakeApiServer, work: Path) -> Any:
    """What a proxy of the gateway would get from a fresh list: every object the API server holds
    now, written to files and translated the way ``meshxds translate`` does."""
    work.mkdir(parents=True, exist_ok=True)
    docs = []
    for (group, kind), _ in sorted(KINDS.items()):
        if fake.served(group, kind) is not None:
            docs.extend(fake.objects(group, kind))
    (work / "all.yaml").write_text(yaml.safe_dump_all(docs))
    translation = translate(read_directory(work), TranslateOptions(listener_address="127.0.0.1"))
    snapshot = SnapshotBuilder(translation)(
        ProxyIdentity.of(namespace="gateway-system", labels=GATEWAY_LABELS)
    )
    return json.loads(dumps(snapshot_to_json(snapshot)))


@dataclass
class KubeStack:
    fake: FakeApiServer
    server: MeshxdsProcess
    envoy: EnvoyProcess
    listener_port: int
    h2c: H2cOnlyServer
    work: Path

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.listener_port}{path}"

    def status(self, host: str) -> int:
        return curl(self.url(), http2_prior_knowledge=True, headers={"host": host}, timeout=2).status

    def wait_status(self, host: str, code: int, *, timeout: float = 10.0) -> float:
        """Seconds until a request for ``host`` through Envoy answers ``code``."""
        started = time.monotonic()
        wait_until(
            lambda: self.status(host) == code, timeout=timeout, interval=0.02, what=f"{host} -> {code}"
        )
        return time.monotonic() - started

    def assert_serves_a_fresh_list(self, label: str, *, timeout: float = 10.0) -> None:
        """The config meshxds serves the gateway equals a translation of a fresh list."""
        expected = fresh_config(self.fake, self.work / f"fresh-{label}")
        wait_until(
            lambda: self.server.config_dump("gw") == expected,
            timeout=timeout,
            what=f"served config equals a fresh list ({label})",
            details=lambda: self.server.log_tail(30),
        )

    def route_status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        obj = self.fake.get(f"{GW}/v1", "HTTPRoute", namespace, name) or {}
        return dict(obj.get("status") or {})


def route_yaml(name: str, *hostnames: str, backend: str | None = None) -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: http, namespace: gateway-system}}]
  hostnames: [{", ".join(hostnames)}]
  rules:
    - backendRefs: [{{name: {backend or name}, port: 8080}}]
"""


def upstream_yaml(name: str, port: int) -> str:
    """Service + EndpointSlice (HTTP/2 by appProtocol) + HTTPRoute for ``<name>.example.com``."""
    return service_yaml(name, port_name=None, app_protocol="http2", upstream_port=port)


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval_s=1.0) as api:
        yield api


@pytest.fixture
def kube_stack(
    fake_api: FakeApiServer,
    tmp_path: Path,
    h2c_upstream: H2cOnlyServer,
    meshxds_factory: MeshxdsFactory,
    envoy_factory: EnvoyFactory,
) -> Callable[..., KubeStack]:
    """Start meshxds on the fake API (the Foundation gateway and ``nginx`` already in it) and an
    Envoy for the gateway; ``without`` leaves Gateway API CRDs out; ``extra``: more serve flags."""

    def start(
        *, delta: bool = False, without: tuple[str, ...] = (), extra: tuple[str, ...] = ()
    ) -> KubeStack:
        listener_port = free_port()
        install_gateway_api(fake_api, without=without)
        fake_api.apply_yaml(gateway_yaml(listener_port))
        docs = yaml.safe_load_all(upstream_yaml("nginx", h2c_upstream.port))
        for doc in docs:
            if fake_api.served(doc["apiVersion"].rpartition("/")[0], doc["kind"]) is not None:
                fake_api.apply(doc)
        kubeconfig = fake_api.write_kubeconfig(tmp_path / "kubeconfig")
        server = meshxds_factory(None, extra_args=kube_args(kubeconfig, *extra))
        envoy = envoy_factory(node_id="gw", namespace="gateway-system", labels=GATEWAY_LABELS, delta=delta)
        server.wait_synced("gw")
        return KubeStack(fake_api, server, envoy, listener_port, h2c_upstream, tmp_path)

    return start


# --- the Foundation scenario, every variant, SotW and Delta --------------------------------------


@dataclass
class Foundation:
    fake: FakeApiServer
    server: MeshxdsProcess
    envoy: EnvoyProcess
    listener_port: int
    h2c: H2cOnlyServer

    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener_port}/"


@pytest.fixture(scope="module", params=["sotw", "delta"])
def foundation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Foundation]:
    base = tmp_path_factory.mktemp(f"kube-foundation-{request.param}")
    listener_port = free_port()
    with (
        FakeApiServer(bookmark_interval_s=1.0) as fake,
        H2cOnlyServer(name="h2c") as h2c,
        Http1OnlyServer(name="http1") as http1,
    ):
        install_gateway_api(fake)
        fake.apply_yaml(gateway_yaml(listener_port))
        for variants, upstream in ((HTTP2_VARIANTS, h2c.port), (HTTP1_VARIANTS, http1.port)):
            for v in variants:
                fake.apply_yaml(
                    service_yaml(
                        v.name, port_name=v.port_name, app_protocol=v.app_protocol, upstream_port=upstream
                    )
                )
        kubeconfig = fake.write_kubeconfig(base / "kubeconfig")
        server = MeshxdsProcess(None, extra_args=kube_args(kubeconfig), work_dir=base / "server")
        envoy = EnvoyProcess.for_node(
            node_id=f"gw-{request.param}",
            namespace="gateway-system",
            labels=GATEWAY_LABELS,
            xds_port=server.xds_port,
            delta=request.param == "delta",
            work_dir=base / "envoy",
        )
        with attached(server, envoy):
            yield Foundation(fake, server, envoy, listener_port, h2c)


@pytest.mark.parametrize("variant", HTTP2_VARIANTS, ids=lambda v: f"{v.name}-{v.app_protocol or v.port_name}")
def test_http2_service_reaches_http2_only_upstream(foundation: Foundation, variant: Variant) -> None:
    result = curl(
        foundation.url(), http2_prior_knowledge=True, headers={"host": f"{variant.name}.example.com"}
    )
    assert result.status == 200, result
    assert result.json()["protocol"] == "HTTP/2"
    stats = foundation.envoy.stats()
    assert stats[f"cluster.{cluster(variant.name)}.upstream_cx_http2_total"] >= 1
    assert stats[f"cluster.{cluster(variant.name)}.upstream_cx_http1_total"] == 0


@pytest.mark.parametrize("variant", HTTP1_VARIANTS, ids=lambda v: v.name)
def test_http_or_unnamed_port_talks_http1(foundation: Foundation, variant: Variant) -> None:
    result = curl(
        foundation.url(), http2_prior_knowledge=True, headers={"host": f"{variant.name}.example.com"}
    )
    assert result.status == 200, result
    assert result.json()["protocol"] == "HTTP/1.1"


def test_config_is_served_with_api_paths_as_origins(foundation: Foundation) -> None:
    config = json.loads(foundation.server.get("/debug/config"))
    assert config["errors"] == []
    statuses = {(s["kind"], s["name"]) for s in config["status"]}
    assert ("Gateway", "http") in statuses and ("HTTPRoute", "nginx") in statuses


def test_status_is_written_for_gateway_class_gateway_and_routes_once(foundation: Foundation) -> None:
    fake = foundation.fake

    def written() -> dict[str, Any] | None:
        gw = fake.get(f"{GW}/v1", "Gateway", "gateway-system", "http") or {}
        routes = [r for r in fake.objects(GW, "HTTPRoute") if r.get("status", {}).get("parents")]
        return gw if gw.get("status") and len(routes) == len(HTTP2_VARIANTS) + len(HTTP1_VARIANTS) else None

    gateway = wait_until(written, timeout=10, what="status written")
    conditions = {c["type"]: c for c in gateway["status"]["conditions"]}
    assert conditions["Accepted"]["status"] == "True" and conditions["Programmed"]["status"] == "True"
    assert {c["observedGeneration"] for c in conditions.values()} == {gateway["metadata"]["generation"]}
    assert all(c["lastTransitionTime"].endswith("Z") for c in conditions.values())
    (listener,) = gateway["status"]["listeners"]
    assert listener["attachedRoutes"] == len(HTTP2_VARIANTS) + len(HTTP1_VARIANTS)
    for route in fake.objects(GW, "HTTPRoute"):
        (parent,) = route["status"]["parents"]
        assert parent["controllerName"] == OURS
        assert parent["parentRef"]["name"] == "http"
        by_type = {c["type"]: c for c in parent["conditions"]}
        assert by_type["Accepted"]["status"] == "True" and by_type["ResolvedRefs"]["status"] == "True"
        assert by_type["Accepted"]["observedGeneration"] == route["metadata"]["generation"]
    gateway_class = fake.get(f"{GW}/v1", "GatewayClass", "", "meshxds") or {}
    assert gateway_class["status"]["conditions"][0]["type"] == "Accepted"
    assert gateway_class["status"]["supportedFeatures"] == supported_features()
    # No spec.addresses, no --gateway-address: the concrete --listener-address.
    assert gateway["status"]["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    # Only on change: one write per object, and none while nothing changes.
    writes = [w.path for w in fake.status_writes()]
    assert len(writes) == len(set(writes)) == 2 + len(HTTP2_VARIANTS) + len(HTTP1_VARIANTS)
    time.sleep(1.5)
    assert len(fake.status_writes()) == len(writes)


# --- live changes and failures, each on a fresh stack ---------------------------------------------


def test_an_httproute_edit_goes_live_and_its_status_follows(kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack()
    assert stack.status("nginx.example.com") == 200
    generation = stack.fake.apply_yaml(route_yaml("nginx", "edited.example.com", backend="nginx"))[0][
        "metadata"
    ]["generation"]
    took = stack.wait_status("edited.example.com", 200)
    assert stack.status("nginx.example.com") == 404
    print(f"HTTPRoute edit live through Envoy after {took * 1000:.0f} ms")
    assert took < 2.0
    wait_until(
        lambda: (
            stack.route_status("nginx")["parents"][0]["conditions"][0]["observedGeneration"] == generation
        ),
        timeout=5,
        what="route status observedGeneration follows",
    )


def test_cut_watch_connections_lose_nothing(kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack(delta=True)
    fake = stack.fake
    for i in range(3):
        fake.drop_watches()
        fake.apply_yaml(upstream_yaml(f"extra{i}", stack.h2c.port))
    fake.drop_watches()
    fake.delete(f"{GW}/v1", "HTTPRoute", "default", "extra1")
    fake.apply_yaml(route_yaml("extra0", "renamed.example.com", backend="extra0"))
    stack.wait_status("extra2.example.com", 200)
    stack.wait_status("renamed.example.com", 200)
    assert stack.status("extra1.example.com") == 404
    assert stack.status("extra0.example.com") == 404
    stack.assert_serves_a_fresh_list("after-cuts")
    assert any("watch" in r.query for r in fake.requests_for(method="GET", path="/httproutes$"))


def test_410_relists(kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack()
    fake = stack.fake
    lists_before = [r for r in fake.requests_for(method="GET", path="/httproutes$") if "watch" not in r.query]
    fake.drop_watches()
    fake.apply_yaml(upstream_yaml("late", stack.h2c.port))
    fake.delete(f"{GW}/v1", "HTTPRoute", "default", "nginx")
    fake.expire()  # the history of the gap is compacted: the re-watch gets 410 Gone
    stack.wait_status("late.example.com", 200)
    stack.wait_status("nginx.example.com", 404)
    lists_after = [r for r in fake.requests_for(method="GET", path="/httproutes$") if "watch" not in r.query]
    assert len(lists_after) > len(lists_before)
    stack.assert_serves_a_fresh_list("after-410")
    assert "relisting" in stack.server.log_path.read_text()


def test_api_server_down_5s_envoy_keeps_serving_then_catches_up(kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack(delta=True)
    fake = stack.fake
    before = stack.server.acked_versions("gw")
    fake.stop()
    down_at = time.monotonic()
    fake.apply_yaml(upstream_yaml("while-down", stack.h2c.port))
    fake.apply_yaml(route_yaml("nginx", "nginx.example.com", "moved.example.com", backend="nginx"))
    served = 0
    while time.monotonic() - down_at < 5.0:
        assert stack.status("nginx.example.com") == 200  # the last good config keeps working
        assert stack.server.request("GET", "/readyz")[0] == 200
        served += 1
        time.sleep(0.25)
    assert stack.server.acked_versions("gw") == before
    fake.start()
    took = stack.wait_status("while-down.example.com", 200, timeout=15)
    assert stack.status("moved.example.com") == 200
    stack.assert_serves_a_fresh_list("after-outage")
    print(f"served {served} requests during the 5 s outage; caught up {took * 1000:.0f} ms after restart")


def test_a_crd_installed_later_is_picked_up(kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack(without=("HTTPRoute",))
    assert stack.status("nginx.example.com") == 404  # the gateway listens, no route yet
    log = stack.server.log_path.read_text()
    assert log.count(f"{GW}/HTTPRoute") >= 1 and "not served" in log
    stack.fake.install_crd(GW, "HTTPRoute", versions=("v1", "v1beta1"))
    stack.fake.apply_yaml(route_yaml("nginx", "nginx.example.com"))
    took = stack.wait_status("nginx.example.com", 200)
    print(f"HTTPRoute CRD installed: route live after {took * 1000:.0f} ms")
    assert took < 3.0
    stack.assert_serves_a_fresh_list("crd-later")


def test_an_invalid_object_is_reported_and_the_rest_still_served(
    kube_stack: Callable[..., KubeStack],
) -> None:
    stack = kube_stack()
    bad = upstream_yaml("bad", stack.h2c.port).replace("port: 8080", "port: 80800", 1)  # the Service port
    stack.fake.apply_yaml(bad)  # the fake does not check schemas; a real API server would
    stack.fake.apply_yaml(upstream_yaml("good", stack.h2c.port))
    stack.wait_status("good.example.com", 200)

    def errors() -> list[dict[str, str]]:
        return list(json.loads(stack.server.get("/debug/config"))["errors"])

    (error,) = wait_until(errors, timeout=5, what="the invalid Service reported")
    assert error["file"] == "/api/v1/namespaces/default/services/bad"
    assert (error["object"], error["field"]) == ("Service/default/bad", "spec.ports[0].port")
    # Its route is served, without a backend (the Service is left out), like any missing backend.
    assert stack.status("nginx.example.com") == 200
    stack.fake.apply_yaml(upstream_yaml("bad", stack.h2c.port))  # fixed
    stack.wait_status("bad.example.com", 200)
    assert errors() == []


def test_gateway_addresses_follow_the_flag_and_spec_addresses(kube_stack: Callable[..., KubeStack]) -> None:
    stack = kube_stack(extra=("--gateway-address", "lb.example.com"))
    fake = stack.fake

    def status() -> dict[str, Any]:
        return dict((fake.get(f"{GW}/v1", "Gateway", "gateway-system", "http") or {}).get("status") or {})

    def programmed() -> dict[str, Any]:
        return {c["type"]: c for c in status().get("conditions") or ()}.get("Programmed") or {}

    lb = {"type": "Hostname", "value": "lb.example.com"}
    wait_until(lambda: status().get("addresses") == [lb], timeout=10, what="the flag's address written")
    gateway_class = fake.get(f"{GW}/v1", "GatewayClass", "", "meshxds") or {}
    assert gateway_class["status"]["supportedFeatures"] == supported_features()

    # spec.addresses asks for the load balancer and an address the proxies are not reachable at.
    body = fake.get(f"{GW}/v1", "Gateway", "gateway-system", "http") or {}
    body["spec"]["addresses"] = [lb, {"type": "IPAddress", "value": "192.0.2.1"}]
    fake.apply(body)
    wait_until(lambda: programmed().get("reason") == "AddressNotUsable", timeout=10, what="AddressNotUsable")
    assert programmed()["status"] == "False" and "192.0.2.1" in programmed()["message"]
    assert (
        programmed()["observedGeneration"]
        == fake.get(f"{GW}/v1", "Gateway", "gateway-system", "http")["metadata"]["generation"]
    )
    assert status()["addresses"] == [lb]
    assert stack.status("nginx.example.com") == 200, "the listeners stay served"

    # Only the listener address (where the proxies bind, so usable): programmed, and reported.
    body = fake.get(f"{GW}/v1", "Gateway", "gateway-system", "http") or {}
    body["spec"]["addresses"] = [{"type": "IPAddress", "value": "127.0.0.1"}]
    fake.apply(body)
    wait_until(
        lambda: (
            programmed().get("status") == "True"
            and status().get("addresses") == [{"type": "IPAddress", "value": "127.0.0.1"}]
        ),
        timeout=10,
        what="programmed with the listener address",
    )
    assert stack.status("nginx.example.com") == 200
