"""Which xDS streams are open, and what ``/debug/syncz`` and ``meshxds status`` report of them.

The server calls every ``StreamObserver`` (this registry, the metrics) on each stream event; the
per-type state lives in each stream's state machine (``xds/stream.py``), so what the registry
reports is read live, never out of date.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from meshxds.identity import ProxyIdentity
from meshxds.xds.stream import Ack, Mode, Nack, Send, XdsStream

__all__ = ["Connection", "ConnectionRegistry", "StreamObserver"]

log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True, eq=False)
class Connection:
    """One open xDS stream, as the registry and observers see it."""

    id: int
    """Unique per server process."""
    stream: XdsStream
    """The stream's state machine; read its ``node``, ``identity`` and ``types`` live."""
    peer: str = ""
    """The gRPC peer address."""
    connected_at: float = field(default_factory=time.time)
    """Unix time the stream opened."""

    @property
    def mode(self) -> Mode:
        return self.stream.mode

    @property
    def node_id(self) -> str:
        node = self.stream.node
        return str(node.id) if node is not None else ""


class StreamObserver(Protocol):
    """Hooks the server calls on every stream event (the registry, metrics)."""

    def on_stream_open(self, conn: Connection) -> None: ...

    def on_request(self, conn: Connection, type_url: str) -> None: ...

    def on_response(self, conn: Connection, send: Send) -> None: ...

    def on_ack(self, conn: Connection, ack: Ack) -> None: ...

    def on_nack(self, conn: Connection, nack: Nack) -> None: ...

    def on_stream_close(self, conn: Connection) -> None: ...


class ConnectionRegistry:
    """Every open stream, for ``/debug/syncz`` and ``meshxds status``.

    The per-type state lives in each stream's state machine; the registry only tracks which
    streams are open, so what it reports is never out of date.
    """

    def __init__(self) -> None:
        self._connections: dict[int, Connection] = {}

    def register(self, conn: Connection) -> None:
        self._connections[conn.id] = conn

    def unregister(self, conn: Connection) -> None:
        self._connections.pop(conn.id, None)

    @property
    def connections(self) -> tuple[Connection, ...]:
        return tuple(sorted(self._connections.values(), key=lambda c: (c.node_id, c.connected_at, c.id)))

    def find(self, node_id: str) -> Connection | None:
        """The most recent connection of ``node_id``."""
        matches = [c for c in self.connections if c.node_id == node_id]
        return matches[-1] if matches else None

    def syncz(self) -> list[dict[str, Any]]:
        """One JSON-able record per connection, sorted by node id."""
        records: list[dict[str, Any]] = []
        for conn in self.connections:
            identity = conn.stream.identity or ProxyIdentity.of()
            records.append(
                {
                    "node_id": conn.node_id,
                    "namespace": identity.namespace,
                    "labels": identity.label_map,
                    "mode": conn.mode,
                    "connected_at": conn.connected_at,
                    "types": conn.stream.type_status(),
                }
            )
        return records

    # StreamObserver: open/close keep the registry current; the rest is read from the stream.
    def on_stream_open(self, conn: Connection) -> None:
        self.register(conn)

    def on_request(self, conn: Connection, type_url: str) -> None:
        pass

    def on_response(self, conn: Connection, send: Send) -> None:
        pass

    def on_ack(self, conn: Connection, ack: Ack) -> None:
        pass

    def on_nack(self, conn: Connection, nack: Nack) -> None:
        pass

    def on_stream_close(self, conn: Connection) -> None:
        self.unregister(conn)
        # The NACK lines a rate limit held back since its last line would otherwise go unsaid.
        for type_url, state in sorted(conn.stream.types.items()):
            if state.nack_log is not None and state.nack_log.suppressed:
                log.info(
                    "NACK lines suppressed node=%s type=%s suppressed=%d (stream closed; last error=%s)",
                    conn.node_id, type_url.rsplit(".", 1)[-1], state.nack_log.suppressed, state.last_nack,
                )  # fmt: skip
