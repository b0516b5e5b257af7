"""The real ``meshxds serve`` as a child process, for integration tests and the demo.

It runs the CLI of design.md's contract (``python -m meshxds serve --config-dir DIR --xds-address
127.0.0.1:X --admin-address 127.0.0.1:A``) on free ports and reads its admin API: ``/readyz`` and
``/debug/syncz`` (which proxies hold which versions). Every wait is bounded and a failed one quotes
the tail of the server's output.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import meshxds
from meshxds.testing.ports import free_port
from meshxds.testing.process import ManagedProcess

__all__ = ["CDS", "EDS", "LDS", "RDS", "SYNCED", "MeshxdsProcess", "MeshxdsProcessError"]

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SYNCED = "SYNCED"
T = TypeVar("T")
_STOP_GRACE = 5.0
# The checkout holding the `meshxds` package, so `-m meshxds` works without installing it.
_SOURCE_ROOT = Path(meshxds.__file__).resolve().parent.parent


class MeshxdsProcessError(RuntimeError):
    """The server could not be started or asked something."""


class MeshxdsProcess(ManagedProcess):
    """``meshxds serve`` in a child process; ``with MeshxdsProcess(config_dir) as server: ...``.

    ``config_dir=None`` needs the source in ``extra_args`` (``("--kubeconfig", PATH)``).
    ``command`` replaces ``[sys.executable, "-m", "meshxds"]`` (tests of this harness use a fake).
    A work directory of our own (``work_dir=None``) is deleted by ``stop()``, after keeping the log tail.
    """

    NAME = "meshxds"
    ERROR = MeshxdsProcessError

    def __init__(
        self,
        config_dir: str | Path | None = None,
        *,
        xds_port: int | None = None,
        admin_port: int | None = None,
        extra_args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        work_dir: str | Path | None = None,
    ) -> None:
        super().__init__(work_dir=work_dir)
        self.config_dir = Path(config_dir) if config_dir is not None else None
        self.xds_port = xds_port or free_port()
        self.admin_port = admin_port or free_port()
        self._extra_args = tuple(extra_args)
        self._command = tuple(command) if command is not None else (sys.executable, "-m", "meshxds")
        self._env = dict(env) if env is not None else None

    # -- addresses and identity --
    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_address}"

    @property
    def argv(self) -> list[str]:
        source = ["--config-dir", str(self.config_dir)] if self.config_dir is not None else []
        return [
            *self._command,
            "serve",
            *source,
            "--xds-address",
            self.xds_address,
            "--admin-address",
            self.admin_address,
            *self._extra_args,
        ]

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr."""
        if self.work_dir is None:
            raise MeshxdsProcessError(f"{self!r} is not started")
        return self.work_dir / "meshxds.log"

    # -- lifecycle --
    @property
    def output_path(self) -> Path:
        return self.log_path

    def _admin_endpoint_port(self) -> int:
        return self.admin_port

    def start(self) -> Self:
        env = dict(os.environ if self._env is None else self._env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SOURCE_ROOT), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"  # the log tail must be current when a test fails
        return self._spawn(self.argv, env=env)

    def __repr__(self) -> str:
        return f"<MeshxdsProcess xds={self.xds_address} admin={self.admin_address} {self._state()}>"

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until ``GET /readyz`` answers 200."""
        self.wait_for(
            lambda: self.request("GET", "/readyz")[0] == 200, timeout=timeout, what="GET /readyz == 200"
        )

    # -- admin API --
    def syncz(self) -> list[dict[str, Any]]:
        """``/debug/syncz``: one item per connection, ``{"node_id", "types": {type_url: {...}}}``."""
        items: list[dict[str, Any]] = json.loads(self.get("/debug/syncz"))
        return items

    def node_status(self, node_id: str) -> list[dict[str, Any]]:
        """The syncz items of ``node_id`` (more than one if several proxies share the id)."""
        return [item for item in self.syncz() if item.get("node_id") == node_id]

    def acked_versions(self, node_id: str) -> dict[str, str]:
        """``{type_url: version_acked}`` of the node's first connection; empty if not connected."""
        items = self.node_status(node_id)
        if not items:
            return {}
        return {t: _acked(s) for t, s in items[0].get("types", {}).items()}

    def config_dump(self, node_id: str) -> Any:
        """``/debug/config_dump?node=ID``, parsed."""
        return json.loads(self.get(f"/debug/config_dump?node={node_id}"))

    def wait_synced(
        self,
        node_id: str,
        *,
        types: Collection[str] = (CDS, LDS),
        after: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> list[dict[str, Any]]:
        """Until every connection of ``node_id`` has each of its types SYNCED; returns those items.

        ``types`` must be among them: Envoy asks for CDS and LDS first and RDS/EDS only later, so
        "everything it asked for is synced" alone can be true too early. ``after`` (an earlier
        ``acked_versions()``) also requires each of those types to have acked a different version,
        which is how a test waits for a change to land.
        """

        def synced() -> list[dict[str, Any]]:
            # Raising says why not yet; wait_until quotes the last reason if time runs out.
            items = self.node_status(node_id)
            if not items:
                raise LookupError(f"node {node_id!r} not connected")
            for item in items:
                states = item.get("types", {})
                missing = set(types) - set(states)
                if missing:
                    raise LookupError(f"not subscribed yet to {sorted(missing)}; have {states}")
                unsynced = {t: s for t, s in states.items() if s.get("state") != SYNCED}
                if unsynced:
                    raise LookupError(f"not synced: {unsynced}")
                same = [t for t, old in (after or {}).items() if _acked(states.get(t)) == old]
                if same:
                    raise LookupError(f"no new version acked yet for {same}; have {states}")
            return items

        return self.wait_for(synced, timeout=timeout, what=f"node {node_id!r} synced")


def _acked(state: Mapping[str, Any] | None) -> str:
    return str((state or {}).get("version_acked") or "")
