"""Prometheus metrics: a ``StreamObserver`` for xDS events plus config-load counters.

Each server owns its own ``CollectorRegistry`` so several servers (tests) never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from meshxds.xds.registry import Connection
from meshxds.xds.stream import Ack, Nack, Send

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, str], Counter] = {}
        self.connected = Gauge(
            "meshxds_xds_connected_streams", "Open xDS streams", ["mode"], registry=self.registry
        )
        self.responses = Counter(
            "meshxds_xds_responses", "xDS responses sent", ["type_url"], registry=self.registry
        )
        self.acks = Counter("meshxds_xds_acks", "xDS responses acked", ["type_url"], registry=self.registry)
        self.nacks = Counter(
            "meshxds_xds_nacks", "xDS responses rejected by a proxy", ["type_url"], registry=self.registry
        )
        self.config_loads = Counter(
            "meshxds_config_loads", "Reads of the configuration source", ["result"], registry=self.registry
        )
        self.config_errors = Gauge(
            "meshxds_config_errors",
            "Invalid objects left out of (or served at their last good version in) the configuration",
            registry=self.registry,
        )
        self.config_generation = Gauge(
            "meshxds_config_generation",
            "Generation of the configuration being served",
            registry=self.registry,
        )

    # StreamObserver
    def on_stream_open(self, conn: Connection) -> None:
        self.connected.labels(mode=conn.mode).inc()

    def on_request(self, conn: Connection, type_url: str) -> None:
        pass

    def on_response(self, conn: Connection, send: Send) -> None:
        self._child(self.responses, send.type_url).inc()

    def on_ack(self, conn: Connection, ack: Ack) -> None:
        self._child(self.acks, ack.type_url).inc()

    def _child(self, counter: Counter, type_url: str) -> Counter:
        # A change fans out to thousands of streams: labels() (a lock, a label check) once per
        # counter and type, not per response and ACK; bounded, whatever type URLs clients send.
        key = (id(counter), type_url)
        child = self._children.get(key)
        if child is None:
            child = counter.labels(type_url=type_url)
            if len(self._children) < 64:
                self._children[key] = child
        return child

    def on_nack(self, conn: Connection, nack: Nack) -> None:
        self.nacks.labels(type_url=nack.type_url).inc()

    def on_stream_close(self, conn: Connection) -> None:
        self.connected.labels(mode=conn.mode).dec()
