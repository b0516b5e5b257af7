"""``meshxds serve`` on a directory: an invalid object is left out and reported (log,
``/debug/config`` state, metric), everything else is served from the start, and fixing the file
brings the object in (issue 10: one bad object never blocks the rest); a first read handed over
from a YAML reader process started before the server."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from meshxds.identity import ProxyIdentity
from meshxds.options import GATEWAY_NAME_LABEL, TranslateOptions
from meshxds.serve import ServeOptions, Service
from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs, to_yaml
from meshxds.xds.cache import TYPE_ROUTE

TIMEOUT = 10.0
GW_B = ProxyIdentity.of(namespace="gateway-system", labels={GATEWAY_NAME_LABEL: "b"})


def write(path: Path, docs: list[dict[str, Any]]) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(to_yaml(docs), encoding="utf-8")
    scratch.replace(path)


def routed(name: str, gateway: str) -> list[dict[str, Any]]:
    return routed_service_docs(
        name, upstream_port=9000, hostnames=[f"{name}.example.com"], gateway=("gateway-system", gateway)
    )


def broken(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``docs`` with its HTTPRoute's backend port a string: the API server would refuse it."""
    docs = copy.deepcopy(docs)
    docs[2]["spec"]["rules"][0]["backendRefs"][0]["port"] = "eighty"
    return docs


async def until(predicate: Callable[[], Any], *, what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    write(tmp_path / "gateways.yaml", [
        *gateway_api_docs([gateway_listener(8080)], name="a"),
        *gateway_api_docs([gateway_listener(8081)], name="b")[1:],
    ])  # fmt: skip
    for i in range(10):  # gateway a's routes, all good
        write(tmp_path / f"a-{i}.yaml", routed(f"a{i}", "a"))
    write(tmp_path / "b-good.yaml", routed("bgood", "b"))
    write(tmp_path / "b-bad.yaml", broken(routed("bbad", "b")))
    return tmp_path


@pytest.fixture
async def service(manifests: Path) -> AsyncIterator[Service]:
    svc = Service(
        ServeOptions(
            config_dir=str(manifests),
            xds_address="127.0.0.1:0",
            admin_address="127.0.0.1:0",
            translate=TranslateOptions(listener_address="127.0.0.1"),
            debounce_s=0.02,
            debounce_max_s=0.2,
        )
    )
    task = asyncio.create_task(svc.run(), name="serve")
    await until(lambda: svc.state.ready or task.done(), what="first configuration served")
    yield svc
    svc.stop()
    await asyncio.wait_for(task, TIMEOUT)


def hostnames_of(service: Service, identity: ProxyIdentity) -> set[str]:
    snapshot = service.cache.snapshot_for(identity)
    assert snapshot is not None
    routes = snapshot.get(TYPE_ROUTE)
    from meshxds.xds.render import snapshot_to_json

    dump = snapshot_to_json(snapshot)
    assert len(routes) == len(dump["routes"])
    return {d for rc in dump["routes"] for vh in rc.get("virtual_hosts", []) for d in vh.get("domains", [])}


async def test_an_invalid_object_at_start_up_is_reported_and_the_rest_is_served(
    service: Service, manifests: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert service.state.ready
    (error,) = service.state.errors
    assert error["object"] == "HTTPRoute/default/bbad"
    assert error["file"] == str(manifests / "b-bad.yaml#2")
    assert error["field"].startswith("spec.rules[0].backendRefs[0].port")
    assert service.metrics.registry.get_sample_value("meshxds_config_errors") == 1
    assert "bgood.example.com" in hostnames_of(service, GW_B)
    assert "bbad.example.com" not in hostnames_of(service, GW_B)

    # While the bad file stays, other edits are served; the error is logged once, when it appears.
    caplog.set_level(logging.ERROR, logger="meshxds.serve")
    write(manifests / "b-new.yaml", routed("bnew", "b"))
    await until(lambda: "bnew.example.com" in hostnames_of(service, GW_B), what="an unrelated edit served")
    assert not [r for r in caplog.records if "bbad" in r.getMessage()]

    write(manifests / "b-bad.yaml", routed("bbad", "b"))  # fixed
    await until(lambda: "bbad.example.com" in hostnames_of(service, GW_B), what="the fixed route served")
    await until(lambda: not service.state.errors, what="the error cleared")
    assert service.metrics.registry.get_sample_value("meshxds_config_errors") == 0


async def test_an_object_broken_while_serving_keeps_its_last_good_version(
    service: Service, manifests: Path
) -> None:
    write(manifests / "b-good.yaml", broken(routed("bgood", "b")))
    await until(lambda: len(service.state.errors) == 2, what="the second error reported")
    assert "bgood.example.com" in hostnames_of(service, GW_B)  # still served, as it was
    messages = {e["object"]: e["message"] for e in service.state.errors}
    assert "still serving its last good version" in messages["HTTPRoute/default/bgood"]


async def test_a_first_read_started_before_the_server_is_what_it_serves(manifests: Path) -> None:
    from meshxds.sources import manifest_reader

    prefetch = manifest_reader.Prefetch.start(manifest_reader.manifest_paths(str(manifests)))
    child = prefetch.child
    assert child is not None
    svc = Service(
        ServeOptions(
            config_dir=str(manifests),
            xds_address="127.0.0.1:0",
            admin_address="127.0.0.1:0",
            translate=TranslateOptions(listener_address="127.0.0.1"),
        ),
        prefetch=prefetch,
    )
    task = asyncio.create_task(svc.run(), name="serve")
    try:
        await until(lambda: svc.state.ready or task.done(), what="first configuration served")
        assert "bgood.example.com" in hostnames_of(svc, GW_B)
        assert [e["object"] for e in svc.state.errors] == ["HTTPRoute/default/bbad"]
        assert child.returncode is not None  # read to the end and reaped
    finally:
        svc.stop()
        await asyncio.wait_for(task, TIMEOUT)


async def test_istio_problems_are_shown_as_records_and_logged_with_their_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "istio-system"},
        "spec": {
            "selector": {"istio": "edge"},
            "servers": [
                {
                    "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
                    "hosts": ["*"],
                    "tls": {"mode": "ISTIO_MUTUAL"},
                }
            ],
        },
    }
    write(tmp_path / "gateway.yaml", [gateway])
    caplog.set_level(logging.WARNING, logger="meshxds.serve")
    svc = Service(
        ServeOptions(config_dir=str(tmp_path), xds_address="127.0.0.1:0", admin_address="127.0.0.1:0")
    )
    task = asyncio.create_task(svc.run(), name="serve")
    try:
        await until(lambda: svc.state.ready or task.done(), what="first configuration served")
        (error,) = svc.state.errors
        assert error["object"] == "Gateway.networking.istio.io/istio-system/edge"
        assert (error["field"], error["code"], error["reason"]) == (
            "spec.servers[0].tls.mode",
            "MXD0001",
            "UnsupportedFeature",
        )
        assert error["file"] == str(tmp_path / "gateway.yaml")
        (record,) = [r for r in caplog.records if "ISTIO_MUTUAL" in r.getMessage()]
        assert record.levelno == logging.ERROR
        assert "code=MXD0001 reason=UnsupportedFeature" in record.getMessage()
    finally:
        svc.stop()
        await asyncio.wait_for(task, TIMEOUT)
