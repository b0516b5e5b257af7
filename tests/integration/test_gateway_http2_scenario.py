"""The Foundation scenario (kgateway's "HTTP/2 for in-cluster services", without Kubernetes),
end to end with real parts: ``meshxds serve`` on a directory, a real Envoy over ADS (SotW and
Delta), an HTTP/2-only upstream that answers HTTP/1.1 with 505, and an HTTP/1.1-only upstream.

Each HTTP/2 claim is proved on the wire: the request reaches the upstream that speaks only
HTTP/2, and Envoy's stats count HTTP/2 (never HTTP/1) connections on that cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs, to_yaml
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.server import MeshxdsProcess
from meshxds.testing.stack import attached, local_gateway
from meshxds.testing.upstreams import H2cOnlyServer, Http1OnlyServer, curl

GATEWAY_LABELS = {"gateway.networking.k8s.io/gateway-name": "http"}


def gateway_yaml(port: int) -> str:
    return to_yaml(gateway_api_docs([gateway_listener(port)]))


def service_yaml(name: str, *, port_name: str | None, app_protocol: str | None, upstream_port: int) -> str:
    """A Service port 8080, an EndpointSlice at 127.0.0.1:upstream_port, and an HTTPRoute
    for host ``<name>.example.com`` — the kgateway guide's three objects."""
    return to_yaml(
        routed_service_docs(
            name,
            upstream_port=upstream_port,
            hostnames=[f"{name}.example.com"],
            port_name=port_name,
            app_protocol=app_protocol,
        )
    )


@dataclass(frozen=True)
class Variant:
    name: str
    port_name: str | None
    app_protocol: str | None


# Every way the issue names to select HTTP/2 upstream; each gets its own Service and host.
HTTP2_VARIANTS = [
    Variant("nginx", None, "http2"),
    Variant("grpc-app", None, "grpc"),
    Variant("grpcweb-app", None, "grpc-web"),
    Variant("h2c-app", None, "kubernetes.io/h2c"),
    Variant("named-http2", "http2-web", None),
    Variant("named-grpc", "GRPC-api", None),
]
HTTP1_VARIANTS = [Variant("named-http", "http", None), Variant("unnamed", None, None)]


def cluster(service: str) -> str:
    return f"outbound|8080||{service}.default.svc.cluster.local"


@dataclass
class Stack:
    server: MeshxdsProcess
    envoy: EnvoyProcess
    listener_port: int
    h2c: H2cOnlyServer
    http1: Http1OnlyServer

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.listener_port}{path}"


@pytest.fixture(scope="module", params=["sotw", "delta"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One server + one Envoy per xDS mode, serving every variant at once."""
    base = tmp_path_factory.mktemp(f"scenario-{request.param}")
    manifests = base / "manifests"
    manifests.mkdir()
    listener_port = free_port()
    with H2cOnlyServer(name="h2c") as h2c, Http1OnlyServer(name="http1") as http1:
        (manifests / "gateway.yaml").write_text(gateway_yaml(listener_port))
        for v in HTTP2_VARIANTS:
            (manifests / f"{v.name}.yaml").write_text(
                service_yaml(
                    v.name, port_name=v.port_name, app_protocol=v.app_protocol, upstream_port=h2c.port
                )
            )
        for v in HTTP1_VARIANTS:
            (manifests / f"{v.name}.yaml").write_text(
                service_yaml(
                    v.name, port_name=v.port_name, app_protocol=v.app_protocol, upstream_port=http1.port
                )
            )
        server = MeshxdsProcess(
            manifests, extra_args=("--listener-address", "127.0.0.1"), work_dir=base / "server"
        )
        envoy = EnvoyProcess.for_node(
            node_id=f"gateway-{request.param}",
            namespace="gateway-system",
            labels=GATEWAY_LABELS,
            xds_port=server.xds_port,
            delta=request.param == "delta",
            work_dir=base / "envoy",
        )
        with attached(server, envoy):
            yield Stack(server=server, envoy=envoy, listener_port=listener_port, h2c=h2c, http1=http1)


@pytest.mark.parametrize("variant", HTTP2_VARIANTS, ids=lambda v: f"{v.name}-{v.app_protocol or v.port_name}")
def test_http2_service_reaches_http2_only_upstream(stack: Stack, variant: Variant) -> None:
    before = stack.h2c.requests
    result = curl(stack.url(), http2_prior_knowledge=True, headers={"host": f"{variant.name}.example.com"})
    assert result.status == 200, result
    assert result.http_version == "2"
    assert result.json()["protocol"] == "HTTP/2"
    assert stack.h2c.requests == before + 1
    stats = stack.envoy.stats()
    assert stats[f"cluster.{cluster(variant.name)}.upstream_cx_http2_total"] >= 1
    assert stats[f"cluster.{cluster(variant.name)}.upstream_cx_http1_total"] == 0


@pytest.mark.parametrize("variant", HTTP1_VARIANTS, ids=lambda v: v.name)
def test_http_or_unnamed_port_talks_http1(stack: Stack, variant: Variant) -> None:
    # The client speaks HTTP/2 to Envoy; the upstream leg must still be HTTP/1.1.
    result = curl(stack.url(), http2_prior_knowledge=True, headers={"host": f"{variant.name}.example.com"})
    assert result.status == 200, result
    assert result.json()["protocol"] == "HTTP/1.1"
    stats = stack.envoy.stats()
    assert stats[f"cluster.{cluster(variant.name)}.upstream_cx_http1_total"] >= 1
    assert stats.get(f"cluster.{cluster(variant.name)}.upstream_cx_http2_total", 0) == 0


def test_plain_http1_client_also_gets_http2_upstream(stack: Stack) -> None:
    result = curl(stack.url(), http1=True, headers={"host": "nginx.example.com"})
    assert result.status == 200, result
    assert result.http_version == "1.1"
    assert result.json()["protocol"] == "HTTP/2"


def test_host_with_port_still_matches(stack: Stack) -> None:
    result = curl(
        stack.url(), http2_prior_knowledge=True, headers={"host": f"nginx.example.com:{stack.listener_port}"}
    )
    assert result.status == 200, result


def test_unclaimed_host_gets_404(stack: Stack) -> None:
    result = curl(stack.url(), http2_prior_knowledge=True, headers={"host": "nobody.example.com"})
    assert result.status == 404


def test_names_follow_the_contract(stack: Stack) -> None:
    assert f"127.0.0.1_{stack.listener_port}" in stack.envoy.listener_names()
    assert cluster("nginx") in stack.envoy.cluster_names()
    assert f"http.{stack.listener_port}" in stack.envoy.route_config_names()


# --- live changes: one fresh server + Envoy per test, so the edits do not leak ---


@pytest.fixture(params=["sotw", "delta"])
def live(
    request: pytest.FixtureRequest, manifest_dir: Path, tmp_path: Path, h2c_upstream: H2cOnlyServer
) -> Iterator[tuple[Stack, Path]]:
    listener_port = free_port()
    (manifest_dir / "gateway.yaml").write_text(gateway_yaml(listener_port))
    (manifest_dir / "nginx.yaml").write_text(
        service_yaml("nginx", port_name=None, app_protocol="http2", upstream_port=h2c_upstream.port)
    )
    with (
        Http1OnlyServer(name="http1") as http1,
        local_gateway(
            manifest_dir,
            node_id="gw",
            namespace="gateway-system",
            labels=GATEWAY_LABELS,
            delta=request.param == "delta",
            work_dir=tmp_path,
        ) as (server, envoy),
    ):
        stack = Stack(server=server, envoy=envoy, listener_port=listener_port, h2c=h2c_upstream, http1=http1)
        yield stack, manifest_dir


def _status(stack: Stack, host: str) -> int:
    return curl(stack.url(), http2_prior_knowledge=True, headers={"host": host}).status


def test_file_added_then_removed(live: tuple[Stack, Path]) -> None:
    stack, manifests = live
    assert _status(stack, "extra.example.com") == 404
    (manifests / "extra.yaml").write_text(
        service_yaml("extra", port_name="grpc-x", app_protocol=None, upstream_port=stack.h2c.port)
    )
    wait_until(lambda: _status(stack, "extra.example.com") == 200, timeout=10, what="new route live")
    (manifests / "extra.yaml").unlink()
    wait_until(lambda: _status(stack, "extra.example.com") == 404, timeout=10, what="route gone")
    wait_until(
        lambda: cluster("extra") not in stack.envoy.cluster_names(), timeout=10, what="stale cluster removed"
    )
    assert _status(stack, "nginx.example.com") == 200


def test_an_invalid_object_is_left_out_and_the_rest_of_its_file_served_then_recovers(
    live: tuple[Stack, Path],
) -> None:
    stack, manifests = live
    bad = manifests / "broken.yaml"
    bad.write_text(
        service_yaml("later", port_name=None, app_protocol="http2", upstream_port=stack.h2c.port).replace(
            "port: 8080", "port: 80800", 1
        )
    )

    def reported() -> list[dict[str, str]]:
        import json

        return list(json.loads(stack.server.get("/debug/config"))["errors"])

    errors = wait_until(reported, timeout=10, what="error reported")
    assert errors[0]["file"].endswith("broken.yaml")
    assert errors[0]["object"] == "Service/default/later"
    assert errors[0]["field"] == "spec.ports[0].port"
    assert _status(stack, "nginx.example.com") == 200
    # The file's valid HTTPRoute is served; its backend Service is not, so the route answers 500.
    wait_until(lambda: _status(stack, "later.example.com") == 500, timeout=10, what="route without backend")
    # Fixing the file brings its route in.
    bad.write_text(service_yaml("later", port_name=None, app_protocol="http2", upstream_port=stack.h2c.port))
    wait_until(lambda: _status(stack, "later.example.com") == 200, timeout=10, what="fixed file served")
    assert reported() == []


def test_an_endpoint_edit_moves_traffic_by_eds_alone_and_other_services_keep_theirs(
    live: tuple[Stack, Path],
) -> None:
    """The endpoint fast path with a real Envoy: only EDS is pushed (SotW: the one changed load
    assignment, which Envoy merges into what it holds), and the untouched service keeps serving."""
    stack, manifests = live
    nowhere = free_port()  # nothing listens there
    edge = manifests / "edge.yaml"
    edge.write_text(service_yaml("edge", port_name=None, app_protocol="http2", upstream_port=nowhere))
    wait_until(lambda: _status(stack, "edge.example.com") == 503, timeout=10, what="edge routed, no upstream")
    acked = stack.server.acked_versions("gw")
    edge.write_text(service_yaml("edge", port_name=None, app_protocol="http2", upstream_port=stack.h2c.port))
    wait_until(lambda: _status(stack, "edge.example.com") == 200, timeout=10, what="edge's new endpoint")
    now = stack.server.acked_versions("gw")
    changed = {type_url for type_url in now if now[type_url] != acked.get(type_url)}
    assert changed == {"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}
    assert "update path=endpoints" in stack.server.log_path.read_text()
    assert _status(stack, "nginx.example.com") == 200
