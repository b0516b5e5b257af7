"""The admin HTTP endpoint: health, readiness, metrics and what every proxy was sent.

``/healthz``  the process is alive.
``/readyz``   200 once a good configuration is served and xDS listens, else 503.
``/metrics``  Prometheus text format.
``/debug/syncz``  per connected proxy and type: version sent, acked, nonce, state, last NACK.
``/debug/config_dump?node=ID``  the Envoy resources (JSON) that proxy is served; keys redacted.
``/debug/config``  the source's last read: errors, warnings, status of every object.

A small asyncio HTTP/1.1 server (GET only, one request per connection) is all this needs, and
keeps the admin port free of another web framework. It has no authentication, so it belongs on
loopback: ``meshxds serve`` needs ``--insecure-admin`` for any other address, and binding one
logs a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from meshxds.metrics import Metrics
from meshxds.xds.auth import is_loopback
from meshxds.xds.registry import ConnectionRegistry

__all__ = ["AdminServer", "AdminState"]

log = logging.getLogger(__name__)

_READ_TIMEOUT_S = 5.0
_MAX_REQUEST_BYTES = 16 * 1024


@dataclass(slots=True, kw_only=True)
class AdminState:
    """What the serving loop tells the admin endpoint; mutated only on the event loop."""

    ready: bool = False
    generation: int = 0
    errors: tuple[dict[str, str], ...] = ()
    """Invalid objects (left out) and what the translators cannot serve, as ``validate
    --output json`` lists them."""
    warnings: tuple[dict[str, str], ...] = ()
    statuses: tuple[dict[str, Any], ...] = ()


class AdminServer:
    def __init__(
        self,
        *,
        state: AdminState,
        registry: ConnectionRegistry,
        metrics: Metrics,
        config_dump: Callable[[str], dict[str, Any] | None],
    ) -> None:
        self._state = state
        self._registry = registry
        self._metrics = metrics
        self._config_dump = config_dump
        self._server: asyncio.Server | None = None

    async def start(self, address: str) -> int:
        """Listen on ``host:port`` (port 0 picks one); returns the bound port."""
        host, _, port = address.rpartition(":")
        self._server = await asyncio.start_server(self._handle, host.strip("[]") or "127.0.0.1", int(port))
        bound = int(self._server.sockets[0].getsockname()[1])
        log.info("admin listening address=%s:%d", host, bound)
        if not is_loopback(address):
            log.warning(
                "admin endpoint on non-loopback %s: it is unauthenticated (status, config dumps, "
                "metrics); restrict who reaches it (NetworkPolicy)",
                address,
            )
        return bound

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def route(self, path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for one GET; pure, so tests can call it directly."""
        state = self._state
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            if state.ready:
                return 200, "text/plain", b"ready\n"
            return 503, "text/plain", b"not ready: no good configuration loaded yet\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._metrics.registry)
        if path == "/debug/syncz":
            return _json(200, self._registry.syncz())
        if path == "/debug/config":
            return _json(
                200,
                {
                    "ready": state.ready,
                    "generation": state.generation,
                    "errors": list(state.errors),
                    "warnings": list(state.warnings),
                    "status": list(state.statuses),
                },
            )
        if path == "/debug/config_dump":
            node = (query.get("node") or [""])[0]
            if not node:
                return _json(400, {"error": "give ?node=ID, one of the connected node ids"})
            dump = self._config_dump(node)
            if dump is None:
                return _json(404, {"error": f"no connected proxy has node id {node!r}"})
            return _json(200, dump)
        return 404, "text/plain", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            if len(head) > _MAX_REQUEST_BYTES:
                raise ValueError("request too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"only GET\n"
            else:
                url = urlsplit(target)
                status, ctype, body = self.route(url.path, parse_qs(url.query))
            reason = HTTPStatus(status).phrase
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            ConnectionError,
        ):
            pass
        except Exception:
            log.exception("admin request failed")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def _json(status: int, payload: Any) -> tuple[int, str, bytes]:
    return status, "application/json", (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()
