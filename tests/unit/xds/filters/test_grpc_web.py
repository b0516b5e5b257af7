"""The HTTP filter chain with ``envoy.filters.http.grpc_web``: present exactly when a route
forwards to gRPC backends, after CORS and before fault and router; CORS per-route config."""

from __future__ import annotations

import pytest
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2

from meshxds import ir
from meshxds.xds import filters
from meshxds.xds.resources import build_route

CORS = ir.Cors(
    allow_origins=(ir.StringMatch(kind="regex", value=r"https://[a-z0-9-]+(\.[a-z0-9-]+)*\.bar\.com"),),
    allow_methods=("POST",),
    allow_headers=("content-type", "x-grpc-web"),
    expose_headers=("grpc-status",),
    max_age_s=600.0,
    allow_credentials=True,
)


def route(*, grpc_web: bool = False, cors: ir.Cors | None = None, fault: ir.Fault | None = None) -> ir.Route:
    return ir.Route(
        name="r",
        match=ir.RouteMatch(),
        action=ir.ForwardAction(backends=(ir.WeightedCluster(cluster="c", weight=1),), grpc_web=grpc_web),
        cors=cors,
        fault=fault,
    )


def chain(*routes: ir.Route) -> list[str]:
    table = ir.RouteTable(name="t", virtual_hosts=(ir.VirtualHost(name="v", domains=("*",), routes=routes),))
    return [f.name for f in filters.http_filters(table)]


def test_no_grpc_route_no_grpc_web_filter() -> None:
    assert chain(route()) == ["envoy.filters.http.router"]


def test_one_grpc_route_puts_grpc_web_in_the_whole_chain() -> None:
    assert chain(route(), route(grpc_web=True)) == [
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.router",
    ]


def test_order_is_cors_grpc_web_fault_router() -> None:
    assert chain(route(grpc_web=True, cors=CORS, fault=ir.Fault(abort_grpc_status=14))) == [
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.fault",
        "envoy.filters.http.router",
    ]


def test_grpc_web_filter_config_is_the_empty_grpc_web_message() -> None:
    table = ir.RouteTable(
        name="t", virtual_hosts=(ir.VirtualHost(name="v", domains=("*",), routes=(route(grpc_web=True),)),)
    )
    (grpc_web, _) = filters.http_filters(table)
    config = grpc_web_pb2.GrpcWeb()
    assert grpc_web.typed_config.Unpack(config)
    assert config == grpc_web_pb2.GrpcWeb()


@pytest.mark.parametrize("grpc_web", [True, False])
def test_grpc_web_has_no_per_route_config(grpc_web: bool) -> None:
    assert "envoy.filters.http.grpc_web" not in build_route(route(grpc_web=grpc_web)).typed_per_filter_config


def test_cors_policy_per_route() -> None:
    out = build_route(route(cors=CORS))
    policy = cors_pb2.CorsPolicy()
    assert out.typed_per_filter_config["envoy.filters.http.cors"].Unpack(policy)
    assert [m.safe_regex.regex for m in policy.allow_origin_string_match] == [CORS.allow_origins[0].value]
    assert (policy.allow_methods, policy.allow_headers, policy.expose_headers) == (
        "POST",
        "content-type,x-grpc-web",
        "grpc-status",
    )
    assert (policy.max_age, policy.allow_credentials.value) == ("600", True)
