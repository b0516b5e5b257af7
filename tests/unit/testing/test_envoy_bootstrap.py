"""render_bootstrap: the demo's envoy-bootstrap.yaml is its rendering (xDS over mTLS, the client
certificate through file-based SDS, envoy-sds/), and real Envoy accepts it once its SDS files exist
(pointed at a fresh ``meshxds certgen`` bundle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshxds.testing.envoy import (
    HTTP_PROTOCOL_OPTIONS,
    SDS_CERTIFICATE,
    SDS_TRUSTED_CA,
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
    path.write_text(json.dumps(with_xds_tls(bootstrap, tls.write_sds_files(tmp_path / "sds"))))
    result = validate_bootstrap(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_bootstrap_yaml_speaks_mtls_to_meshxds_with_certificates_from_watched_sds_files() -> None:
    (xds,) = yaml.safe_load((REPO / "envoy-bootstrap.yaml").read_text())["static_resources"]["clusters"]
    context = xds["transport_socket"]["typed_config"]
    assert context["sni"] == "meshxds.meshxds-system.svc"
    common = context["common_tls_context"]
    # Static files would be read once: a rotated certificate would wait for a restart.
    assert "tls_certificates" not in common and "validation_context" not in common
    (cert,) = common["tls_certificate_sds_secret_configs"]
    validation = common["combined_validation_context"]
    ca = validation["validation_context_sds_secret_config"]
    for config, file in ((cert, "xds-certificate.yaml"), (ca, "xds-trusted-ca.yaml")):
        assert config["sds_config"]["path_config_source"] == {
            "path": f"/etc/envoy/sds/{file}",
            "watched_directory": {"path": "/etc/envoy/sds"},
        }
    assert validation["default_validation_context"]["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "meshxds.meshxds-system.svc"}}
    ]


def test_envoy_sds_files_name_the_secret_volume_files_and_watch_its_directory() -> None:
    files = {p.name: yaml.safe_load(p.read_text()) for p in (REPO / "envoy-sds").glob("*.yaml")}
    assert files == XdsClientTls().sds_files()
    (cert,) = files["xds-certificate.yaml"]["resources"]
    assert cert["name"] == SDS_CERTIFICATE
    assert cert["tls_certificate"] == {
        "certificate_chain": {"filename": "/etc/envoy/xds-tls/tls.crt"},
        "private_key": {"filename": "/etc/envoy/xds-tls/tls.key"},
        # The kubelet renames ..data in this directory; the files themselves never change.
        "watched_directory": {"path": "/etc/envoy/xds-tls"},
    }
    (ca,) = files["xds-trusted-ca.yaml"]["resources"]
    assert ca["name"] == SDS_TRUSTED_CA
    assert ca["validation_context"] == {
        "trusted_ca": {"filename": "/etc/envoy/xds-tls/ca.crt"},
        "watched_directory": {"path": "/etc/envoy/xds-tls"},
    }


def test_write_sds_files_points_the_transport_socket_at_them(tmp_path: Path) -> None:
    tls = XdsClientTls.in_directory(tmp_path / "certs").write_sds_files(tmp_path / "sds")
    assert tls.sds_dir == str(tmp_path / "sds")
    common = tls.transport_socket()["typed_config"]["common_tls_context"]
    (cert,) = common["tls_certificate_sds_secret_configs"]
    path = Path(cert["sds_config"]["path_config_source"]["path"])
    assert path.parent == tmp_path / "sds"
    (secret,) = yaml.safe_load(path.read_text())["resources"]
    assert secret["tls_certificate"]["certificate_chain"] == {"filename": str(tmp_path / "certs" / "tls.crt")}


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_rendered_bootstrap_validates_with_real_envoy(tmp_path: Path, delta: bool) -> None:
    path = tmp_path / "bootstrap.json"
    _, tls = write_xds_tls(tmp_path / "certs")
    tls = tls.write_sds_files(tmp_path / "sds")
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
