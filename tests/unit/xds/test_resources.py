"""xds/resources.py: IR → Envoy protos. HTTP/2 options, matches, rewrites checked with RE2,
determinism, and the real Envoy's validation of a full example."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import re2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.route.v3 import route_components_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from meshxds import ir
from meshxds.identity import ProxyIdentity
from meshxds.options import GATEWAY_NAME_LABEL
from meshxds.pipeline import translate
from meshxds.sources.files import read_directory
from meshxds.testing.envoy_validate import envoy_validate
from meshxds.xds.cache import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, TYPE_SECRET
from meshxds.xds.resources import (
    HTTP_PROTOCOL_OPTIONS_KEY,
    INVALID_BACKEND_CLUSTER,
    build_cluster,
    build_cluster_load_assignment,
    build_listener,
    build_resources,
    build_route,
    build_route_configuration,
)

REPO = Path(__file__).resolve().parents[3]
NGINX = "outbound|8080||nginx.default.svc.cluster.local"


def cluster(protocol: ir.UpstreamProtocol, **kwargs: Any) -> ir.Cluster:
    return ir.Cluster(
        name=NGINX,
        upstream_protocol=protocol,
        endpoints=(ir.LbEndpoint(address="10.0.0.2", port=80), ir.LbEndpoint(address="10.0.0.1", port=80)),
        **kwargs,
    )


def protocol_options(out: cluster_pb2.Cluster) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    if HTTP_PROTOCOL_OPTIONS_KEY not in out.typed_extension_protocol_options:
        return None
    options = http_protocol_options_pb2.HttpProtocolOptions()
    assert out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY].Unpack(options)
    return options


def forward(path: ir.PathMatch, *, rewrite: ir.UrlRewrite | None = None) -> ir.Route:
    return ir.Route(
        name="r",
        match=ir.RouteMatch(path=path),
        action=ir.ForwardAction(backends=(ir.WeightedCluster(cluster=NGINX, weight=1),), rewrite=rewrite),
    )


# --- clusters ----------------------------------------------------------------------------------------


def test_http2_cluster_carries_explicit_http2_protocol_options() -> None:
    out = build_cluster(cluster(ir.UpstreamProtocol.HTTP2))
    assert list(out.typed_extension_protocol_options) == [HTTP_PROTOCOL_OPTIONS_KEY]
    packed = out.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS_KEY]
    assert packed.type_url == f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS_KEY}"
    options = protocol_options(out)
    assert options is not None
    assert options.WhichOneof("upstream_protocol_options") == "explicit_http_config"
    assert options.explicit_http_config.WhichOneof("protocol_config") == "http2_protocol_options"


@pytest.mark.parametrize(
    "protocol",
    [
        pytest.param(ir.UpstreamProtocol.HTTP1, id="HTTP/1.1 is Envoy's default: no options"),
        pytest.param(ir.UpstreamProtocol.TCP, id="TCP: no HTTP options"),
    ],
)
def test_other_clusters_carry_no_http_protocol_options(protocol: ir.UpstreamProtocol) -> None:
    out = build_cluster(cluster(protocol))
    assert len(out.typed_extension_protocol_options) == 0
    assert not out.HasField("http2_protocol_options"), "the deprecated field is never used"


def test_downstream_protocol_cluster_follows_the_client() -> None:
    options = protocol_options(build_cluster(cluster(ir.UpstreamProtocol.DOWNSTREAM)))
    assert options is not None
    assert options.WhichOneof("upstream_protocol_options") == "use_downstream_protocol_config"
    assert options.use_downstream_protocol_config.HasField("http_protocol_options")
    assert options.use_downstream_protocol_config.HasField("http2_protocol_options")


def test_eds_cluster_reads_its_endpoints_over_ads_by_its_own_name() -> None:
    out = build_cluster(cluster(ir.UpstreamProtocol.HTTP1, connect_timeout_s=2.5))
    assert out.type == cluster_pb2.Cluster.EDS
    assert out.eds_cluster_config.service_name == NGINX
    assert out.eds_cluster_config.eds_config.HasField("ads")
    assert out.eds_cluster_config.eds_config.resource_api_version == config_source_pb2.V3
    assert not out.HasField("load_assignment")
    assert out.connect_timeout.ToNanoseconds() == 2_500_000_000


def test_static_cluster_carries_its_endpoints_inline() -> None:
    out = build_cluster(cluster(ir.UpstreamProtocol.HTTP1, discovery="STATIC"))
    assert out.type == cluster_pb2.Cluster.STATIC
    assert not out.HasField("eds_cluster_config")
    assert out.load_assignment == build_cluster_load_assignment(cluster(ir.UpstreamProtocol.HTTP1))


def test_load_assignment_lists_endpoints_in_ir_order() -> None:
    cla = build_cluster_load_assignment(cluster(ir.UpstreamProtocol.HTTP1))
    assert cla.cluster_name == NGINX
    (locality,) = cla.endpoints
    addresses = [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value)
        for e in locality.lb_endpoints
    ]
    assert addresses == [("10.0.0.2", 80), ("10.0.0.1", 80)]


def test_cluster_without_endpoints_has_an_empty_load_assignment() -> None:
    cla = build_cluster_load_assignment(ir.Cluster(name=NGINX))
    assert (cla.cluster_name, len(cla.endpoints)) == (NGINX, 0)


# --- route matches -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        pytest.param(ir.PathMatch(kind="path_separated_prefix", value="/v2"), "path_separated_prefix", "/v2",
                     id="segment prefix /v2 never matches /v2example"),
        pytest.param(ir.PathMatch(kind="prefix", value="/"), "prefix", "/", id="catch-all prefix"),
        pytest.param(ir.PathMatch(kind="exact", value="/foo"), "path", "/foo", id="exact path"),
    ],
)  # fmt: skip
def test_path_match_fields(path: ir.PathMatch, field: str, value: str) -> None:
    match = build_route(forward(path)).match
    assert match.WhichOneof("path_specifier") == field
    assert getattr(match, field) == value


def test_regex_path_header_and_query_matches() -> None:
    route = ir.Route(
        name="r",
        match=ir.RouteMatch(
            path=ir.PathMatch(kind="regex", value="^/v[0-9]+$", ignore_case=True),
            headers=(
                ir.HeaderMatch(name=":method", match=ir.StringMatch(kind="exact", value="GET")),
                ir.HeaderMatch(name="x-id", match=ir.StringMatch(kind="regex", value="[a-z]+"), invert=True),
                ir.HeaderMatch(name="x-present", match=ir.StringMatch(kind="present")),
            ),
            query_params=(ir.QueryParamMatch(name="page", match=ir.StringMatch(kind="exact", value="1")),),
        ),
        action=ir.DirectResponse(status=404),
    )
    match = build_route(route).match
    assert match.safe_regex.regex == "^/v[0-9]+$"
    assert match.case_sensitive.value is False
    method, ident, present = match.headers
    assert (method.name, method.string_match.exact) == (":method", "GET")
    assert (ident.name, ident.string_match.safe_regex.regex, ident.invert_match) == ("x-id", "[a-z]+", True)
    assert (present.name, present.present_match) == ("x-present", True)
    (page,) = match.query_parameters
    assert (page.name, page.string_match.exact) == ("page", "1")


# --- route actions -----------------------------------------------------------------------------------


def test_single_backend_routes_to_the_cluster_directly() -> None:
    action = build_route(forward(ir.PathMatch())).route
    assert action.WhichOneof("cluster_specifier") == "cluster"
    assert action.cluster == NGINX
    assert not action.HasField("timeout")


def test_invalid_backend_share_gets_500() -> None:
    route = ir.Route(
        name="r",
        match=ir.RouteMatch(),
        action=ir.ForwardAction(
            backends=(ir.WeightedCluster(cluster=NGINX, weight=3),), invalid_weight=1, timeout_s=0
        ),
    )
    action = build_route(route).route
    weighted = [(c.name, c.weight.value) for c in action.weighted_clusters.clusters]
    assert weighted == [(NGINX, 3), (INVALID_BACKEND_CLUSTER, 1)]
    assert action.cluster_not_found_response_code == route_components_pb2.RouteAction.INTERNAL_SERVER_ERROR
    assert action.HasField("timeout") and action.timeout.ToNanoseconds() == 0, "0 disables the timeout"


def _grpc_route(timeout_s: float | None, header_max_s: float | None) -> route_components_pb2.RouteAction:
    action = ir.ForwardAction(
        backends=(ir.WeightedCluster(cluster=NGINX, weight=1),),
        timeout_s=timeout_s,
        grpc_timeout_header_max_s=header_max_s,
    )
    return build_route(ir.Route(name="r", match=ir.RouteMatch(), action=action)).route


def test_grpc_timeout_without_a_route_timeout_is_max_stream_duration() -> None:
    action = _grpc_route(0.0, 0.0)
    assert action.HasField("timeout") and action.timeout.ToNanoseconds() == 0
    duration = action.max_stream_duration
    assert duration.HasField("grpc_timeout_header_max"), "0 must be present: it means no cap"
    assert duration.grpc_timeout_header_max.ToNanoseconds() == 0
    assert not duration.HasField("max_stream_duration")
    assert not action.HasField("max_grpc_timeout")


@pytest.mark.parametrize("timeout_s", [30.0, None], ids=["route-timeout", "envoys-default"])
def test_grpc_timeout_beside_a_route_timeout_keeps_the_route_timeout(timeout_s: float | None) -> None:
    # max_stream_duration would put the route in Envoy's "new timeouts" mode, which ignores
    # ``timeout``: an HTTP request would lose its limit (a VirtualService timeout stops working).
    action = _grpc_route(timeout_s, 30.0)
    assert not action.HasField("max_stream_duration")
    assert action.max_grpc_timeout.ToNanoseconds() == 30_000_000_000
    assert action.HasField("timeout") == (timeout_s is not None)


def test_grpc_timeout_not_read_sets_nothing() -> None:
    action = _grpc_route(None, None)
    assert not action.HasField("max_stream_duration") and not action.HasField("max_grpc_timeout")


def test_per_try_timeout_without_retries_writes_zero_retries() -> None:
    route = ir.Route(
        name="r",
        match=ir.RouteMatch(),
        action=ir.ForwardAction(backends=(ir.WeightedCluster(cluster=NGINX, weight=1),)),
        retries=ir.RetryPolicy(attempts=0, per_try_timeout_s=0.5, retry_on=""),
    )
    policy = build_route(route).route.retry_policy
    # An unset num_retries is 1 to Envoy: the 0 must be on the wire.
    assert policy.HasField("num_retries") and policy.num_retries.value == 0
    assert policy.per_try_timeout.ToNanoseconds() == 500_000_000
    assert policy.retry_on == ""


def test_direct_response_and_redirect() -> None:
    direct = build_route(ir.Route(name="d", match=ir.RouteMatch(), action=ir.DirectResponse(status=500)))
    assert direct.direct_response.status == 500
    assert not direct.direct_response.HasField("body")
    redirect = build_route(
        ir.Route(
            name="r",
            match=ir.RouteMatch(),
            action=ir.Redirect(
                scheme="https", host="new.example.com", port=8443, full_path="/x", status_code=301
            ),
        )
    ).redirect
    assert (redirect.scheme_redirect, redirect.host_redirect, redirect.port_redirect) == (
        "https",
        "new.example.com",
        8443,
    )
    assert redirect.path_redirect == "/x"
    assert redirect.response_code == route_components_pb2.RedirectAction.MOVED_PERMANENTLY


def test_header_set_overwrites_add_appends_remove_removes() -> None:
    route = ir.Route(
        name="r",
        match=ir.RouteMatch(),
        action=ir.DirectResponse(status=200),
        request_headers=ir.HeaderMutation(set=(("x-set", "1"),), add=(("x-add", "2"),), remove=("x-gone",)),
        response_headers=ir.HeaderMutation(set=(("x-served-by", "meshxds"),)),
    )
    out = build_route(route)
    actions = {(o.header.key, o.header.value): o.append_action for o in out.request_headers_to_add}
    assert actions == {
        ("x-set", "1"): base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        ("x-add", "2"): base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD,
    }
    assert list(out.request_headers_to_remove) == ["x-gone"]
    assert [o.header.key for o in out.response_headers_to_add] == ["x-served-by"]


# --- rewrites, checked by running the generated RE2 pattern --------------------------------------------


def rewritten(route: ir.Route, path: str) -> str:
    """What Envoy does with ``regex_rewrite``: RE2 replace of the pattern's matches in the path."""
    regex = build_route(route).route.regex_rewrite
    return str(re2.sub(regex.pattern.regex, regex.substitution, path))


REWRITES = [
    # (matched prefix, replacePrefixMatch, request path, rewritten path)
    ("/strip-prefix", "/", "/strip-prefix/three", "/three"),
    ("/strip-prefix", "/", "/strip-prefix", "/"),
    ("/strip-prefix", "/", "/strip-prefix/", "/"),
    ("/strip-prefix", "/xyz", "/strip-prefix", "/xyz"),
    ("/strip-prefix", "/xyz", "/strip-prefix/", "/xyz/"),
    ("/strip-prefix", "/xyz", "/strip-prefix/three", "/xyz/three"),
    ("/strip-prefix", "/xyz/", "/strip-prefix/three", "/xyz/three"),
    ("/strip-prefix", "/xyz/", "/strip-prefix/", "/xyz/"),
    ("/foo", "/", "/foo/bar/baz", "/bar/baz"),
    ("/", "/xyz", "/foo", "/xyz/foo"),
    ("/a.b", "/x", "/a.b/c", "/x/c"),
]


@pytest.mark.parametrize(
    ("prefix", "replacement", "path", "expected"),
    [pytest.param(*row, id=f"{row[2]} with {row[0]} replaced by {row[1]} is {row[3]}") for row in REWRITES],
)
def test_prefix_rewrite_leaves_one_slash_at_the_seam(
    prefix: str, replacement: str, path: str, expected: str
) -> None:
    matched = (
        ir.PathMatch(kind="prefix", value="/")
        if prefix == "/"
        else ir.PathMatch(kind="path_separated_prefix", value=prefix)
    )
    route = forward(matched, rewrite=ir.UrlRewrite(prefix=replacement))
    assert rewritten(route, path) == expected


def test_prefix_rewrite_pattern_escapes_regex_characters() -> None:
    route = forward(
        ir.PathMatch(kind="path_separated_prefix", value="/a.b"), rewrite=ir.UrlRewrite(prefix="/x")
    )
    assert rewritten(route, "/aXb/c") == "/aXb/c", "the dot in the prefix is literal"


def test_full_path_rewrite_and_host_rewrite() -> None:
    route = forward(
        ir.PathMatch(kind="exact", value="/full"),
        rewrite=ir.UrlRewrite(full_path="/replaced", host="in.example.com"),
    )
    action = build_route(route).route
    assert action.host_rewrite_literal == "in.example.com"
    assert rewritten(route, "/full") == "/replaced"
    assert rewritten(route, "/full/deeper/path") == "/replaced"


def test_redirect_with_prefix_replacement_uses_the_same_rewrite() -> None:
    route = ir.Route(
        name="r",
        match=ir.RouteMatch(path=ir.PathMatch(kind="path_separated_prefix", value="/old")),
        action=ir.Redirect(prefix="/new"),
    )
    regex = build_route(route).redirect.regex_rewrite
    assert re2.sub(regex.pattern.regex, regex.substitution, "/old/page") == "/new/page"


# --- listeners and route tables ----------------------------------------------------------------------


def http_listener(table: ir.RouteTable | None = None) -> ir.Listener:
    vhost = ir.VirtualHost(
        name="http2.example.com:8080", domains=("http2.example.com",), routes=(forward(ir.PathMatch()),)
    )
    table = table or ir.RouteTable(name="http.8080", virtual_hosts=(vhost,))
    return ir.Listener(
        name="0.0.0.0_8080",
        address="0.0.0.0",
        port=8080,
        chains=(ir.FilterChain(name="0.0.0.0_8080", route_table=table),),
        stat_prefix="0.0.0.0_8080",
    )


def test_listener_uses_rds_over_ads_with_an_auto_codec() -> None:
    out = build_listener(http_listener())
    assert out.name == "0.0.0.0_8080"
    assert (out.address.socket_address.address, out.address.socket_address.port_value) == ("0.0.0.0", 8080)
    (chain,) = out.filter_chains
    (network_filter,) = chain.filters
    assert network_filter.name == "envoy.filters.network.http_connection_manager"
    hcm = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(hcm)
    assert hcm.codec_type == hcm_pb2.HttpConnectionManager.AUTO
    assert hcm.rds.route_config_name == "http.8080"
    assert hcm.rds.config_source.HasField("ads")
    assert [f.name for f in hcm.http_filters] == ["envoy.filters.http.router"]


def test_route_configuration_ignores_the_port_in_host_matching() -> None:
    out = build_route_configuration(http_listener().route_tables[0])
    assert out.name == "http.8080"
    assert out.ignore_port_in_host_matching is True
    (vhost,) = out.virtual_hosts
    assert (vhost.name, list(vhost.domains), len(vhost.routes)) == (
        "http2.example.com:8080",
        ["http2.example.com"],
        1,
    )


# --- determinism and a full example ------------------------------------------------------------------


def example_config(config_dir: Path) -> ir.ProxyConfig:
    translation = translate(read_directory(config_dir))
    return translation.config_for(
        ProxyIdentity.of(namespace="gateway-system", labels={GATEWAY_NAME_LABEL: "http"})
    )


def serialized(config: ir.ProxyConfig) -> dict[str, list[tuple[str, bytes]]]:
    return {
        type_url: [(name, message.SerializeToString(deterministic=True)) for name, message in pairs]
        for type_url, pairs in build_resources(config).items()
    }


def test_same_ir_gives_byte_identical_resources() -> None:
    first = serialized(example_config(REPO / "examples"))
    second = serialized(example_config(REPO / "examples"))
    assert first == second
    assert set(first) == {TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, TYPE_SECRET}
    assert [name for name, _ in first[TYPE_CLUSTER]] == [NGINX]


def test_examples_cluster_is_http2_with_its_endpoint() -> None:
    resources = build_resources(example_config(REPO / "examples"))
    ((_, out),) = resources[TYPE_CLUSTER]
    assert isinstance(out, cluster_pb2.Cluster)
    options = protocol_options(out)
    assert options is not None and options.explicit_http_config.HasField("http2_protocol_options")
    ((_, cla),) = resources[TYPE_ENDPOINT]
    assert isinstance(cla, endpoint_pb2.ClusterLoadAssignment)
    socket = cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (cla.cluster_name, socket.address, socket.port_value) == (NGINX, "127.0.0.1", 9080)


GOLDEN = REPO / "tests" / "golden" / "gatewayapi"


def golden_dir(case: str, tmp_path: Path) -> Path:
    folder = tmp_path / case
    folder.mkdir()
    (folder / "in.yaml").write_text((GOLDEN / f"{case}.in.yaml").read_text())
    return folder


@pytest.mark.parametrize("case", sorted(p.name.removesuffix(".in.yaml") for p in GOLDEN.glob("*.in.yaml")))
def test_real_envoy_accepts_the_resources_of_every_golden_case(case: str, tmp_path: Path) -> None:
    """Every Gateway of the case, as the proxies it selects receive it."""
    translation = translate(read_directory(golden_dir(case, tmp_path)))
    for (namespace, name), config in sorted(translation.gateway_api.gateways.items()):
        assert config.validate() == [], f"{namespace}/{name}"
        result = envoy_validate(config, tmp_path)
        assert result.returncode == 0, f"{namespace}/{name}: {result.stdout}{result.stderr}"


def test_real_envoy_accepts_the_resources_of_the_examples(tmp_path: Path) -> None:
    config = example_config(REPO / "examples")
    assert config.listeners and config.clusters
    assert_envoy_accepts(config, tmp_path)


def test_real_envoy_rejects_a_broken_resource(tmp_path: Path) -> None:
    """The validation above can fail: a route to a regex RE2 refuses is rejected."""
    bad = forward(ir.PathMatch(kind="regex", value="(?<=a)b"))
    table = ir.RouteTable(
        name="http.8080",
        virtual_hosts=(ir.VirtualHost(name="bad", domains=("*",), routes=(bad,)),),
    )
    broken = ir.ProxyConfig(
        listeners=(http_listener(table),),
        clusters=(cluster(ir.UpstreamProtocol.HTTP2),),
    )
    result = envoy_validate(broken, tmp_path)
    assert result.returncode != 0
    assert "invalid perl operator" in result.stdout + result.stderr


def assert_envoy_accepts(config: ir.ProxyConfig, tmp_path: Path) -> None:
    result = envoy_validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_retry_backoff_is_envoys_base_interval_capped_at_ten_times() -> None:
    route = ir.Route(
        name="r",
        match=ir.RouteMatch(),
        action=ir.ForwardAction(backends=(ir.WeightedCluster(cluster=NGINX, weight=1),)),
        retries=ir.RetryPolicy(attempts=2, retriable_status_codes=(503,), backoff_base_s=0.25),
    )
    policy = build_route(route).route.retry_policy
    assert policy.retry_back_off.base_interval.ToMilliseconds() == 250
    assert policy.retry_back_off.max_interval.ToMilliseconds() == 2500
    assert list(policy.retriable_status_codes) == [503]
    without = build_route(replace(route, retries=ir.RetryPolicy(attempts=2))).route.retry_policy
    assert not without.HasField("retry_back_off")  # Envoy's default, 25 ms
