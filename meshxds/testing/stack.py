"""A meshxds server with a real Envoy attached, started and stopped together."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from meshxds.testing.envoy import EnvoyProcess
from meshxds.testing.server import CDS, LDS, MeshxdsProcess

__all__ = ["attached", "local_gateway"]


@contextmanager
def attached(
    server: MeshxdsProcess, envoy: EnvoyProcess, *, synced: Collection[str] = (CDS, LDS)
) -> Iterator[tuple[MeshxdsProcess, EnvoyProcess]]:
    """Start ``server``, then ``envoy`` (bootstrapped against it); return once Envoy is ready and
    the server reports ``synced`` types acked; stop both (Envoy first) on the way out. A failure
    on the way in prints both log tails, which is what one needs to see why."""
    try:
        server.start()
        server.wait_ready()
        envoy.start()
        envoy.wait_ready()
        server.wait_synced(envoy.node_id, types=synced)
        yield server, envoy
    except BaseException:
        print(server.log_tail(60), envoy.log_tail(60), sep="\n----\n")
        raise
    finally:
        envoy.stop()
        server.stop()


@contextmanager
def local_gateway(
    config_dir: str | Path,
    *,
    node_id: str,
    namespace: str,
    labels: Mapping[str, str],
    delta: bool = False,
    work_dir: Path | None = None,
    server_args: Sequence[str] = (),
) -> Iterator[tuple[MeshxdsProcess, EnvoyProcess]]:
    """``meshxds serve --config-dir DIR`` with listeners on 127.0.0.1, and one Envoy of that
    identity attached over SotW (or Delta) ADS; both stopped on the way out."""
    server = MeshxdsProcess(
        config_dir,
        extra_args=("--listener-address", "127.0.0.1", *server_args),
        work_dir=work_dir / "server" if work_dir is not None else None,
    )
    envoy = EnvoyProcess.for_node(
        node_id=node_id,
        namespace=namespace,
        labels=labels,
        xds_port=server.xds_port,
        delta=delta,
        work_dir=work_dir / "envoy" if work_dir is not None else None,
    )
    with attached(server, envoy) as pair:
        yield pair
