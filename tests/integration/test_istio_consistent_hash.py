"""DestinationRule ``consistentHash`` through real Envoy: a user (header) or a session (cookie)
keeps reaching the same one of three endpoints, while different users spread over them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from istio_support import (
    PortReservation,
    destination_rule,
    endpoint_slice,
    gateway,
    http_request,
    run_stack,
    server,
    service,
    virtual_service,
    write_manifests,
)

from meshxds.testing.upstreams import Http1OnlyServer

USERS = 12
REQUESTS_PER_USER = 5


@pytest.fixture(params=["header", "cookie"])
def sticky(
    request: pytest.FixtureRequest, tmp_path: Path, manifest_dir: Path, harness_processes: list[Any]
) -> Iterator[tuple[int, str]]:
    hashing: dict[str, Any] = (
        {"httpHeaderName": "x-user", "ringHash": {"minimumRingSize": 1024}}
        if request.param == "header"
        else {"httpCookie": {"name": "session", "ttl": "60s"}, "maglev": {"tableSize": 65537}}
    )
    with ExitStack() as stack, PortReservation(1) as reserved:
        upstreams = [stack.enter_context(Http1OnlyServer(name=f"u{i}")) for i in range(3)]
        port = reserved.ports[0]
        docs = [
            gateway("gw", "istio-system", [server(port, "HTTP", ["*"])]),
            virtual_service(
                "sticky",
                "default",
                {
                    "hosts": ["sticky.example.com"],
                    "gateways": ["istio-system/gw"],
                    "http": [{"route": [{"destination": {"host": "sticky"}}]}],
                },
            ),
            destination_rule(
                "sticky",
                "default",
                {"host": "sticky", "trafficPolicy": {"loadBalancer": {"consistentHash": hashing}}},
            ),
            service("sticky", "default", [{"name": "http", "port": 80}]),
            *(
                endpoint_slice("sticky", "default", {"http": u.port}, suffix=str(i))
                for i, u in enumerate(upstreams)
            ),
        ]
        write_manifests(manifest_dir, docs)
        with run_stack(
            tmp_path, manifest_dir, listener_ports=[port], reserved=reserved, processes=harness_processes
        ):
            yield port, request.param


def _answer(port: int, kind: str, user: str) -> str:
    headers = {"x-user": user} if kind == "header" else {"cookie": f"session={user}"}
    response = http_request(port, "sticky.example.com", "/", headers=headers)
    assert response.status == 200, response
    return response.headers["x-upstream-name"]


def test_same_key_same_endpoint_and_keys_spread(sticky: tuple[int, str]) -> None:
    port, kind = sticky
    chosen: dict[str, str] = {}
    for n in range(USERS):
        user = f"user-{n}"
        answers = {_answer(port, kind, user) for _ in range(REQUESTS_PER_USER)}
        assert len(answers) == 1, f"{user} reached {answers}"
        chosen[user] = answers.pop()
    # Twelve keys over three endpoints: all on one would mean no hashing at all.
    assert len(Counter(chosen.values())) >= 2, chosen
