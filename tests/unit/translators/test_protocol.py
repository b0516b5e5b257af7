"""Protocol selection: one named rule per row (after Istio's ``pkg/config/kube/conversion_test.go``)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshxds.translators.protocol import (
    Protocol,
    decide_port_protocol,
    is_grpc,
    is_http,
    is_http2,
    is_opaque_tcp,
    is_tls,
    parse_protocol,
)

AT = "spec.ports[0]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    port_name: str | None
    app_protocol: str | None = None
    transport: str | None = "TCP"
    server_protocol: str | None = None
    protocol: Protocol
    source_field: str
    warns: bool = False


CASES = {
    "prefers appProtocol over port name": Case(
        port_name="http",
        app_protocol="http2",
        protocol=Protocol.HTTP2,
        source_field=f"{AT}.appProtocol",
        warns=True,
    ),
    "appProtocol alone decides": Case(
        port_name=None, app_protocol="http2", protocol=Protocol.HTTP2, source_field=f"{AT}.appProtocol"
    ),
    "grpc-web port name is not resolved as grpc": Case(
        port_name="grpc-web", protocol=Protocol.GRPC_WEB, source_field=f"{AT}.name"
    ),
    "grpc-web prefix with a suffix is not resolved as grpc": Case(
        port_name="grpc-web-ui", protocol=Protocol.GRPC_WEB, source_field=f"{AT}.name"
    ),
    "grpc-web appProtocol is not resolved as grpc": Case(
        port_name=None, app_protocol="grpc-web", protocol=Protocol.GRPC_WEB, source_field=f"{AT}.appProtocol"
    ),
    "kubernetes.io/h2c is HTTP2": Case(
        port_name=None,
        app_protocol="kubernetes.io/h2c",
        protocol=Protocol.HTTP2,
        source_field=f"{AT}.appProtocol",
    ),
    "kubernetes.io/ws is HTTP": Case(
        port_name=None,
        app_protocol="kubernetes.io/ws",
        protocol=Protocol.HTTP,
        source_field=f"{AT}.appProtocol",
    ),
    "name prefix up to first dash: http2-web → HTTP2": Case(
        port_name="http2-web", protocol=Protocol.HTTP2, source_field=f"{AT}.name"
    ),
    "name without dash is the whole prefix: http → HTTP": Case(
        port_name="http", protocol=Protocol.HTTP, source_field=f"{AT}.name"
    ),
    "case-insensitive: GRPC-api → GRPC": Case(
        port_name="GRPC-api", protocol=Protocol.GRPC, source_field=f"{AT}.name"
    ),
    "case-insensitive appProtocol: HTTP2 → HTTP2": Case(
        port_name=None, app_protocol="HTTP2", protocol=Protocol.HTTP2, source_field=f"{AT}.appProtocol"
    ),
    "a prefix must end at a dash: httpx is unknown": Case(
        port_name="httpx", protocol=Protocol.UNSUPPORTED, source_field=""
    ),
    "UDP wins over name and appProtocol": Case(
        port_name="grpc",
        app_protocol="http2",
        transport="UDP",
        protocol=Protocol.UDP,
        source_field=f"{AT}.protocol",
    ),
    "UDP transport is case-insensitive": Case(
        port_name="http", transport="udp", protocol=Protocol.UDP, source_field=f"{AT}.protocol"
    ),
    "no transport means TCP": Case(
        port_name="http", transport=None, protocol=Protocol.HTTP, source_field=f"{AT}.name"
    ),
    "server protocol wins over appProtocol": Case(
        port_name="http",
        app_protocol="grpc",
        server_protocol="HTTPS",
        protocol=Protocol.HTTPS,
        source_field=f"{AT}.protocol",
    ),
    "unknown → UnsupportedProtocol": Case(port_name="foo", protocol=Protocol.UNSUPPORTED, source_field=""),
    "no name and no appProtocol → UnsupportedProtocol": Case(
        port_name=None, protocol=Protocol.UNSUPPORTED, source_field=""
    ),
    "unknown appProtocol still wins over the name, with a warning": Case(
        port_name="http",
        app_protocol="example.com/custom",
        protocol=Protocol.UNSUPPORTED,
        source_field=f"{AT}.appProtocol",
        warns=True,
    ),
    "mismatch between name and appProtocol warns": Case(
        port_name="http-api",
        app_protocol="grpc",
        protocol=Protocol.GRPC,
        source_field=f"{AT}.appProtocol",
        warns=True,
    ),
    "agreement between name and appProtocol does not warn": Case(
        port_name="grpc-api", app_protocol="grpc", protocol=Protocol.GRPC, source_field=f"{AT}.appProtocol"
    ),
    "unknown name does not count as a mismatch": Case(
        port_name="web", app_protocol="http2", protocol=Protocol.HTTP2, source_field=f"{AT}.appProtocol"
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_decide_port_protocol(case: Case) -> None:
    decision = decide_port_protocol(
        port_name=case.port_name,
        app_protocol=case.app_protocol,
        transport=case.transport,
        field_prefix=AT,
        server_protocol=case.server_protocol,
    )
    assert decision.protocol is case.protocol
    assert decision.source_field == case.source_field
    assert decision.detail
    assert bool(decision.warnings) == case.warns


def test_mismatch_warning_names_both_fields_and_the_winner() -> None:
    decision = decide_port_protocol(port_name="http-api", app_protocol="grpc", field_prefix=AT)
    (warning,) = decision.warnings
    assert f"{AT}.name 'http-api' suggests HTTP" in warning
    assert f"{AT}.appProtocol 'grpc' says GRPC" in warning
    assert "appProtocol wins" in warning


def test_source_field_without_prefix_is_the_bare_field() -> None:
    assert decide_port_protocol(port_name="grpc").source_field == "name"
    assert decide_port_protocol(port_name=None, app_protocol="grpc").source_field == "appProtocol"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("http", Protocol.HTTP, id="lower case"),
        pytest.param("GRPC-WEB", Protocol.GRPC_WEB, id="upper case"),
        pytest.param("  tcp ", Protocol.TCP, id="surrounding whitespace is ignored"),
        pytest.param("mysql", Protocol.MYSQL, id="mixed-case spelling parses from lower case"),
        pytest.param("http-foo", Protocol.UNSUPPORTED, id="parse does not strip name suffixes"),
        pytest.param("", Protocol.UNSUPPORTED, id="empty is unsupported, not an error"),
    ],
)
def test_parse_protocol(text: str, expected: Protocol) -> None:
    assert parse_protocol(text) is expected


@pytest.mark.parametrize(
    ("protocol", "http2", "grpc", "http", "tls"),
    [
        pytest.param(Protocol.HTTP, False, False, True, False, id="HTTP is HTTP/1"),
        pytest.param(Protocol.HTTP2, True, False, True, False, id="HTTP2 is HTTP/2"),
        pytest.param(Protocol.GRPC, True, True, True, False, id="GRPC is HTTP/2 and gRPC"),
        pytest.param(Protocol.GRPC_WEB, True, True, True, False, id="GRPC-Web is HTTP/2 and gRPC"),
        pytest.param(Protocol.HTTPS, False, False, False, True, id="HTTPS is TLS, not plain HTTP"),
        pytest.param(Protocol.TLS, False, False, False, True, id="TLS is TLS"),
        pytest.param(Protocol.TCP, False, False, False, False, id="TCP is none of them"),
        pytest.param(Protocol.UNSUPPORTED, False, False, False, False, id="unsupported is none of them"),
    ],
)
def test_predicates(protocol: Protocol, http2: bool, grpc: bool, http: bool, tls: bool) -> None:
    assert (is_http2(protocol), is_grpc(protocol), is_http(protocol), is_tls(protocol)) == (
        http2,
        grpc,
        http,
        tls,
    )


optional_text = st.none() | st.text()


@given(
    port_name=optional_text,
    app_protocol=optional_text,
    transport=optional_text,
    field_prefix=st.text(),
    server_protocol=optional_text,
)
def test_decide_port_protocol_never_raises(
    port_name: str | None,
    app_protocol: str | None,
    transport: str | None,
    field_prefix: str,
    server_protocol: str | None,
) -> None:
    decision = decide_port_protocol(
        port_name=port_name,
        app_protocol=app_protocol,
        transport=transport,
        field_prefix=field_prefix,
        server_protocol=server_protocol,
    )
    assert isinstance(decision.protocol, Protocol)
    assert decision.detail
    if decision.protocol is not Protocol.UNSUPPORTED:
        assert decision.source_field, "a known protocol always names the field that chose it"


@given(
    protocol=st.sampled_from(Protocol),
    flips=st.lists(st.booleans(), max_size=32),
    pad=st.sampled_from(["", " ", "\t"]),
)
def test_parse_protocol_round_trips_case_insensitively(
    protocol: Protocol, flips: list[bool], pad: str
) -> None:
    value = protocol.value
    mixed = "".join((c.swapcase() if i < len(flips) and flips[i] else c) for i, c in enumerate(value))
    assert parse_protocol(pad + mixed + pad) is protocol


def test_websocket_over_tls_app_protocol_is_https() -> None:
    decision = decide_port_protocol(port_name="ws", app_protocol="kubernetes.io/wss")
    assert decision.protocol is Protocol.HTTPS


def test_explanation_names_the_field() -> None:
    decision = decide_port_protocol(port_name=None, app_protocol="http2", field_prefix="spec.ports[0]")
    assert "spec.ports[0].appProtocol" in decision.detail


@pytest.mark.parametrize(
    ("protocol", "opaque"),
    [
        pytest.param(Protocol.TCP, True, id="TCP is plain TCP"),
        pytest.param(Protocol.MONGO, True, id="Mongo is proxied as plain TCP"),
        pytest.param(Protocol.REDIS, True, id="Redis is proxied as plain TCP"),
        pytest.param(Protocol.MYSQL, True, id="MySQL is proxied as plain TCP"),
        pytest.param(Protocol.TLS, False, id="TLS is not opaque: it may be terminated"),
        pytest.param(Protocol.HTTP, False, id="HTTP is not opaque"),
        pytest.param(Protocol.UNSUPPORTED, False, id="unsupported is not opaque"),
    ],
)
def test_is_opaque_tcp(protocol: Protocol, opaque: bool) -> None:
    assert is_opaque_tcp(protocol) is opaque
