"""A Gateway's ``status.addresses`` from each source (``spec.addresses``, ``--gateway-address``,
a concrete listener address, none), and the conditions for what meshxds cannot honour:
Accepted=False UnsupportedAddress for a type it does not support, Programmed=False
AddressNotUsable / AddressNotAssigned — with the listeners still served."""

from __future__ import annotations

from typing import Any

import pytest

from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.options import TranslateOptions, gateway_address_type
from meshxds.translators.gatewayapi import GatewayAPIResult, translate_gateway_api

CLASS = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "GatewayClass",
    "metadata": {"name": "meshxds"},
    "spec": {"controllerName": "meshxds.io/gateway-controller"},
}


def gateway(addresses: list[dict[str, str]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "gatewayClassName": "meshxds",
        "listeners": [{"name": "http", "port": 8080, "protocol": "HTTP"}],
    }
    if addresses is not None:
        spec["addresses"] = addresses
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": "gw-ns", "generation": 3},
        "spec": spec,
    }


def translate(gw: dict[str, Any], **options: Any) -> GatewayAPIResult:
    docs = [SourcedDocument(path="t.yaml", index=i, body=b) for i, b in enumerate([CLASS, gw])]
    return translate_gateway_api(parse_documents(docs), TranslateOptions(**options))


def gateway_status(result: GatewayAPIResult) -> dict[str, Any]:
    (status,) = [s.status for s in result.statuses if s.kind == "Gateway"]
    return status


def conditions(result: GatewayAPIResult) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in gateway_status(result)["conditions"]}


def addresses(result: GatewayAPIResult) -> list[tuple[str, str]]:
    return [(a["type"], a["value"]) for a in gateway_status(result)["addresses"]]


def ip(value: str) -> dict[str, str]:
    return {"type": "IPAddress", "value": value}


def host(value: str) -> dict[str, str]:
    return {"type": "Hostname", "value": value}


# --- where status.addresses come from ------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "options", "expected"),
    [
        (None, {}, []),
        (None, {"listener_address": "::"}, []),
        (None, {"listener_address": "127.0.0.1"}, [("IPAddress", "127.0.0.1")]),
        (
            None,
            {"listener_address": "127.0.0.1", "gateway_addresses": ("203.0.113.7", "lb.example.com")},
            [("IPAddress", "203.0.113.7"), ("Hostname", "lb.example.com")],
        ),
        (
            [ip("198.51.100.1"), host("gw.example.com")],
            {},
            [("IPAddress", "198.51.100.1"), ("Hostname", "gw.example.com")],
        ),
        ([ip("127.0.0.1")], {"listener_address": "127.0.0.1"}, [("IPAddress", "127.0.0.1")]),
        (
            [host("lb.example.com"), ip("10.0.0.9")],
            {"listener_address": "10.0.0.9", "gateway_addresses": ("lb.example.com",)},
            [("Hostname", "lb.example.com"), ("IPAddress", "10.0.0.9")],
        ),
        (
            [{"type": "IPAddress"}],
            {"gateway_addresses": ("203.0.113.7", "lb.example.com")},
            [("IPAddress", "203.0.113.7")],
        ),
        ([ip("2001:db8::1")], {"gateway_addresses": ("2001:DB8:0::1",)}, [("IPAddress", "2001:db8::1")]),
    ],
    ids=[
        "wildcard-listener-no-flag-reports-none",
        "ipv6-wildcard-listener-reports-none",
        "concrete-listener-address-is-reported",
        "flag-wins-over-the-listener-address",
        "spec-addresses-reported-when-nothing-contradicts-them",
        "spec-address-equal-to-the-listener-address",
        "spec-addresses-among-flag-and-listener-address",
        "spec-entry-without-value-is-assigned-the-flags-ip",
        "ipv6-compared-as-addresses-reported-as-asked",
    ],
)
def test_status_addresses(
    spec: list[dict[str, str]] | None, options: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    result = translate(gateway(spec), **options)
    assert addresses(result) == expected
    by_type = conditions(result)
    assert (by_type["Accepted"]["status"], by_type["Programmed"]["status"]) == ("True", "True")
    assert by_type["Programmed"]["reason"] == "Programmed"


# --- what meshxds cannot honour -------------------------------------------------------------------


def test_named_address_is_an_unsupported_type_and_the_gateway_is_not_accepted() -> None:
    result = translate(gateway([{"type": "NamedAddress", "value": "my-static-ip"}, ip("198.51.100.1")]))
    by_type = conditions(result)
    assert (by_type["Accepted"]["status"], by_type["Accepted"]["reason"]) == ("False", "UnsupportedAddress")
    assert "Spec.addresses[0]: type NamedAddress is not supported" in by_type["Accepted"]["message"]
    assert (by_type["Programmed"]["status"], by_type["Programmed"]["reason"]) == ("False", "AddressNotUsable")
    assert by_type["Programmed"]["observedGeneration"] == 3
    assert addresses(result) == [("IPAddress", "198.51.100.1")]
    # The listeners stay served: the address is outside the proxies.
    assert result.gateways[("gw-ns", "gw")].listeners


@pytest.mark.parametrize(
    ("spec", "options", "message"),
    [
        (
            [ip("10.0.0.9"), ip("192.0.2.1")],
            {"listener_address": "10.0.0.9"},
            "Spec.addresses[1]: 192.0.2.1 is not where this Gateway's proxies are reachable "
            "(meshxds knows them by 10.0.0.9, from the listener address)",
        ),
        (
            [host("other.example.com")],
            {"gateway_addresses": ("lb.example.com",)},
            "Spec.addresses[0]: other.example.com is not where this Gateway's proxies are reachable "
            "(meshxds knows them by lb.example.com, from --gateway-address)",
        ),
        ([ip("not-an-ip")], {}, "Spec.addresses[0]: 'not-an-ip' is not a valid IPAddress"),
        ([host("Upper.Example.com")], {}, "Spec.addresses[0]: 'Upper.Example.com' is not a valid Hostname"),
        ([ip("0.0.0.0")], {}, "Spec.addresses[0]: 0.0.0.0 is every interface, not an address to reach"),
    ],
    ids=[
        "ip-not-the-listener-address",
        "hostname-not-a-flag-address",
        "invalid-ip",
        "invalid-hostname",
        "unspecified-ip",
    ],
)
def test_unusable_address_is_not_programmed(
    spec: list[dict[str, str]], options: dict[str, Any], message: str
) -> None:
    result = translate(gateway(spec), **options)
    by_type = conditions(result)
    assert by_type["Accepted"]["status"] == "True"
    programmed = by_type["Programmed"]
    assert (programmed["status"], programmed["reason"]) == ("False", "AddressNotUsable")
    assert programmed["message"].startswith(message)
    assert "listeners still served to proxies labelled" in programmed["message"]
    assert ("IPAddress", "192.0.2.1") not in addresses(result)


def test_entry_without_value_and_nothing_to_assign_is_not_assigned() -> None:
    result = translate(gateway([{"type": "Hostname"}]), listener_address="127.0.0.1")
    programmed = conditions(result)["Programmed"]
    assert (programmed["status"], programmed["reason"]) == ("False", "AddressNotAssigned")
    assert "Spec.addresses[0]: no Hostname to assign" in programmed["message"]
    assert addresses(result) == []


def test_no_valid_listener_keeps_its_reason_over_an_address_problem() -> None:
    gw = gateway([{"type": "NamedAddress", "value": "x"}])
    gw["spec"]["listeners"][0]["protocol"] = "UDP"
    programmed = conditions(translate(gw))["Programmed"]
    assert (programmed["status"], programmed["reason"]) == ("False", "Invalid")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("10.0.0.1", "IPAddress"),
        ("2001:db8::1", "IPAddress"),
        ("lb.example.com", "Hostname"),
        ("*.example.com", "Hostname"),
        ("LB.example.com", None),
        ("lb_example", None),
        ("", None),
        ("a" * 254, None),
    ],
)
def test_gateway_address_type(value: str, expected: str | None) -> None:
    assert gateway_address_type(value) == expected
