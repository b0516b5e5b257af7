"""ServiceEntries and WorkloadEntries as VirtualService destinations, through a real gateway:

- ``resolution: STATIC`` with inline ``endpoints`` → an EDS cluster of those addresses;
- ``resolution: DNS`` with an endpoint named by hostname (``localhost``) → a DNS cluster;
- ``workloadSelector`` picking WorkloadEntries, whose labels then select DestinationRule subsets;
- a ``targetPort`` on the entry's port, used when an endpoint names no port of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from istio_support import (
    ISTIO_API,
    PortReservation,
    Stack,
    destination_rule,
    gateway,
    http_request,
    run_stack,
    server,
    virtual_service,
    wait_status,
    write_manifests,
)

from meshxds.testing.upstreams import Http1OnlyServer

NS = "external"


@dataclass
class Entries:
    stack: Stack
    port: int
    upstreams: dict[str, Http1OnlyServer]


def service_entry(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": ISTIO_API,
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def workload_entry(name: str, port: int, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": ISTIO_API,
        "kind": "WorkloadEntry",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"address": "127.0.0.1", "ports": {"http": port}, "labels": labels},
    }


def manifests(port: int, real: dict[str, int]) -> list[dict[str, Any]]:
    def route(host: str, destination: dict[str, Any]) -> dict[str, Any]:
        return virtual_service(
            host.split(".")[0],
            NS,
            {
                "hosts": [host],
                "gateways": ["istio-system/edge"],
                "http": [{"route": [{"destination": destination}]}],
            },
        )

    return [
        gateway("edge", "istio-system", [server(port, "HTTP", ["*"], name="http")]),
        service_entry(
            "static",
            {
                "hosts": ["static.partner.example"],
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "resolution": "STATIC",
                "location": "MESH_EXTERNAL",
                "endpoints": [{"address": "127.0.0.1", "ports": {"http": real["static"]}}],
            },
        ),
        service_entry(
            "dns",
            {
                "hosts": ["dns.partner.example"],
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": real["dns"]}],
                "resolution": "DNS",
                "endpoints": [{"address": "localhost"}],
            },
        ),
        service_entry(
            "vms",
            {
                "hosts": ["vms.partner.example"],
                "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                "resolution": "STATIC",
                "location": "MESH_INTERNAL",
                "workloadSelector": {"labels": {"app": "vm-app"}},
            },
        ),
        workload_entry("vm-blue", real["vm-blue"], {"app": "vm-app", "color": "blue"}),
        workload_entry("vm-green", real["vm-green"], {"app": "vm-app", "color": "green"}),
        workload_entry("unrelated", real["static"], {"app": "other"}),
        destination_rule(
            "vms",
            NS,
            {
                "host": "vms.partner.example",
                "subsets": [
                    {"name": "blue", "labels": {"color": "blue"}},
                    {"name": "green", "labels": {"color": "green"}},
                ],
            },
        ),
        route("static.example.com", {"host": "static.partner.example"}),
        route("dns.example.com", {"host": "dns.partner.example"}),
        route("blue.example.com", {"host": "vms.partner.example", "subset": "blue"}),
        route("green.example.com", {"host": "vms.partner.example", "subset": "green"}),
        route("vms.example.com", {"host": "vms.partner.example"}),
    ]


NAMES = ("static", "dns", "vm-blue", "vm-green")


@pytest.fixture
def entries(tmp_path: Path, manifest_dir: Path, harness_processes: list[Any]) -> Iterator[Entries]:
    with (
        PortReservation(1) as reserved,
        Http1OnlyServer(name=NAMES[0]) as a,
        Http1OnlyServer(name=NAMES[1]) as b,
        Http1OnlyServer(name=NAMES[2]) as c,
        Http1OnlyServer(name=NAMES[3]) as d,
    ):
        port = reserved.ports[0]
        upstreams = dict(zip(NAMES, (a, b, c, d), strict=True))
        write_manifests(manifest_dir, manifests(port, {n: u.port for n, u in upstreams.items()}))
        with run_stack(
            tmp_path, manifest_dir, listener_ports=[port], reserved=reserved, processes=harness_processes
        ) as stack:
            wait_status(port, "static.example.com")
            yield Entries(stack=stack, port=port, upstreams=upstreams)


def test_static_service_entry(entries: Entries) -> None:
    response = http_request(entries.port, "static.example.com", "/s")
    assert response.headers["x-upstream-name"] == "static"
    record = entries.upstreams["static"].last_request
    assert record is not None and record.authority == "static.example.com"


def test_dns_service_entry_resolves_the_endpoint_hostname(entries: Entries) -> None:
    response = wait_status(entries.port, "dns.example.com", "/d")  # DNS resolution may take a moment
    assert response.headers["x-upstream-name"] == "dns"
    dump = entries.stack.envoy.config_dump()
    clusters = next(c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump"))
    cluster = next(
        c["cluster"]
        for c in clusters["dynamic_active_clusters"]
        if c["cluster"]["name"] == "outbound|80||dns.partner.example"
    )
    assert cluster["type"] in ("STRICT_DNS", "LOGICAL_DNS")


def test_workload_entries_by_selector_and_subsets(entries: Entries) -> None:
    for _ in range(5):
        assert http_request(entries.port, "blue.example.com").headers["x-upstream-name"] == "vm-blue"
        assert http_request(entries.port, "green.example.com").headers["x-upstream-name"] == "vm-green"
    hosts = entries.stack.envoy.cluster_hosts("outbound|80||vms.partner.example")
    # Both selected WorkloadEntries, not the unrelated one.
    assert sorted(hosts) == sorted(f"127.0.0.1:{entries.upstreams[n].port}" for n in ("vm-blue", "vm-green"))
