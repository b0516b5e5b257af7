"""The ``bookinfo-rule`` VirtualService of the Istio reference through a real gateway, over SotW
and Delta ADS: cookie ``user=dev-123`` goes to ``reviews.qa`` port 7777, everything else under
``/reviews/`` is split 80/20 between ``reviews.prod:9080`` and ``reviews.qa`` by weight."""

from __future__ import annotations

import http.client
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from istio_support import (
    BOOKINFO_RULE_HTTP,
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

from meshxds.testing.upstreams import Http1OnlyServer

REQUESTS = 400
"""For the 80/20 split: the share's standard deviation is 2 points, so ±7 is 3.5 sigma."""
TOLERANCE = 7.0


@dataclass
class Bookinfo:
    stack: Stack
    port: int
    prod: Http1OnlyServer
    qa: Http1OnlyServer


def manifests(port: int, prod_port: int, qa_port: int) -> list[dict[str, object]]:
    return [
        gateway(
            "my-gateway",
            "some-config-namespace",
            [server(port, "HTTP", ["uk.bookinfo.com", "eu.bookinfo.com"], name="http")],
        ),
        virtual_service(
            "bookinfo-rule",
            "bookinfo-namespace",
            {
                "hosts": ["reviews.prod.svc.cluster.local", "uk.bookinfo.com", "eu.bookinfo.com"],
                "gateways": ["some-config-namespace/my-gateway", "mesh"],
                "http": BOOKINFO_RULE_HTTP,
            },
        ),
        *backend("reviews", "prod", port=9080, upstream_port=prod_port),
        *backend("reviews", "qa", port=7777, upstream_port=qa_port),
    ]


@pytest.fixture(params=["sotw", "delta"])
def bookinfo(
    request: pytest.FixtureRequest, tmp_path: Path, manifest_dir: Path, harness_processes: list[Any]
) -> Iterator[Bookinfo]:
    with (
        PortReservation(1) as reserved,
        Http1OnlyServer(name="reviews-prod") as prod,
        Http1OnlyServer(name="reviews-qa") as qa,
    ):
        port = reserved.ports[0]
        write_manifests(manifest_dir, manifests(port, prod.port, qa.port))
        with run_stack(
            tmp_path,
            manifest_dir,
            delta=request.param == "delta",
            listener_ports=[port],
            reserved=reserved,
            processes=harness_processes,
        ) as stack:
            wait_status(port, "uk.bookinfo.com", "/reviews/0", headers={"cookie": "user=dev-123"})
            prod.reset()
            qa.reset()
            yield Bookinfo(stack=stack, port=port, prod=prod, qa=qa)


@pytest.mark.parametrize(
    "cookie",
    ["user=dev-123", "user=dev-123; theme=dark", "theme=dark;user=dev-123", "a=1;user=dev-123;b=2"],
)
def test_dev_cookie_goes_to_reviews_qa(bookinfo: Bookinfo, cookie: str) -> None:
    for index in range(20):
        response = http_request(
            bookinfo.port, "uk.bookinfo.com", f"/reviews/{index}", headers={"cookie": cookie}
        )
        assert response.status == 200, response
        assert response.headers["x-upstream-name"] == "reviews-qa"
    assert (bookinfo.qa.requests, bookinfo.prod.requests) == (20, 0)


def test_rest_is_split_80_20_by_weight(bookinfo: Bookinfo) -> None:
    seen: Counter[str] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", bookinfo.port, timeout=5)
    try:
        for index in range(REQUESTS):
            # Another user's cookie, and a name that merely contains the dev user's: both not matched.
            cookie = "user=dev-1234" if index % 2 else "user=prod-7"
            conn.request("GET", f"/reviews/{index}", headers={"Host": "eu.bookinfo.com", "cookie": cookie})
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            seen[response.getheader("x-upstream-name") or "?"] += 1
    finally:
        conn.close()
    assert set(seen) <= {"reviews-prod", "reviews-qa"}
    prod_share = 100.0 * seen["reviews-prod"] / REQUESTS
    assert abs(prod_share - 80.0) <= TOLERANCE, seen
    assert bookinfo.prod.requests + bookinfo.qa.requests == REQUESTS


def test_paths_outside_the_rules_are_not_routed(bookinfo: Bookinfo) -> None:
    assert http_request(bookinfo.port, "uk.bookinfo.com", "/ratings/1").status == 404
    assert http_request(bookinfo.port, "us.bookinfo.com", "/reviews/1").status == 404
    assert bookinfo.prod.requests + bookinfo.qa.requests == 0


def test_upstreams_see_the_request_as_sent(bookinfo: Bookinfo) -> None:
    response = http_request(
        bookinfo.port, "uk.bookinfo.com", "/reviews/42?a=b", headers={"cookie": "user=dev-123"}
    )
    assert response.status == 200
    record = bookinfo.qa.last_request
    assert record is not None
    assert record.path == "/reviews/42?a=b"
    assert record.authority == "uk.bookinfo.com"
    assert record.protocol == "HTTP/1.1"
