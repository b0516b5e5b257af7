"""A header modifier Envoy would refuse never reaches it (issue 10, point 5): the rule asking
for it fails closed (500) with ``PartiallyInvalid`` on the route, while the route's other rules
and every other route keep being served by a real Envoy; a ``%`` in a Gateway API header value
reaches the upstream as written (literal, never an Envoy command operator)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from httproute_support import (
    GATEWAY_CLASS,
    NS,
    EchoServer,
    Stack,
    gateway_yaml,
    join,
    run_stack,
    service_yaml,
)

from meshxds.testing.ports import free_port

GW = "filters"
ROUTES = f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mixed, namespace: {NS}}}
spec:
  parentRefs: [{{name: {GW}}}]
  hostnames: [mixed.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /host}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: Host, value: elsewhere.example.com}}]}}
    backendRefs: [{{name: web, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /newline}}}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{add: [{{name: x-note, value: "a\\nb"}}]}}
    backendRefs: [{{name: web, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /percent}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: x-share, value: "50% of %FOO%"}}]}}
    backendRefs: [{{name: web, port: 8080}}]
"""


@pytest.fixture(scope="module", params=["sotw", "delta"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    port = free_port()
    with EchoServer(name="web") as web:
        files = {
            "all.yaml": join(
                GATEWAY_CLASS,
                gateway_yaml(GW, [{"name": "http", "port": port}]),
                service_yaml("web", web.port),
                ROUTES,
            )
        }
        base = tmp_path_factory.mktemp(f"filters-{request.param}")
        with run_stack(
            base,
            files,
            gateways={GW: port},
            probes=[(GW, "mixed.example.com", "/percent")],
            delta=request.param == "delta",
        ) as running:
            yield running


def test_rules_envoy_would_refuse_answer_500_and_the_rest_is_served(stack: Stack) -> None:
    assert stack.request("mixed.example.com", "/host").status == 500
    assert stack.request("mixed.example.com", "/newline").status == 500
    served = stack.request("mixed.example.com", "/percent")
    assert served.backend == "web"
    assert served.seen()["headers"]["x-share"] == "50% of %FOO%"  # literal, as written


def test_the_route_says_which_rules_fail_closed_and_why(stack: Stack) -> None:
    conditions = stack.route_conditions("mixed", gateway=GW)
    partial = conditions["PartiallyInvalid"]
    assert partial["status"] == "True" and partial["reason"] == "UnsupportedValue"
    assert "spec.rules[0].filters[0]" in partial["message"] and "'Host'" in partial["message"]
    assert "spec.rules[1].filters[0]" in partial["message"] and "CR or LF" in partial["message"]
    assert conditions["Accepted"]["status"] == "True"
    # Envoy took everything: no type of the gateway's stream was ever NACKed.
    (node,) = stack.server.node_status(f"gw-{GW}")
    assert all(state["state"] == "SYNCED" and not state["last_nack"] for state in node["types"].values())
