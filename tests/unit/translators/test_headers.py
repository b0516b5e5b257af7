"""Header operations are checked as Envoy checks them; each rule is held against the real Envoy
(``envoy --mode validate``), so the two cannot drift apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from meshxds import ir
from meshxds.testing.envoy_validate import validate_bootstrap
from meshxds.translators.headers import COMMAND_OPERATORS, envoy_value, literal, mutation_problems


def envoy_accepts(tmp_path: Path, route: dict[str, Any]) -> bool:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "h",
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route]}]},
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    listener = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps({"static_resources": {"listeners": [listener]}}))
    return validate_bootstrap(path).returncode == 0


def route_with(mutation: ir.HeaderMutation, *, response: bool = False) -> dict[str, Any]:
    side = "response" if response else "request"
    return {
        "match": {"prefix": "/"},
        "direct_response": {"status": 200},
        f"{side}_headers_to_add": [
            {"header": {"key": n, "value": v}} for n, v in (*mutation.set, *mutation.add)
        ],
        f"{side}_headers_to_remove": list(mutation.remove),
    }


BAD = {
    "set host": ir.HeaderMutation(set=(("Host", "x"),)),
    "add :authority": ir.HeaderMutation(add=((":authority", "x"),)),
    "remove host": ir.HeaderMutation(remove=("host",)),
    "newline": ir.HeaderMutation(set=(("x-a", "a\nb"),)),
    "carriage return": ir.HeaderMutation(add=(("x-a", "a\rb"),)),
}
GOOD = {
    "plain": ir.HeaderMutation(set=(("x-a", "b"),), add=(("x-c", "d e\tf"),), remove=("x-g",)),
    "escaped percent": ir.HeaderMutation(set=(("x-a", literal("50% of %FOO%")),)),
}


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("response", [False, True], ids=["request", "response"])
def test_what_envoy_refuses_is_a_problem(case: str, response: bool, tmp_path: Path) -> None:
    mutation = BAD[case]
    assert mutation_problems(mutation)
    assert not envoy_accepts(tmp_path, route_with(mutation, response=response))


@pytest.mark.parametrize("case", sorted(GOOD))
def test_what_envoy_accepts_is_no_problem(case: str, tmp_path: Path) -> None:
    mutation = GOOD[case]
    assert mutation_problems(mutation) == []
    assert envoy_accepts(tmp_path, route_with(mutation))


def test_every_kept_command_operator_is_one_envoy_knows(tmp_path: Path) -> None:
    args = {"REQ": "(x-a)", "RESP": "(x-a)", "DYNAMIC_METADATA": "(ns:key)", "UPSTREAM_METADATA": "(ns:key)"}
    args |= {"FILTER_STATE": "(key)", "START_TIME": "(%s)"}
    pairs = tuple((f"x-{i}", f"%{op}{args.get(op, '')}%") for i, op in enumerate(sorted(COMMAND_OPERATORS)))
    for _, value in pairs:
        assert envoy_value(value) == (value, False)
    assert envoy_accepts(tmp_path, route_with(ir.HeaderMutation(set=pairs)))


@pytest.mark.parametrize(
    ("value", "sent", "escaped"),
    [
        ("50%", "50%%", True),
        ("%FOO%", "%%FOO%%", True),
        ("100%% sure", "100%% sure", False),
        ("%DOWNSTREAM_REMOTE_ADDRESS% via %REQ(x-b)%", "%DOWNSTREAM_REMOTE_ADDRESS% via %REQ(x-b)%", False),
        ("a % b %HOSTNAME%", "a %% b %HOSTNAME%", True),
    ],
)
def test_istio_values_keep_command_operators_and_escape_the_rest(
    value: str, sent: str, escaped: bool, tmp_path: Path
) -> None:
    assert envoy_value(value) == (sent, escaped)
    assert envoy_accepts(tmp_path, route_with(ir.HeaderMutation(set=(("x-a", sent),))))
