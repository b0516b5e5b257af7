"""``envoy.filters.http.cors``: a route's CORS policy (Istio ``corsPolicy``)."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.http.cors.v3 import cors_pb2

from meshxds import ir
from meshxds.xds.filters.base import HttpFilter
from meshxds.xds.values import string_matcher

__all__ = ["CORS"]


def _per_route(route: ir.Route) -> cors_pb2.CorsPolicy | None:
    cors = route.cors
    if cors is None:
        return None
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(m) for m in cors.allow_origins],
        allow_methods=",".join(cors.allow_methods),
        allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers),
    )
    if cors.max_age_s is not None:
        out.max_age = str(int(cors.max_age_s))
    if cors.allow_credentials is not None:
        out.allow_credentials.value = cors.allow_credentials
    return out


def _needed(routes: Sequence[ir.Route]) -> bool:
    return any(r.cors is not None for r in routes)


CORS = HttpFilter(name="envoy.filters.http.cors", config=cors_pb2.Cors, needed=_needed, per_route=_per_route)
