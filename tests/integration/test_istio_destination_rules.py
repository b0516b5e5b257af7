"""DestinationRules through a real gateway:

- ``subsets`` select endpoints by the labels of the Pods that EndpointSlice ``targetRef``s name:
  v1 and v2 of ``reviews`` are two different upstreams, and a VirtualService picks one by header;
- ``connectionPool.http.h2UpgradePolicy: UPGRADE`` makes an ``http``-named port speak HTTP/2, so
  an HTTP/2-only upstream answers; the same upstream without the rule gets HTTP/1.1 and says 505;
- ``DO_NOT_UPGRADE`` never downgrades an ``http2`` port; ``useClientProtocol`` follows the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from istio_support import (
    PortReservation,
    Stack,
    backend,
    destination_rule,
    endpoint_slice,
    gateway,
    http_request,
    pod,
    run_stack,
    server,
    service,
    virtual_service,
    wait_status,
    write_manifests,
)

from meshxds.testing.upstreams import H2cOnlyServer, Http1OnlyServer, curl

NS = "default"


@dataclass
class Setup:
    stack: Stack
    port: int
    v1: Http1OnlyServer
    v2: Http1OnlyServer
    h2c: H2cOnlyServer


def _route(host: str, destination: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "hosts": [host],
        "gateways": ["istio-system/gw"],
        "http": [{"route": [{"destination": destination}], **extra}],
    }


def manifests(port: int, v1: int, v2: int, h2c: int) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        gateway("gw", "istio-system", [server(port, "HTTP", ["*"], name="http")]),
        # reviews: one Service, two Pods (version v1 / v2), each with its own EndpointSlice and port.
        service("reviews", NS, [{"name": "http", "port": 9080}]),
        endpoint_slice("reviews", NS, {"http": v1}, pods=["reviews-v1-abc"], suffix="v1"),
        endpoint_slice("reviews", NS, {"http": v2}, pods=["reviews-v2-def"], suffix="v2"),
        pod("reviews-v1-abc", NS, {"app": "reviews", "version": "v1"}),
        pod("reviews-v2-def", NS, {"app": "reviews", "version": "v2"}),
        destination_rule(
            "reviews",
            NS,
            {
                "host": "reviews",
                "subsets": [
                    {"name": "v1", "labels": {"version": "v1"}},
                    {"name": "v2", "labels": {"version": "v2"}},
                ],
            },
        ),
        virtual_service(
            "reviews",
            NS,
            {
                "hosts": ["reviews.example.com"],
                "gateways": ["istio-system/gw"],
                "http": [
                    {
                        "match": [{"headers": {"end-user": {"exact": "jason"}}}],
                        "route": [{"destination": {"host": "reviews", "subset": "v2"}}],
                    },
                    {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
                ],
            },
        ),
        # The same HTTP/2-only upstream behind four Services.
        *backend("upgraded", NS, port=8080, upstream_port=h2c),
        *backend("plain", NS, port=8080, upstream_port=h2c),
        *backend("h2port", NS, port=8080, upstream_port=h2c, port_name="http2-web"),
        *backend("client", NS, port=8080, upstream_port=h2c),
        destination_rule(
            "upgraded",
            NS,
            {
                "host": "upgraded",
                "trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}},
            },
        ),
        destination_rule(
            "h2port",
            NS,
            {
                "host": "h2port",
                "trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "DO_NOT_UPGRADE"}}},
            },
        ),
        destination_rule(
            "client",
            NS,
            {"host": "client", "trafficPolicy": {"connectionPool": {"http": {"useClientProtocol": True}}}},
        ),
    ]
    for name in ("upgraded", "plain", "h2port", "client"):
        docs.append(
            virtual_service(name, NS, _route(f"{name}.example.com", {"host": name, "port": {"number": 8080}}))
        )
    return docs


@pytest.fixture
def setup(
    tmp_path: Path, manifest_dir: Path, h2c_upstream: H2cOnlyServer, harness_processes: list[Any]
) -> Iterator[Setup]:
    with (
        PortReservation(1) as reserved,
        Http1OnlyServer(name="reviews-v1") as v1,
        Http1OnlyServer(name="reviews-v2") as v2,
    ):
        port = reserved.ports[0]
        write_manifests(manifest_dir, manifests(port, v1.port, v2.port, h2c_upstream.port))
        with run_stack(
            tmp_path, manifest_dir, listener_ports=[port], reserved=reserved, processes=harness_processes
        ) as stack:
            wait_status(port, "reviews.example.com")
            v1.reset()
            yield Setup(stack=stack, port=port, v1=v1, v2=v2, h2c=h2c_upstream)


# -- subsets by Pod labels ------------------------------------------------------------------------


def test_subset_clusters_hold_only_their_pods_endpoints(setup: Setup) -> None:
    envoy = setup.stack.envoy
    assert envoy.cluster_hosts("outbound|9080|v1|reviews.default.svc.cluster.local") == [
        f"127.0.0.1:{setup.v1.port}"
    ]
    assert envoy.cluster_hosts("outbound|9080|v2|reviews.default.svc.cluster.local") == [
        f"127.0.0.1:{setup.v2.port}"
    ]


def test_subsets_route_to_different_upstreams(setup: Setup) -> None:
    for _ in range(10):
        assert http_request(setup.port, "reviews.example.com").headers["x-upstream-name"] == "reviews-v1"
        jason = http_request(setup.port, "reviews.example.com", headers={"end-user": "jason"})
        assert jason.status == 200
        assert jason.headers["x-upstream-name"] == "reviews-v2"
    assert (setup.v1.requests, setup.v2.requests) == (10, 10)


# -- HTTP/2 upgrade -------------------------------------------------------------------------------


def test_h2_upgrade_reaches_an_http2_only_upstream_on_an_http_port(setup: Setup) -> None:
    response = http_request(setup.port, "upgraded.example.com", "/up")
    assert response.status == 200, response
    assert setup.h2c.last_request is not None
    assert setup.h2c.last_request.protocol == "HTTP/2"
    cluster = "outbound|8080||upgraded.default.svc.cluster.local"
    assert setup.stack.envoy.stat(f"cluster.{cluster}.upstream_cx_http2_total") >= 1


def test_without_the_rule_the_http_port_speaks_http1_and_the_h2_only_upstream_refuses(setup: Setup) -> None:
    before = setup.h2c.requests
    response = http_request(setup.port, "plain.example.com", "/plain")
    # The HTTP/2-only server answers HTTP/1.1 with 505 HTTP Version Not Supported.
    assert response.status == 505, response
    assert setup.h2c.requests == before
    cluster = "outbound|8080||plain.default.svc.cluster.local"
    assert setup.stack.envoy.stat(f"cluster.{cluster}.upstream_cx_http1_total") >= 1
    assert setup.stack.envoy.stat(f"cluster.{cluster}.upstream_cx_http2_total") == 0


def test_do_not_upgrade_never_downgrades_an_http2_port(setup: Setup) -> None:
    response = http_request(setup.port, "h2port.example.com", "/h2")
    assert response.status == 200, response
    assert setup.h2c.last_request is not None and setup.h2c.last_request.protocol == "HTTP/2"


def test_use_client_protocol_follows_the_downstream(setup: Setup) -> None:
    url = f"http://127.0.0.1:{setup.port}/client"
    h2 = curl(url, http2_prior_knowledge=True, headers={"host": "client.example.com"})
    assert (h2.status, h2.http_version) == (200, "2"), h2
    assert h2.json()["protocol"] == "HTTP/2"
    before = setup.h2c.requests
    h1 = curl(url, http1=True, headers={"host": "client.example.com"})
    assert h1.status == 505, h1  # HTTP/1.1 upstream: the h2-only server refuses
    assert setup.h2c.requests == before
