"""``envoy.filters.http.fault``: a route's fault injection (Istio ``fault``), delay and/or abort."""

from __future__ import annotations

from collections.abc import Sequence

from envoy.extensions.filters.http.fault.v3 import fault_pb2

from meshxds import ir
from meshxds.xds.filters.base import HttpFilter
from meshxds.xds.values import duration, percent

__all__ = ["FAULT"]


def _per_route(route: ir.Route) -> fault_pb2.HTTPFault | None:
    fault = route.fault
    if fault is None:
        return None
    out = fault_pb2.HTTPFault()
    if fault.delay_s is not None:
        out.delay.fixed_delay.CopyFrom(duration(fault.delay_s))
        out.delay.percentage.CopyFrom(percent(fault.delay_percent))
    if fault.abort_http_status is not None or fault.abort_grpc_status is not None:
        if fault.abort_grpc_status is not None:
            out.abort.grpc_status = fault.abort_grpc_status
        else:
            out.abort.http_status = fault.abort_http_status or 500
        out.abort.percentage.CopyFrom(percent(fault.abort_percent))
    return out


def _needed(routes: Sequence[ir.Route]) -> bool:
    return any(r.fault is not None for r in routes)


FAULT = HttpFilter(
    name="envoy.filters.http.fault", config=fault_pb2.HTTPFault, needed=_needed, per_route=_per_route
)
