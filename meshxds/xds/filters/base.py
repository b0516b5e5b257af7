"""What an HTTP filter is to the registry: its place in the HTTP connection manager's chain and
its per-route configuration (Envoy Gateway's ``httpfilters.go`` hooks, in Python)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message

from meshxds import ir

__all__ = ["HttpFilter"]


@dataclass(frozen=True, slots=True)
class HttpFilter:
    name: str
    """Envoy's filter name, also the ``typed_per_filter_config`` key of its per-route config."""
    config: Callable[[], Message]
    """The filter's entry in the chain (its listener-wide config)."""
    needed: Callable[[Sequence[ir.Route]], bool]
    """Whether a chain serving these routes needs the filter: per-route config requires it in
    the chain, and a filter nothing uses only costs time."""
    per_route: Callable[[ir.Route], Message | None] = lambda route: None
    """The filter's config for one route, ``None`` when the route does not use it."""
