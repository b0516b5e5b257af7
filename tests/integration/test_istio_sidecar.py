"""A sidecar: a proxy whose labels no Istio Gateway selects gets the mesh's outbound config.

No iptables here: the application sends to the sidecar's listener ``127.0.0.1:<service port>``
with the service's Host. So service port numbers are free ports. A ``mesh`` VirtualService
(``bookinfo-rule`` style: cookie → ``reviews.qa``) routes ``reviews``; a service without any
VirtualService gets a default route; a TCP port gets a TCP proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from istio_support import (
    GATEWAY_LABELS,
    SIDECAR_LABELS,
    PortReservation,
    Stack,
    backend,
    gateway,
    http_request,
    run_stack,
    server,
    virtual_service,
    wait_status,
    write_manifests,
)

from meshxds.testing.ports import free_port
from meshxds.testing.upstreams import Http1OnlyServer, curl


@dataclass
class Ports:
    reviews: int
    reviews_qa: int
    ratings: int
    db: int
    shared: int


@dataclass
class Mesh:
    stack: Stack
    ports: Ports
    upstreams: dict[str, Http1OnlyServer]


def manifests(ports: Ports, real: dict[str, int]) -> list[dict[str, Any]]:
    to_qa = [{"destination": {"host": "reviews.qa.svc.cluster.local", "port": {"number": ports.reviews_qa}}}]
    return [
        # A gateway exists, but it selects other labels: the proxy under test is a sidecar.
        gateway("ingress", "istio-system", [server(free_port(), "HTTP", ["*"])], selector=GATEWAY_LABELS),
        virtual_service(
            "reviews-route",
            "prod",
            {
                "hosts": ["reviews.prod.svc.cluster.local"],
                "gateways": ["mesh"],
                "http": [
                    # sourceLabels: only for workloads so labelled (the proxy is app=productpage, v1).
                    {"match": [{"sourceLabels": {"app": "reviews"}}], "route": to_qa},
                    {
                        "match": [{"sourceLabels": {"version": "v1"}, "uri": {"prefix": "/v1-only"}}],
                        "route": to_qa,
                    },
                    {
                        "match": [{"headers": {"cookie": {"regex": "^(.*?;)?(user=dev-123)(;.*)?$"}}}],
                        "route": to_qa,
                    },
                    {"route": [{"destination": {"host": "reviews.prod.svc.cluster.local"}}]},
                ],
            },
        ),
        *backend("reviews", "prod", port=ports.reviews, upstream_port=real["reviews-prod"]),
        *backend("reviews", "qa", port=ports.reviews_qa, upstream_port=real["reviews-qa"]),
        *backend("ratings", "prod", port=ports.ratings, upstream_port=real["ratings"]),
        *backend("db", "prod", port=ports.db, upstream_port=real["db"], port_name="tcp-db"),
        # Two services on one port, in two namespaces: each name form belongs to one of them.
        *backend("details", "prod", port=ports.shared, upstream_port=real["details-prod"]),
        *backend("details", "qa", port=ports.shared, upstream_port=real["details-qa"]),
    ]


NAMES = ("reviews-prod", "reviews-qa", "ratings", "db", "details-prod", "details-qa")


@pytest.fixture(params=["prod", "qa"])
def mesh(
    request: pytest.FixtureRequest, tmp_path: Path, manifest_dir: Path, harness_processes: list[Any]
) -> Iterator[Mesh]:
    """The sidecar of a workload in namespace ``request.param``."""
    reserved = PortReservation(5)
    ports = Ports(*reserved.ports)
    with (
        reserved,
        Http1OnlyServer(name=NAMES[0]) as a,
        Http1OnlyServer(name=NAMES[1]) as b,
        Http1OnlyServer(name=NAMES[2]) as c,
        Http1OnlyServer(name=NAMES[3]) as d,
        Http1OnlyServer(name=NAMES[4]) as e,
        Http1OnlyServer(name=NAMES[5]) as f,
    ):
        upstreams = dict(zip(NAMES, (a, b, c, d, e, f), strict=True))
        write_manifests(manifest_dir, manifests(ports, {n: u.port for n, u in upstreams.items()}))
        with run_stack(
            tmp_path,
            manifest_dir,
            labels=SIDECAR_LABELS,
            namespace=request.param,
            node_id=f"productpage-{request.param}",
            listener_ports=[ports.reviews, ports.reviews_qa, ports.ratings, ports.db, ports.shared],
            reserved=reserved,
            processes=harness_processes,
        ) as stack:
            wait_status(ports.reviews, "reviews.prod.svc.cluster.local")
            for upstream in upstreams.values():
                upstream.reset()
            yield Mesh(stack=stack, ports=ports, upstreams=upstreams)


@pytest.mark.parametrize(
    "host",
    [
        "reviews.prod",
        "reviews.prod.svc",
        "reviews.prod.svc.cluster.local",
        "reviews.prod.svc.cluster.local:{port}",
    ],
)
def test_mesh_virtual_service_routes_every_name_form(mesh: Mesh, host: str) -> None:
    host = host.format(port=mesh.ports.reviews)
    plain = http_request(mesh.ports.reviews, host, "/reviews/1")
    assert plain.status == 200, plain
    assert plain.headers["x-upstream-name"] == "reviews-prod"
    dev = http_request(mesh.ports.reviews, host, "/reviews/1", headers={"cookie": "user=dev-123"})
    assert dev.status == 200, dev
    assert dev.headers["x-upstream-name"] == "reviews-qa"
    assert mesh.upstreams["reviews-qa"].last_request is not None
    assert mesh.upstreams["reviews-qa"].last_request.path == "/reviews/1"


def test_source_labels_select_rules_by_the_proxys_labels(mesh: Mesh) -> None:
    response = http_request(mesh.ports.reviews, "reviews.prod.svc.cluster.local", "/v1-only/x")
    assert response.headers["x-upstream-name"] == "reviews-qa"  # the proxy is version=v1
    # The app=reviews rule is not for this proxy: without the cookie, reviews.prod answers.
    assert http_request(mesh.ports.reviews, "reviews.prod.svc.cluster.local", "/x").headers[
        "x-upstream-name"
    ] == ("reviews-prod")


def test_bare_name_is_only_the_proxys_own_namespace(mesh: Mesh) -> None:
    """``Host: reviews`` means reviews.prod from a workload in prod; from one in qa it is
    reviews.qa (another port), so on reviews.prod's port it matches nothing (Istio generates the
    bare name only for services of the proxy's namespace)."""
    namespace = mesh.stack.envoy.bootstrap["node"]["metadata"]["namespace"]
    response = http_request(mesh.ports.reviews, "reviews", "/reviews/1", headers={"cookie": "user=dev-123"})
    if namespace == "prod":
        assert response.status == 200, response
        assert response.headers["x-upstream-name"] == "reviews-qa"
        return
    assert response.status == 404, f"{response.status} from {response.headers.get('x-upstream-name')}"


def test_default_route_without_virtual_service(mesh: Mesh) -> None:
    for host in ("ratings.prod", "ratings.prod.svc.cluster.local"):
        response = http_request(mesh.ports.ratings, host, "/ratings/0")
        assert response.status == 200, response
        assert response.headers["x-upstream-name"] == "ratings"
    # The destination service itself (no VirtualService) is reached on its own port.
    direct = http_request(mesh.ports.reviews_qa, "reviews.qa.svc.cluster.local", "/x")
    assert direct.headers["x-upstream-name"] == "reviews-qa"


def test_unknown_host_on_a_service_port_is_not_routed(mesh: Mesh) -> None:
    assert http_request(mesh.ports.reviews, "nobody.prod.svc.cluster.local").status == 404
    # ratings is not served on reviews' port.
    assert http_request(mesh.ports.reviews, "ratings.prod.svc.cluster.local").status == 404


def test_tcp_port_gets_a_tcp_proxy(mesh: Mesh) -> None:
    result = curl(f"http://127.0.0.1:{mesh.ports.db}/over-tcp", http1=True, headers={"host": "anything"})
    assert result.status == 200, result
    assert result.json()["upstream"] == "db"
    assert result.json()["authority"] == "anything"  # bytes as sent: no HTTP processing


def test_services_sharing_a_port_keep_their_qualified_names(mesh: Mesh) -> None:
    for namespace in ("prod", "qa"):
        response = http_request(mesh.ports.shared, f"details.{namespace}.svc.cluster.local")
        assert response.headers["x-upstream-name"] == f"details-{namespace}"
        response = http_request(mesh.ports.shared, f"details.{namespace}")
        assert response.headers["x-upstream-name"] == f"details-{namespace}"


def test_bare_name_on_a_shared_port_is_the_proxys_namespace_service(mesh: Mesh) -> None:
    """Istio generates the bare name ``details`` only for the service of the proxy's own
    namespace (GenerateAltVirtualHosts with the proxy's DNS domain ``NS.svc.cluster.local``)."""
    namespace = mesh.stack.envoy.bootstrap["node"]["metadata"]["namespace"]
    response = http_request(mesh.ports.shared, "details")
    assert response.status == 200, response
    assert response.headers["x-upstream-name"] == f"details-{namespace}"
