"""The harness itself, proved with real parts: curl, grpcio, and Envoy on static config (no xDS)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshxds.testing.envoy import EnvoyProcess, http2_protocol_options
from meshxds.testing.ports import WaitTimeout, free_port
from meshxds.testing.server import CDS, LDS, MeshxdsProcess
from meshxds.testing.upstreams import GrpcEchoServer, H2cOnlyServer, Http1OnlyServer, curl, echo_call

# The factory fixtures of conftest.py, typed by what they make.
EnvoyFactory = Callable[..., EnvoyProcess]
MeshxdsFactory = Callable[..., MeshxdsProcess]

HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ACCESS_LOG_FORMAT = "%PROTOCOL% %UPSTREAM_PROTOCOL% %RESPONSE_CODE% %UPSTREAM_HOST%\n"


def static_proxy_bootstrap(
    *, listener_port: int, upstream_port: int, access_log: Path, http2: bool
) -> dict[str, Any]:
    """Envoy with one listener routing everything to one upstream; no xDS at all."""
    cluster: dict[str, Any] = {
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {
                                "address": {
                                    "socket_address": {"address": "127.0.0.1", "port_value": upstream_port}
                                }
                            }
                        }
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = http2_protocol_options()
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": "ingress",
        "access_log": [
            {
                "name": "envoy.access_loggers.file",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                    "path": str(access_log),
                    "log_format": {"text_format_source": {"inline_string": ACCESS_LOG_FORMAT}},
                },
            }
        ],
        "route_config": {
            "name": "static",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "node": {"id": "static-proxy", "cluster": "harness"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                            ]
                        }
                    ],
                }
            ],
            "clusters": [cluster],
        },
    }


# ------------------------------------------------------------------ upstreams, with curl and grpcio


def test_h2c_upstream_answers_curl_with_http2_prior_knowledge(h2c_upstream: H2cOnlyServer) -> None:
    result = curl(f"http://{h2c_upstream.address}/hello", http2_prior_knowledge=True)
    assert (result.status, result.http_version) == (200, "2"), result
    assert result.headers["x-upstream-name"] == "h2c"
    assert result.json()["protocol"] == "HTTP/2"
    assert result.json()["path"] == "/hello"
    assert h2c_upstream.requests == 1


@pytest.mark.parametrize(
    "extra_args",
    [["--http1.1"], [], ["--http2"]],
    ids=["http1.1", "curl-default", "http1.1-upgrade-to-h2c"],
)
def test_h2c_upstream_never_gives_http1_clients_a_200(
    h2c_upstream: H2cOnlyServer, extra_args: list[str]
) -> None:
    result = curl(f"http://{h2c_upstream.address}/", extra_args=extra_args)
    assert result.status != 200, result
    assert result.status == 505 or result.returncode != 0, result
    assert h2c_upstream.requests == 0


def test_http1_upstream_answers_http11(http1_upstream: Http1OnlyServer) -> None:
    result = curl(f"http://{http1_upstream.address}/x", method="POST", data="abc", http1=True)
    assert (result.status, result.http_version) == (200, "1.1"), result
    reply = result.json()
    assert (reply["upstream"], reply["protocol"], reply["method"], reply["body_bytes"]) == (
        "http1",
        "HTTP/1.1",
        "POST",
        3,
    )
    assert http1_upstream.requests == 1


def test_http1_upstream_refuses_http2_prior_knowledge(http1_upstream: Http1OnlyServer) -> None:
    result = curl(f"http://{http1_upstream.address}/", http2_prior_knowledge=True)
    assert result.status == 0 and result.returncode != 0, result
    assert http1_upstream.requests == 0
    assert http1_upstream.refused == 1


def test_grpc_echo_round_trip(grpc_upstream: GrpcEchoServer) -> None:
    reply = echo_call(grpc_upstream.address, "ping", metadata=[("x-request-tag", "harness")])
    assert reply.message == "ping"
    assert reply.upstream == "grpc"
    assert reply.metadata["x-request-tag"] == "harness"
    assert grpc_upstream.last_headers is not None
    assert grpc_upstream.last_headers["x-request-tag"] == "harness"


# ------------------------------------------------------------------ Envoy on a static bootstrap


@pytest.mark.parametrize("http2", [True, False], ids=["http2-options", "no-http2-options"])
def test_static_envoy_reaches_h2c_upstream_only_with_http2_options(
    h2c_upstream: H2cOnlyServer, envoy_factory: EnvoyFactory, tmp_path: Path, http2: bool
) -> None:
    listener_port = free_port()
    access_log = tmp_path / "access.log"
    bootstrap = static_proxy_bootstrap(
        listener_port=listener_port, upstream_port=h2c_upstream.port, access_log=access_log, http2=http2
    )
    envoy = envoy_factory(bootstrap=bootstrap)

    # The client speaks HTTP/1.1 to Envoy; the upstream protocol is Envoy's choice.
    result = curl(f"http://127.0.0.1:{listener_port}/through-envoy", http1=True)

    def access_log_line() -> str:
        return access_log.read_text().strip() if access_log.exists() else ""

    line = envoy.wait_for(access_log_line, what="an access log line")

    if http2:
        assert result.status == 200, result
        assert result.json()["protocol"] == "HTTP/2"
        assert result.json()["path"] == "/through-envoy"
        assert line.split()[:3] == ["HTTP/1.1", "HTTP/2", "200"], line
        assert envoy.stat("cluster.upstream.upstream_cx_http2_total") >= 1
        assert h2c_upstream.requests == 1
    else:  # Envoy's default is HTTP/1.1 upstream, which this upstream refuses
        assert result.status == 505, result
        assert line.split()[:3] == ["HTTP/1.1", "HTTP/1.1", "505"], line
        assert envoy.stat("cluster.upstream.upstream_cx_http2_total") == 0
        assert h2c_upstream.requests == 0
    assert envoy.listener_names(static=True) == ["ingress"]
    assert envoy.cluster_names() == []
    assert envoy.cluster_names(static=True) == ["upstream"]


def test_envoy_that_rejects_its_bootstrap_fails_the_wait_at_once_with_its_log(tmp_path: Path) -> None:
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {"clusters": [{"name": "bad", "type": "NOT_A_TYPE"}]},
    }
    envoy = EnvoyProcess(bootstrap, work_dir=tmp_path / "envoy")
    with envoy, pytest.raises(WaitTimeout, match=r"(?s)envoy exited with code \d+.*NOT_A_TYPE"):
        envoy.wait_ready(timeout=20)
    assert not envoy.running


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_ads_envoy_starts_with_node_identity_and_admin_port_of_its_own(
    envoy_factory: EnvoyFactory, delta: bool
) -> None:
    # Nobody serves xDS here, so /ready waits for the initial fetch timeout; the admin API is up at once.
    envoy = envoy_factory(
        node_id="gw-1",
        namespace="gateway-system",
        labels={"app": "gw"},
        xds_port=free_port(),
        delta=delta,
        wait_ready=False,
    )
    info = envoy.wait_for(lambda: envoy.get("/server_info"), what="admin /server_info")
    assert '"id": "gw-1"' in info
    node = envoy.config_dump()["configs"][0]["bootstrap"]["node"]
    assert node["metadata"] == {"namespace": "gateway-system", "labels": {"app": "gw"}}
    assert envoy.cluster_names(static=True) == ["xds_cluster"]
    ads = envoy.config_dump()["configs"][0]["bootstrap"]["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == ("DELTA_GRPC" if delta else "GRPC")


# ------------------------------------------------------------------ meshxds serve (once it exists)

needs_cli = pytest.mark.skipif(
    importlib.util.find_spec("meshxds.__main__") is None,
    reason="meshxds/__main__.py (the CLI) not written yet",
)


@needs_cli
def test_meshxds_serve_becomes_ready_on_an_empty_config_dir(
    meshxds_factory: MeshxdsFactory, manifest_dir: Path
) -> None:
    server = meshxds_factory(manifest_dir)
    assert server.syncz() == []


@needs_cli
@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_envoy_syncs_with_meshxds_serve(
    meshxds_factory: MeshxdsFactory, envoy_factory: EnvoyFactory, manifest_dir: Path, delta: bool
) -> None:
    server = meshxds_factory(manifest_dir)
    envoy = envoy_factory(node_id="sidecar-1", delta=delta)
    items = server.wait_synced("sidecar-1", types=(CDS, LDS))
    assert items
    assert envoy.running
