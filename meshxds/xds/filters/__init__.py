"""The HTTP filters meshxds configures, one module each, in chain order (Envoy Gateway's
``httpfilters.go``). A new filter is a module with an ``HttpFilter`` and a line in ``ORDER``;
``resources.py`` asks the registry, never the filters, for the chain and the per-route config.

Order: CORS answers a preflight before anything else sees it (a fault must not abort it) and adds
its headers to every response, local replies included; then gRPC-Web, before fault injection, so a
fault's local reply (a gRPC abort) still reaches a gRPC-Web client in gRPC-Web form (a local reply
passes only the filters before the one that sent it); then the router, always last. Envoy mandates
no order for cors and grpc_web (a preflight is never gRPC-Web): Envoy Gateway puts cors first,
Istio and grpc-web's own Envoy example put grpc_web first; Istio, like us, has grpc_web before fault.
"""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2

from meshxds import ir
from meshxds.xds.filters.base import HttpFilter
from meshxds.xds.filters.cors import CORS
from meshxds.xds.filters.fault import FAULT
from meshxds.xds.filters.grpc_web import GRPC_WEB
from meshxds.xds.filters.router import ROUTER
from meshxds.xds.values import pack

__all__ = ["ORDER", "HttpFilter", "http_filters", "patch_route"]

ORDER: tuple[HttpFilter, ...] = (CORS, GRPC_WEB, FAULT, ROUTER)


def http_filters(table: ir.RouteTable) -> list[hcm_pb2.HttpFilter]:
    """The chain of an HTTP connection manager serving ``table``: the filters its routes need."""
    routes = [r for vhost in table.virtual_hosts for r in vhost.routes]
    return [hcm_pb2.HttpFilter(name=f.name, typed_config=pack(f.config())) for f in ORDER if f.needed(routes)]


def patch_route(route: ir.Route, out: route_components_pb2.Route) -> None:
    """Each filter's per-route config of ``route``, under the filter's name."""
    for flt in ORDER:
        config = flt.per_route(route)
        if config is not None:
            out.typed_per_filter_config[flt.name].CopyFrom(pack(config))
