"""meshxds.testing.golden: the IR reader is the inverse of the writer, and strict."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshxds import ir
from meshxds.testing.golden import GoldenFormatError, dump_yaml, from_plain, load_ir, to_plain

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
_SIZE = re.compile(r"<\d+ bytes>")


def _proxy_configs() -> list[tuple[str, Any]]:
    """Every ProxyConfig the manifest goldens hold, as plain data."""
    out: list[tuple[str, Any]] = []
    for path in sorted(GOLDEN.glob("*/*.out.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for name, plain in (data.get("gateways") or data.get("proxies") or {}).items():
            out.append((f"{path.parent.name}/{path.name} {name}", plain))
    return out


def _sizes_masked(plain: Any) -> Any:
    """Key material is summarised by its size, which text read back as bytes does not keep."""
    return yaml.safe_load(_SIZE.sub("<N bytes>", yaml.safe_dump(plain)))


@pytest.mark.parametrize(("name", "plain"), _proxy_configs(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_manifest_golden_reads_back_to_the_same_ir(name: str, plain: Any) -> None:
    config = from_plain(ir.ProxyConfig, plain)
    assert _sizes_masked(to_plain(config)) == _sizes_masked(plain), name


def test_there_are_configs_to_read() -> None:
    assert len(_proxy_configs()) >= 30


def test_the_writer_keeps_an_empty_value_whose_default_is_not_empty() -> None:
    tls = ir.DownstreamTls(certificates=("c",), alpn=())
    assert to_plain(tls)["alpn"] == []
    assert from_plain(ir.DownstreamTls, to_plain(tls)) == tls
    assert "cipher_suites" not in to_plain(tls)


def test_a_choice_names_its_type() -> None:
    route = ir.Route(name="r", match=ir.RouteMatch(), action=ir.DirectResponse(status=404, body="no"))
    plain = to_plain(route)
    assert plain["action"] == {"direct_response": {"status": 404, "body": "no"}}
    assert from_plain(ir.Route, plain) == route


def test_secrets_read_as_text_and_stay_redacted() -> None:
    secret = from_plain(ir.TlsSecret, {"name": "s", "certificate_chain": "PEM", "private_key": "KEY"})
    assert secret.certificate_chain == b"PEM"
    assert isinstance(secret.private_key, ir.SecretBytes)
    assert repr(secret.private_key) == "[redacted]"


@pytest.mark.parametrize(
    ("plain", "where", "message"),
    [
        ({"listeners": [{"name": "l", "adress": "x"}]}, "listeners[0]", "unknown field(s) ['adress']"),
        ({"listeners": [{"name": "l", "address": "a"}]}, "listeners[0].port", "Listener needs this field"),
        ({"clusters": [{"name": "c", "lb_policy": "FASTEST"}]}, "clusters[0].lb_policy", "'FASTEST' is not"),
        ({"clusters": [{"name": "c", "upstream_protocol": "h3"}]}, "clusters[0].upstream_protocol", "'h3'"),
        ({"clusters": [{"name": "c", "connect_timeout_s": "1s"}]}, "clusters[0].connect_timeout_s", "number"),
        ({"clusters": [{"name": "c", "ring_size": True}]}, "clusters[0].ring_size", "expected int"),
        ({"clusters": "c"}, "clusters", "expected list"),
        ({"conflicts": None}, "conflicts", "expected list"),
    ],
    ids=["unknown-field", "missing-field", "literal", "enum", "float", "bool-as-int", "list", "null"],
)
def test_errors_say_where(plain: Any, where: str, message: str) -> None:
    with pytest.raises(GoldenFormatError) as caught:
        from_plain(ir.ProxyConfig, plain)
    assert caught.value.where == where
    assert message in caught.value.message


def test_a_choice_must_be_one_known_type() -> None:
    route = {"name": "r", "match": {}, "action": {"teleport": {}}}
    with pytest.raises(GoldenFormatError, match=r"action: 'teleport' is not one of \['direct_response'"):
        from_plain(ir.Route, route)
    with pytest.raises(GoldenFormatError, match="one-key mapping"):
        from_plain(ir.Route, {**route, "action": {"status": 200, "body": ""}})


@pytest.mark.parametrize(
    "text", ["a\n", "a\nb", "a \n", "\n", " a\n b\n", "a\n\n", "x\tz\n", "a\r\nb", "# c\n- d\n"]
)
def test_multi_line_text_reads_back_exactly(text: str) -> None:
    assert yaml.safe_load(dump_yaml({"k": text})) == {"k": text}


def test_load_ir_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.ir.yaml"
    path.write_text("listeners:\n- name: l\n  port: eighty\n")
    with pytest.raises(GoldenFormatError, match=r"^bad.ir.yaml: listeners\[0\].port: expected int"):
        load_ir(path)
