"""The ``meshxds`` command, in-process: validate and translate (design.md, "Contracts")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from meshxds.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NGINX = "outbound|8080||nginx.default.svc.cluster.local"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
SELECT_HTTP = ["--namespace", "gateway-system", "--label", "gateway.networking.k8s.io/gateway-name=http"]

BROKEN_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: ok
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: apps
spec:
  ports:
    - name: http
      port: eighty
"""

MISMATCH = """\
apiVersion: v1
kind: Service
metadata:
  name: legacy
spec:
  ports:
    - name: http-legacy
      port: 9000
      appProtocol: grpc
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: legacy
spec:
  parentRefs:
    - name: http
      namespace: gateway-system
  rules:
    - backendRefs:
        - name: legacy
          port: 9000
"""


ISTIO_MISSING_SECRET = """\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
  namespace: istio-system
spec:
  selector: {istio: edge}
  servers:
    - port: {number: 443, name: https, protocol: HTTPS}
      hosts: ["*"]
      tls: {mode: SIMPLE, credentialName: missing-cert}
"""


@pytest.fixture
def istio_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "istio"
    folder.mkdir()
    (folder / "gateway.yaml").write_text(ISTIO_MISSING_SECRET)
    return folder


@pytest.fixture
def broken_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "svc.yaml").write_text(BROKEN_SERVICE)
    return folder


@pytest.fixture
def mismatch_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "mismatch"
    folder.mkdir()
    (folder / "gateway.yaml").write_text((EXAMPLES / "gateway.yaml").read_text())
    (folder / "legacy.yaml").write_text(MISMATCH)
    return folder


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- validate ----------------------------------------------------------------------------------------


def test_validate_examples_is_clean_and_explains_the_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--config-dir", str(EXAMPLES))
    assert code == 0
    info = [line for line in out.splitlines() if line.startswith("info:")]
    assert info == [
        f"info: Gateway/gateway-system/http: cluster {NGINX} speaks HTTP/2 upstream because "
        "Service/default/nginx spec.ports[0].appProtocol is 'http2': HTTP2 needs HTTP/2"
    ]
    assert out.splitlines()[-1] == "0 error(s), 0 warning(s)"


def test_validate_broken_dir_names_file_object_and_field(
    broken_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "validate", "--config-dir", str(broken_dir))
    assert code == 1
    (error,) = [line for line in out.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: {broken_dir / 'svc.yaml'}#1: Service/apps/web: spec.ports[0].port: ")
    assert out.splitlines()[-1] == "1 error(s), 0 warning(s)"


def test_validate_warns_about_a_port_name_contradicting_app_protocol(
    mismatch_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "validate", "--config-dir", str(mismatch_dir))
    assert code == 0, "a contradiction is a warning, not an error"
    (warning,) = [line for line in out.splitlines() if line.startswith("warning:")]
    assert warning == (
        "warning: Service/default/legacy: spec.ports[0].name 'http-legacy' suggests HTTP but "
        "spec.ports[0].appProtocol 'grpc' says GRPC; appProtocol wins"
    )
    assert any("legacy.default.svc.cluster.local speaks HTTP/2" in line for line in out.splitlines())


def test_validate_json_output(
    broken_dir: Path, mismatch_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "validate", "--config-dir", str(broken_dir), "--output", "json")
    report = json.loads(out)
    assert code == 1
    assert set(report) == {"errors", "warnings", "status"}
    (error,) = report["errors"]
    assert error["file"] == f"{broken_dir / 'svc.yaml'}#1"
    assert (error["object"], error["field"]) == ("Service/apps/web", "spec.ports[0].port")
    assert error["message"]

    code, out, _ = run(capsys, "validate", "--config-dir", str(mismatch_dir), "--output", "json")
    report = json.loads(out)
    assert code == 0
    assert report["errors"] == []
    (warning,) = report["warnings"]
    # Only text (not an Istio record): the entry's keys, the whole sentence as its message.
    assert warning["message"].startswith("Service/default/legacy: spec.ports[0].name 'http-legacy'")
    assert (warning["file"], warning["object"], warning["field"]) == ("", "", "")
    kinds = {(s["kind"], s["namespace"], s["name"]) for s in report["status"]}
    assert kinds == {
        ("GatewayClass", "", "meshxds"),
        ("Gateway", "gateway-system", "http"),
        ("HTTPRoute", "default", "legacy"),
    }


def test_validate_json_status_has_gateway_addresses_and_supported_features(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from meshxds.translators.gatewayapi.features import supported_features

    args = ("validate", "--config-dir", str(EXAMPLES), "--output", "json")
    code, out, _ = run(
        capsys, *args, "--gateway-address", "203.0.113.7", "--gateway-address", "lb.example.com"
    )
    assert code == 0
    status = {s["kind"]: s["status"] for s in json.loads(out)["status"]}
    assert status["Gateway"]["addresses"] == [
        {"type": "IPAddress", "value": "203.0.113.7"},
        {"type": "Hostname", "value": "lb.example.com"},
    ]
    assert status["GatewayClass"]["supportedFeatures"] == supported_features()
    # Without the flag: the concrete listener address, and none for 0.0.0.0.
    code, out, _ = run(capsys, *args, "--listener-address", "127.0.0.1")
    (gateway,) = [s["status"] for s in json.loads(out)["status"] if s["kind"] == "Gateway"]
    assert gateway["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    code, out, _ = run(capsys, *args)
    (gateway,) = [s["status"] for s in json.loads(out)["status"] if s["kind"] == "Gateway"]
    assert gateway["addresses"] == []


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["LB.Example.com"], "not an IP address or a lowercase DNS name"),
        ([f"10.0.0.{i}" for i in range(17)], "at most 16 addresses"),
    ],
    ids=["not-a-crd-hostname", "more-than-status-maxitems"],
)
def test_gateway_address_flag_is_checked(
    values: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [arg for value in values for arg in ("--gateway-address", value)]
    with pytest.raises(SystemExit) as info:
        main(["validate", "--config-dir", str(EXAMPLES), *flags])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


# --- translate ---------------------------------------------------------------------------------------


def translate_examples(capsys: pytest.CaptureFixture[str]) -> tuple[str, dict[str, Any]]:
    code, out, err = run(capsys, "translate", "--config-dir", str(EXAMPLES), *SELECT_HTTP)
    assert code == 0, err
    return out, json.loads(out)


def test_translate_prints_the_proxys_resources(capsys: pytest.CaptureFixture[str]) -> None:
    _, config = translate_examples(capsys)
    assert list(config) == ["clusters", "endpoints", "listeners", "routes", "secrets"]
    assert [c["name"] for c in config["clusters"]] == [NGINX]
    assert [e["cluster_name"] for e in config["endpoints"]] == [NGINX]
    assert [listener["name"] for listener in config["listeners"]] == ["0.0.0.0_8080"]
    assert [r["name"] for r in config["routes"]] == ["http.8080"]
    assert config["secrets"] == []


def test_translate_cluster_has_http2_options(capsys: pytest.CaptureFixture[str]) -> None:
    _, config = translate_examples(capsys)
    (cluster,) = config["clusters"]
    options = cluster["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS]
    assert options["@type"] == f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}"
    # HTTP/2, with the default keepalive (DEFAULT_H2_KEEPALIVE) and its idle timeout, nothing else.
    assert options["explicit_http_config"] == {
        "http2_protocol_options": {"connection_keepalive": {"interval": "300s", "timeout": "20s"}}
    }
    assert options["common_http_protocol_options"] == {"idle_timeout": "600s"}
    assert cluster["eds_cluster_config"]["service_name"] == NGINX


def test_translate_uses_proto_field_names(capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = translate_examples(capsys)
    keys = set(re.findall(r'"([A-Za-z_@.][^"]*)":', out))
    camel = sorted(k for k in keys if re.fullmatch(r"[a-z]+[A-Z]\w*", k))
    assert camel == [], "Envoy's JSON form with snake_case proto field names"
    assert {"connect_timeout", "route_config_name", "stat_prefix", "port_value"} <= keys


def test_translate_is_deterministic(capsys: pytest.CaptureFixture[str]) -> None:
    first, _ = translate_examples(capsys)
    second, _ = translate_examples(capsys)
    assert first == second


def test_translate_is_deterministic_across_processes() -> None:
    """Different hash seeds, same bytes: nothing depends on set or dict iteration order."""
    outputs = []
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-m", "meshxds", "translate", "--config-dir", str(EXAMPLES), *SELECT_HTTP],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1]
    assert NGINX in outputs[0]


def test_translate_for_a_proxy_no_gateway_selects_is_a_sidecar(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "translate", "--config-dir", str(EXAMPLES), "--namespace", "default")
    assert code == 0
    config = json.loads(out)
    # The mesh's outbound config: one listener per service port, RDS named by the port (as Istio's).
    assert [lis["name"] for lis in config["listeners"]] == ["0.0.0.0_8080"]
    (table,) = config["routes"]
    assert table["name"] == "8080"
    (vhost,) = table["virtual_hosts"]
    assert "nginx" in vhost["domains"] and "nginx.default.svc.cluster.local:8080" in vhost["domains"]
    assert [c["name"] for c in config["clusters"]] == [NGINX]


def test_translate_listener_address_flag(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "translate", "--config-dir", str(EXAMPLES), *SELECT_HTTP, "--listener-address", "127.0.0.1"
    )
    assert code == 0
    (listener,) = json.loads(out)["listeners"]
    assert listener["name"] == "127.0.0.1_8080"
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8080}


def test_translate_warnings_go_to_stderr(mismatch_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "translate", "--config-dir", str(mismatch_dir), *SELECT_HTTP)
    assert code == 0
    assert "suggests HTTP" not in out
    assert "warning: Service/default/legacy: spec.ports[0].name 'http-legacy'" in err
    json.loads(out)


def test_translate_bad_dir_exits_1_with_errors_on_stderr(
    broken_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "translate", "--config-dir", str(broken_dir), *SELECT_HTTP)
    assert code == 1
    assert out == ""
    assert f"error: {broken_dir / 'svc.yaml'}#1: Service/apps/web: spec.ports[0].port: " in err


def test_translate_missing_dir_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "translate", "--config-dir", str(tmp_path / "absent"))
    assert (code, out) == (1, "")
    assert "not a directory" in err


def test_label_must_be_key_equals_value(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["translate", "--config-dir", str(EXAMPLES), "--label", "no-equals-sign"])
    assert info.value.code == 2
    assert "expected k=v" in capsys.readouterr().err


def test_validate_prints_istio_errors_with_their_code(
    istio_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "validate", "--config-dir", str(istio_dir))
    assert code == 1
    (error,) = [line for line in out.splitlines() if line.startswith("error:")]
    assert error == (
        "error: Gateway.networking.istio.io/istio-system/edge: spec.servers[0].tls.credentialName: "
        "Secret istio-system/missing-cert not found [IST0101]"
    )


def test_validate_json_lists_istio_errors_as_records(
    istio_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "validate", "--config-dir", str(istio_dir), "--output", "json")
    assert code == 1
    (error,) = json.loads(out)["errors"]
    assert error == {
        "file": str(istio_dir / "gateway.yaml"),
        "object": "Gateway.networking.istio.io/istio-system/edge",
        "field": "spec.servers[0].tls.credentialName",
        "message": "Secret istio-system/missing-cert not found",
        "code": "IST0101",
        "reason": "ReferencedResourceNotFound",
    }
