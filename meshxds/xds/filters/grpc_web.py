"""``envoy.filters.http.grpc_web``: translates a browser's gRPC-Web request (HTTP/1.1 or HTTP/2,
``application/grpc-web*``) into gRPC for the upstream, and the response, trailers included, back.

It is in the chain of every connection manager with a route to gRPC backends (``ForwardAction.
grpc_web``), and nowhere else. Other requests pass through it untouched, so the filter is
connection-wide; it has no per-route config.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2

from meshxds import ir
from meshxds.xds.filters.base import HttpFilter

__all__ = ["GRPC_WEB"]


def _needed(routes: Sequence[ir.Route]) -> bool:
    return any(isinstance(r.action, ir.ForwardAction) and r.action.grpc_web for r in routes)


GRPC_WEB = HttpFilter(name="envoy.filters.http.grpc_web", config=grpc_web_pb2.GrpcWeb, needed=_needed)
