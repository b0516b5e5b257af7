"""kgateway's HTTP/2 guide, both halves, against real Envoy: an HTTPListenerPolicy access log
proves the upstream protocol (``%UPSTREAM_PROTOCOL%``), and a static ``Backend`` with
``appProtocol: http2`` reached through URLRewrite (hostname + ReplacePrefixMatch)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from meshxds.testing.manifests import gateway_api_docs, gateway_listener, routed_service_docs, to_yaml
from meshxds.testing.ports import free_port, wait_until
from meshxds.testing.stack import local_gateway
from meshxds.testing.upstreams import H2cOnlyServer, curl

LABELS = {"gateway.networking.k8s.io/gateway-name": "http"}


def manifests(listener_port: int, upstream_port: int, log_path: Path, backend_host: str) -> str:
    nginx = to_yaml(
        routed_service_docs(
            "nginx", upstream_port=upstream_port, hostnames=["http2.example.com"], app_protocol="http2"
        )
    )
    return (
        to_yaml(gateway_api_docs([gateway_listener(listener_port)]))
        + f"""\
---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: HTTPListenerPolicy
metadata: {{name: access-logs, namespace: gateway-system}}
spec:
  targetRefs:
    - {{group: gateway.networking.k8s.io, kind: Gateway, name: http}}
  accessLog:
    - fileSink:
        path: {log_path}
        jsonFormat:
          method: "%REQ(X-ENVOY-ORIGINAL-METHOD?:METHOD)%"
          path: "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"
          protocol: "%PROTOCOL%"
          upstream_protocol: "%UPSTREAM_PROTOCOL%"
          response_code: "%RESPONSE_CODE%"
          authority: "%REQ(:AUTHORITY)%"
          backendCluster: "%UPSTREAM_CLUSTER%"
---
{nginx}---
apiVersion: gateway.kgateway.dev/v1alpha1
kind: Backend
metadata: {{name: http2, namespace: default}}
spec:
  type: Static
  static:
    hosts: [{{host: {backend_host}, port: {upstream_port}}}]
    appProtocol: http2
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: http2, namespace: default}}
spec:
  parentRefs: [{{name: http, namespace: gateway-system}}]
  hostnames: [static.example]
  rules:
    - backendRefs:
        - {{name: http2, kind: Backend, group: gateway.kgateway.dev}}
      filters:
        - type: URLRewrite
          urlRewrite:
            hostname: nghttp2.org
            path: {{type: ReplacePrefixMatch, replacePrefixMatch: /httpbin/}}
"""
    )


@pytest.fixture(params=["127.0.0.1", "localhost"], ids=["static-ip", "strict-dns"])
def gateway(
    request: pytest.FixtureRequest, tmp_path: Path, manifest_dir: Path, h2c_upstream: H2cOnlyServer
) -> Any:
    listener_port = free_port()
    log_path = tmp_path / "access.log"
    (manifest_dir / "all.yaml").write_text(
        manifests(listener_port, h2c_upstream.port, log_path, request.param)
    )
    with local_gateway(
        manifest_dir, node_id="gw", namespace="gateway-system", labels=LABELS, work_dir=tmp_path
    ):
        yield listener_port, log_path, h2c_upstream


def _log_entry(log_path: Path, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    if not log_path.exists():
        return None
    for line in log_path.read_text().splitlines():
        entry: dict[str, Any] = json.loads(line)
        if predicate(entry):
            return entry
    return None


def test_access_log_shows_http2_upstream(gateway: Any) -> None:
    port, log_path, _ = gateway
    result = curl(
        f"http://127.0.0.1:{port}/", http2_prior_knowledge=True, headers={"host": "http2.example.com"}
    )
    assert result.status == 200
    entry = wait_until(
        lambda: _log_entry(log_path, lambda e: e["authority"] == "http2.example.com"),
        timeout=10,
        what="access log line",
    )
    assert entry["protocol"] == "HTTP/2"
    assert entry["upstream_protocol"] == "HTTP/2"
    assert entry["backendCluster"] == "outbound|8080||nginx.default.svc.cluster.local"
    assert entry["response_code"] == 200


def test_static_backend_with_rewrite_speaks_http2(gateway: Any) -> None:
    port, log_path, upstream = gateway
    result = curl(
        f"http://127.0.0.1:{port}/get?x=1", http2_prior_knowledge=True, headers={"host": "static.example"}
    )
    assert result.status == 200, result
    seen = result.json()
    assert seen["protocol"] == "HTTP/2"
    assert seen["authority"] == "nghttp2.org"
    assert seen["path"] == "/httpbin/get?x=1"
    # As in the guide's log: %REQ(:AUTHORITY)% is read after the rewrite.
    entry = wait_until(
        lambda: _log_entry(log_path, lambda e: e["authority"] == "nghttp2.org"),
        timeout=10,
        what="access log line",
    )
    assert entry["upstream_protocol"] == "HTTP/2"
    assert entry["backendCluster"] == f"outbound|{upstream.port}||http2.default.backend.kgateway"
