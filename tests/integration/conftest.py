"""Fixtures that start real parts on 127.0.0.1: upstreams, Envoy, and ``meshxds serve``.

Everything a test starts is stopped at its teardown. When a test fails, the log tails of the Envoys
and meshxds servers it started are attached to its report (shown under the failure).
Every test in this directory is marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.server import MeshxdsProcess
from meshxds.testing.upstreams import GrpcEchoServer, H2cOnlyServer, Http1OnlyServer

INTEGRATION_DIR = Path(__file__).resolve().parent
_PROCESSES = pytest.StashKey[list[EnvoyProcess | MeshxdsProcess]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items; mark only ours.
    for item in items:
        if INTEGRATION_DIR in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    # rep_setup / rep_call / rep_teardown, for fixtures that want to know how the test went.
    setattr(item, f"rep_{report.when}", report)
    if report.failed and report.when in ("setup", "call"):
        for proc in item.stash.get(_PROCESSES, []):
            report.sections.append((f"{proc!r} log tail", proc.log_tail(80) or "(empty)"))
    return report


@pytest.fixture
def harness_processes(request: pytest.FixtureRequest) -> Iterator[list[EnvoyProcess | MeshxdsProcess]]:
    """Every Envoy and meshxds process of this test, stopped at teardown newest first."""
    procs: list[EnvoyProcess | MeshxdsProcess] = []
    request.node.stash[_PROCESSES] = procs
    yield procs
    for proc in reversed(procs):
        proc.stop()


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    """An empty directory for the test's manifests (``meshxds serve --config-dir``)."""
    path = tmp_path / "manifests"
    path.mkdir()
    return path


@pytest.fixture
def h2c_upstream() -> Iterator[H2cOnlyServer]:
    """HTTP/2-only (h2c prior knowledge) upstream named ``h2c``; HTTP/1 gets 505."""
    with H2cOnlyServer(name="h2c") as server:
        yield server


@pytest.fixture
def http1_upstream() -> Iterator[Http1OnlyServer]:
    """HTTP/1.1-only upstream named ``http1``; the HTTP/2 preface gets a hang-up."""
    with Http1OnlyServer(name="http1") as server:
        yield server


@pytest.fixture
def grpc_upstream() -> Iterator[GrpcEchoServer]:
    """grpcio ``meshxds.echo.v1.Echo`` + health upstream named ``grpc``."""
    with GrpcEchoServer(name="grpc") as server:
        yield server


class MeshxdsFactory:
    """``meshxds_factory(config_dir)`` starts ``meshxds serve`` on free ports (ready by default)."""

    def __init__(self, tmp_path: Path, procs: list[EnvoyProcess | MeshxdsProcess]) -> None:
        self._tmp_path = tmp_path
        self._procs = procs
        self.started: list[MeshxdsProcess] = []

    def __call__(
        self,
        config_dir: str | Path | None,
        *,
        extra_args: tuple[str, ...] = (),
        wait_ready: bool = True,
        timeout: float = 20.0,
    ) -> MeshxdsProcess:
        server = MeshxdsProcess(
            config_dir, extra_args=extra_args, work_dir=self._tmp_path / f"meshxds-{len(self.started)}"
        )
        self._procs.append(server)
        self.started.append(server)
        server.start()
        if wait_ready:
            server.wait_ready(timeout=timeout)
        return server


class EnvoyFactory:
    """``envoy_factory(node_id=..., namespace=..., labels=..., xds_port=..., delta=...)`` starts an Envoy.

    ``xds_port`` defaults to the newest server from ``meshxds_factory`` in this test. Pass
    ``bootstrap=`` instead for a hand-written (e.g. static) bootstrap. The admin port is chosen by
    Envoy. Waits for ``/ready`` by default, which needs the initial CDS/LDS answers.
    """

    def __init__(
        self, tmp_path: Path, procs: list[EnvoyProcess | MeshxdsProcess], servers: MeshxdsFactory
    ) -> None:
        self._tmp_path = tmp_path
        self._procs = procs
        self._servers = servers
        self.started: list[EnvoyProcess] = []

    def __call__(
        self,
        *,
        node_id: str | None = None,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        xds_port: int | None = None,
        delta: bool = False,
        bootstrap: Mapping[str, Any] | None = None,
        wait_ready: bool = True,
        timeout: float = 20.0,
        log_level: str = "info",
    ) -> EnvoyProcess:
        work_dir = self._tmp_path / f"envoy-{len(self.started)}"
        if bootstrap is not None:
            envoy = EnvoyProcess(bootstrap, work_dir=work_dir, log_level=log_level)
        else:
            if xds_port is None:
                if not self._servers.started:
                    raise ValueError("pass xds_port, or start a server with meshxds_factory first")
                xds_port = self._servers.started[-1].xds_port
            envoy = EnvoyProcess.for_node(
                node_id=node_id or f"envoy-{len(self.started)}",
                namespace=namespace,
                labels=labels,
                xds_port=xds_port,
                delta=delta,
                work_dir=work_dir,
                log_level=log_level,
            )
        self._procs.append(envoy)
        self.started.append(envoy)
        envoy.start()
        if wait_ready:
            envoy.wait_ready(timeout=timeout)
        return envoy


@pytest.fixture
def meshxds_factory(tmp_path: Path, harness_processes: list[EnvoyProcess | MeshxdsProcess]) -> MeshxdsFactory:
    return MeshxdsFactory(tmp_path, harness_processes)


@pytest.fixture
def envoy_factory(
    tmp_path: Path, harness_processes: list[EnvoyProcess | MeshxdsProcess], meshxds_factory: MeshxdsFactory
) -> EnvoyFactory:
    return EnvoyFactory(tmp_path, harness_processes, meshxds_factory)
