"""The sidecar's outbound listeners: what Envoy would reject never reaches it (issue 10 point 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meshxds.identity import ProxyIdentity
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.pipeline import translate
from meshxds.testing.envoy_validate import envoy_validate


def _tcp_service(name: str, cluster_ip: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": cluster_ip, "ports": [{"name": "tcp", "port": 8163, "protocol": "TCP"}]},
    }


def test_services_sharing_a_cluster_ip_get_one_filter_chain_each_address(tmp_path: Path) -> None:
    # Envoy Gateway's test inputs give several Services one cluster IP (the API server would not,
    # the directory source has none to stop it): Envoy refused the sidecar's listener, whose
    # two chains matched the same destination.
    docs = [
        _tcp_service("alpha", "10.11.12.13"),
        _tcp_service("beta", "10.11.12.13"),
        _tcp_service("gamma", "10.11.12.14"),
    ]
    resources = parse_documents(SourcedDocument(path="s.yaml", index=i, body=d) for i, d in enumerate(docs))
    translation = translate(resources)
    sidecar = ProxyIdentity.of(namespace="default", labels={"app": "sleep"})
    config = translation.config_for(sidecar)
    warnings = [str(w) for w in translation.istio.config_for(sidecar, sidecar=True).warnings]

    [listener] = config.listeners
    assert [(c.destination_ranges, [b.cluster for b in c.tcp_backends]) for c in listener.chains] == [
        (("10.11.12.13",), ["outbound|8163||alpha.default.svc.cluster.local"]),
        (("10.11.12.14",), ["outbound|8163||gamma.default.svc.cluster.local"]),
    ]
    assert any(
        "Service/default/beta" in w and "10.11.12.13" in w and "alpha.default.svc.cluster.local" in w
        for w in warnings
    ), warnings
    assert config.validate() == []
    result = envoy_validate(config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
