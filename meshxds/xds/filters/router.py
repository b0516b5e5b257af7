"""``envoy.filters.http.router``: forwards the request; always last in the chain."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.http.router.v3 import router_pb2

from meshxds import ir
from meshxds.xds.filters.base import HttpFilter

__all__ = ["ROUTER"]


def _always(routes: Sequence[ir.Route]) -> bool:
    return True


ROUTER = HttpFilter(name="envoy.filters.http.router", config=router_pb2.Router, needed=_always)
