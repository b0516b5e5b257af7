"""Analysis messages (``meshxds.conditions``): printed as meshxds always printed its warnings,
listed as the JSON entries ``validate`` and ``/debug/config`` show."""

from __future__ import annotations

from meshxds.conditions import AnalysisMessage, Level, MessageType, ObjectKey

NOT_FOUND = MessageType("IST0101", "ReferencedResourceNotFound")
GATEWAY = ObjectKey(kind="Gateway", namespace="edge", name="gw", ref="Gateway.networking.istio.io/edge/gw")


def test_a_message_prints_object_field_and_message() -> None:
    message = AnalysisMessage(
        type=NOT_FOUND,
        level=Level.ERROR,
        message="Secret edge/cert not found",
        object=GATEWAY,
        field="spec.servers[0].tls.credentialName",
    )
    assert str(message) == (
        "Gateway.networking.istio.io/edge/gw: spec.servers[0].tls.credentialName: Secret edge/cert not found"
    )
    assert message.labelled() == f"{message} [IST0101]"


def test_a_message_about_no_one_object_is_its_message() -> None:
    message = AnalysisMessage(type=NOT_FOUND, level=Level.WARNING, message="port 80: shared")
    assert str(message) == "port 80: shared"
    assert message.as_dict() == {
        "file": "",
        "object": "",
        "field": "",
        "message": "port 80: shared",
        "code": "IST0101",
        "reason": "ReferencedResourceNotFound",
    }


def test_the_entry_has_a_manifest_errors_keys_and_the_type() -> None:
    message = AnalysisMessage(type=NOT_FOUND, level=Level.ERROR, message="gone", object=GATEWAY, field="spec")
    entry = message.as_dict(file="gw.yaml#0")
    assert entry == {
        "file": "gw.yaml#0",
        "object": "Gateway.networking.istio.io/edge/gw",
        "field": "spec",
        "message": "gone",
        "code": "IST0101",
        "reason": "ReferencedResourceNotFound",
    }


def test_equal_messages_are_one() -> None:
    # Several proxies see the same Gateway: its message is reported once.
    one = AnalysisMessage(type=NOT_FOUND, level=Level.ERROR, message="gone", object=GATEWAY)
    again = AnalysisMessage(type=NOT_FOUND, level=Level.ERROR, message="gone", object=GATEWAY)
    assert list(dict.fromkeys([one, again])) == [one]
