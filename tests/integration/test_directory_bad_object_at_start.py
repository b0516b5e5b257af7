"""One invalid object in the directory at start-up never holds back the rest (issue 10, point 2):
meshxds starts ready, both real Envoys (of two Gateways, one owning the bad route) sync and serve
every good route, the bad one is reported with file, object and field; fixing it brings it in."""

from __future__ import annotations

from pathlib import Path

from httproute_support import GATEWAY_CLASS, NS, EchoServer, gateway_yaml, join, run_stack, service_yaml

from meshxds.testing.ports import free_port, wait_until


def route(name: str, gateway: str, host: str, *, port: str = "8080") -> str:
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {gateway}}}]
  hostnames: [{host}]
  rules:
  - backendRefs: [{{name: web, port: {port}}}]
"""


def test_a_bad_route_at_start_up_is_reported_and_both_gateways_serve_the_rest(tmp_path: Path) -> None:
    port_a, port_b = free_port(), free_port()
    with EchoServer(name="web") as web:
        files = {
            "base.yaml": join(
                GATEWAY_CLASS,
                gateway_yaml("a", [{"name": "http", "port": port_a}]),
                gateway_yaml("b", [{"name": "http", "port": port_b}]),
                service_yaml("web", web.port),
            ),
            **{f"route-a{i}.yaml": route(f"a{i}", "a", f"a{i}.example.com") for i in range(10)},
            **{f"route-b{i}.yaml": route(f"b{i}", "b", f"b{i}.example.com") for i in range(9)},
            "route-b-bad.yaml": route("bad", "b", "bad.example.com", port='"eighty"'),
        }
        probes = [("a", f"a{i}.example.com", "/") for i in range(10)]
        probes += [("b", f"b{i}.example.com", "/") for i in range(9)]
        with run_stack(tmp_path, files, gateways={"a": port_a, "b": port_b}, probes=probes) as stack:
            (error,) = stack.config()["errors"]
            assert error["object"] == f"HTTPRoute/{NS}/bad"
            assert error["file"].endswith("route-b-bad.yaml")
            assert error["field"].startswith("spec.rules[0].backendRefs[0].port")
            assert stack.request("bad.example.com", gateway="b").status == 404

            (stack.manifests / "route-b-bad.yaml").write_text(route("bad", "b", "bad.example.com"))
            wait_until(
                lambda: stack.request("bad.example.com", gateway="b").backend == "web",
                timeout=15,
                what="the fixed route served",
            )
            assert stack.config()["errors"] == []
