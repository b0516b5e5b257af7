"""Two replicas of ``meshxds serve --kubeconfig --leader-elect`` on one (fake) API server: both
serve xDS to their Envoy, only the Lease holder writes status (each replica has its own bearer
token, so the API server's request log says who wrote), and when the leader dies without
releasing the Lease the other takes over once it expires and writes from then on."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_gateway_http2_scenario import GATEWAY_LABELS, gateway_yaml, service_yaml

from meshxds.model.manifests import KINDS
from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.fake_apiserver import FakeApiServer
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.server import MeshxdsProcess
from meshxds.testing.upstreams import H2cOnlyServer, curl

GW = "gateway.networking.k8s.io"
LEASE_S = 2.0
NAMES = ("replica-a", "replica-b")


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval_s=1.0) as api:
        api.install_kinds(m for m in KINDS.values() if m.API_GROUP == GW)
        yield api


def lease_holder(fake: FakeApiServer) -> str:
    lease = fake.get("coordination.k8s.io/v1", "Lease", "meshxds-system", "meshxds-leader") or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def route_generation_written(fake: FakeApiServer) -> int:
    route: dict[str, Any] = fake.get(f"{GW}/v1", "HTTPRoute", "default", "nginx") or {}
    parents = (route.get("status") or {}).get("parents") or [{}]
    return max((c.get("observedGeneration", 0) for c in parents[0].get("conditions", [])), default=0)


def edit_route(fake: FakeApiServer, *hostnames: str) -> int:
    route = fake.get(f"{GW}/v1", "HTTPRoute", "default", "nginx")
    assert route is not None
    route["spec"]["hostnames"] = list(hostnames)
    return int(fake.apply(route)["metadata"]["generation"])


def test_two_replicas_serve_and_only_the_leader_writes_status(
    fake_api: FakeApiServer,
    tmp_path: Path,
    h2c_upstream: H2cOnlyServer,
    harness_processes: list[EnvoyProcess | MeshxdsProcess],
) -> None:
    fake = fake_api
    listener_port = free_port()
    fake.apply_yaml(gateway_yaml(listener_port))
    fake.apply_yaml(
        service_yaml("nginx", port_name=None, app_protocol="http2", upstream_port=h2c_upstream.port)
    )
    servers: dict[str, MeshxdsProcess] = {}
    for name in NAMES:
        kubeconfig = fake.write_kubeconfig(tmp_path / f"{name}.kubeconfig", token=name)
        server = MeshxdsProcess(
            None,
            extra_args=(
                "--kubeconfig",
                str(kubeconfig),
                "--listener-address",
                "127.0.0.1",
                "--leader-elect",
                "--leader-election-namespace",
                "meshxds-system",
                "--leader-lease-duration",
                str(LEASE_S),
            ),
            env={**os.environ, "POD_NAME": name},
            work_dir=tmp_path / name,
        )
        harness_processes.append(server)
        servers[name] = server.start()
    envoys: dict[str, EnvoyProcess] = {}
    for name, server in servers.items():
        server.wait_ready()
        envoy = EnvoyProcess.for_node(
            node_id=f"gw-{name}",
            namespace="gateway-system",
            labels=GATEWAY_LABELS,
            xds_port=server.xds_port,
            work_dir=tmp_path / f"envoy-{name}",
        )
        harness_processes.append(envoy)
        envoys[name] = envoy.start()
    for name, envoy in envoys.items():
        envoy.wait_ready()
        servers[name].wait_synced(envoy.node_id)  # every replica serves xDS
        assert f"127.0.0.1_{listener_port}" in envoy.listener_names()
    assert (
        curl(
            f"http://127.0.0.1:{listener_port}/",
            http2_prior_knowledge=True,
            headers={"host": "nginx.example.com"},
        ).status
        == 200
    )

    holder = wait_until(lambda: lease_holder(fake), timeout=10, what="a lease holder")
    leader = next(n for n in NAMES if holder.startswith(f"{n}_"))
    standby = next(n for n in NAMES if n != leader)
    wait_until(lambda: route_generation_written(fake) == 1, timeout=10, what="status written")
    assert {w.token for w in fake.status_writes()} == {leader}

    generation = edit_route(fake, "nginx.example.com", "second.example.com")
    wait_until(lambda: route_generation_written(fake) == generation, timeout=10, what="status of the edit")
    time.sleep(LEASE_S)  # several renewal rounds: the standby still writes nothing
    assert {w.token for w in fake.status_writes()} == {leader}
    assert lease_holder(fake) == holder

    # The leader dies without releasing the Lease: the standby waits for it to expire.
    killed_at = time.monotonic()
    os.kill(servers[leader].pid, signal.SIGKILL)
    generation = edit_route(fake, "nginx.example.com", "third.example.com")
    wait_until(
        lambda: route_generation_written(fake) == generation,
        timeout=15,
        what="status written by the new leader",
    )
    took = time.monotonic() - killed_at
    assert lease_holder(fake).startswith(f"{standby}_")
    assert fake.status_writes()[-1].token == standby
    writers_in_order = [w.token for w in fake.status_writes()]
    assert writers_in_order == sorted(writers_in_order, key=lambda t: t == standby)  # never interleaved
    assert LEASE_S * 0.9 < took < LEASE_S + 5
    print(f"failover: the standby wrote status {took * 1000:.0f} ms after the kill (lease {LEASE_S:g} s)")
    # The survivor kept serving its Envoy all along; with the dead replica's Envoy gone too
    # (both bound the gateway port: Envoy listeners use SO_REUSEPORT), the edit is live.
    envoys[leader].stop()
    servers[standby].wait_synced(envoys[standby].node_id)
    url = f"http://127.0.0.1:{listener_port}/"
    wait_until(
        lambda: curl(url, http2_prior_knowledge=True, headers={"host": "third.example.com"}).status == 200,
        timeout=10,
        what="the edit live through the surviving replica's Envoy",
    )
