"""render_bootstrap: the demo's envoy-bootstrap.yaml is its rendering (xDS over mTLS), and real
Envoy accepts it once its certificate files exist (pointed at a fresh ``meshxds certgen`` bundle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshxds.testing.envoy import (
    HTTP_PROTOCOL_OPTIONS,
    XdsClientTls,
    render_bootstrap,
    with_xds_tls,
    write_xds_tls,
)
from meshxds.testing.envoy_validate import validate_bootstrap

REPO = Path(__file__).resolve().parents[3]


def render_demo(*, delta: bool = False, xds_port: int = 18000) -> dict[str, Any]:
    """The arguments envoy-bootstrap.yaml was rendered with."""
    return render_bootstrap(
        node_id="gateway-http",
        namespace="gateway-system",
        labels={"gateway.networking.k8s.io/gateway-name": "http"},
        admin_port=19000,
        delta=delta,
        xds_port=xds_port,
        xds_tls=XdsClientTls(),
    )


def test_envoy_bootstrap_yaml_is_the_rendered_demo_bootstrap() -> None:
    text = (REPO / "envoy-bootstrap.yaml").read_text()
    assert text.startswith("#"), "keep the header explaining how to run it"
    assert "envoy -c envoy-bootstrap.yaml" in text
    assert yaml.safe_load(text) == render_demo()


def test_envoy_bootstrap_yaml_validates_with_real_envoy(tmp_path: Path) -> None:
    bootstrap = yaml.safe_load((REPO / "envoy-bootstrap.yaml").read_text())
    _, tls = write_xds_tls(tmp_path / "certs")
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(with_xds_tls(bootstrap, tls)))
    result = validate_bootstrap(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_bootstrap_yaml_speaks_mtls_to_meshxds() -> None:
    (xds,) = yaml.safe_load((REPO / "envoy-bootstrap.yaml").read_text())["static_resources"]["clusters"]
    context = xds["transport_socket"]["typed_config"]
    assert context["sni"] == "meshxds.meshxds-system.svc"
    common = context["common_tls_context"]
    assert common["tls_certificates"] == [
        {
            "certificate_chain": {"filename": "/etc/envoy/xds-tls/tls.crt"},
            "private_key": {"filename": "/etc/envoy/xds-tls/tls.key"},
        }
    ]
    assert common["validation_context"]["trusted_ca"] == {"filename": "/etc/envoy/xds-tls/ca.crt"}


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_rendered_bootstrap_validates_with_real_envoy(tmp_path: Path, delta: bool) -> None:
    path = tmp_path / "bootstrap.json"
    _, tls = write_xds_tls(tmp_path / "certs")
    path.write_text(json.dumps(with_xds_tls(render_demo(delta=delta, xds_port=28000), tls)))
    result = validate_bootstrap(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_render_bootstrap_carries_identity_and_ads_settings() -> None:
    boot: dict[str, Any] = render_bootstrap(
        node_id="n1", namespace="ns", labels={"app": "x"}, xds_port=1234, admin_port=0, delta=True
    )
    assert boot["node"] == {
        "id": "n1",
        "cluster": "meshxds-proxy",
        "metadata": {"namespace": "ns", "labels": {"app": "x"}},
    }
    ads = boot["dynamic_resources"]["ads_config"]
    assert ads["api_type"] == "DELTA_GRPC"
    assert ads["set_node_on_first_message_only"] is True
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": "xds_cluster"}}]
    for key in ("cds_config", "lds_config"):
        assert boot["dynamic_resources"][key] == {"ads": {}, "resource_api_version": "V3"}
    (xds,) = boot["static_resources"]["clusters"]
    assert "transport_socket" not in xds  # plaintext unless xds_tls is given
    assert xds["typed_extension_protocol_options"][HTTP_PROTOCOL_OPTIONS]["explicit_http_config"] == {
        "http2_protocol_options": {}
    }
    address = xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address == {"socket_address": {"address": "127.0.0.1", "port_value": 1234}}
    assert boot["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 0}
    assert "layered_runtime" not in boot
