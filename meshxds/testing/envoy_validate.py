"""Check a generated configuration with the real Envoy (``envoy --mode validate``).

The snapshot is rewritten as a static bootstrap — RDS inlined as ``route_config``, EDS as
``load_assignment``, SDS secrets as static secrets — so Envoy's full validation (protobuf
constraints, RE2, cluster and secret references) runs without an xDS server.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf import json_format
from google.protobuf.message import Message

from meshxds import ir
from meshxds.testing.certs import issue, make_ca, write_pem_files
from meshxds.testing.envoy import find_envoy
from meshxds.xds.cache import TYPE_CLUSTER, TYPE_ENDPOINT, TYPE_LISTENER, TYPE_ROUTE, TYPE_SECRET
from meshxds.xds.resources import build_resources

__all__ = ["envoy_validate", "static_bootstrap", "validate_bootstrap", "with_test_certificates"]


def _static_sds(common: tls_pb2.CommonTlsContext) -> None:
    """SDS over ADS → the static secret of the same name."""
    for sds in common.tls_certificate_sds_secret_configs:
        sds.ClearField("sds_config")
    if common.HasField("combined_validation_context"):
        common.combined_validation_context.validation_context_sds_secret_config.ClearField("sds_config")
    if common.HasField("validation_context_sds_secret_config"):
        common.validation_context_sds_secret_config.ClearField("sds_config")


def static_bootstrap(resources: dict[str, list[tuple[str, Message]]]) -> dict[str, Any]:
    """The snapshot as a static bootstrap: RDS inlined as ``route_config``, EDS as ``load_assignment``."""
    routes = {name: m for name, m in resources[TYPE_ROUTE]}
    assignments = {name: m for name, m in resources[TYPE_ENDPOINT]}
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id = "validate"
    boot.node.cluster = "validate"
    for _, secret in resources[TYPE_SECRET]:
        boot.static_resources.secrets.add().CopyFrom(secret)
    for _, message in resources[TYPE_LISTENER]:
        listener = boot.static_resources.listeners.add()
        listener.CopyFrom(message)
        chains = list(listener.filter_chains)
        if listener.HasField("default_filter_chain"):
            chains.append(listener.default_filter_chain)
        for chain in chains:
            if chain.HasField("transport_socket"):
                # SDS over ADS → the static secret of the same name.
                tls = tls_pb2.DownstreamTlsContext()
                assert chain.transport_socket.typed_config.Unpack(tls)
                _static_sds(tls.common_tls_context)
                chain.transport_socket.typed_config.Pack(tls)
            for network_filter in chain.filters:
                hcm = hcm_pb2.HttpConnectionManager()
                if not network_filter.typed_config.Unpack(hcm):
                    continue  # tcp_proxy: nothing to inline
                route_config = route_pb2.RouteConfiguration()
                route_config.CopyFrom(routes[hcm.rds.route_config_name])
                # Statically loaded tables check their clusters; the invalid-backend cluster is
                # deliberately undefined (its share gets cluster_not_found_response_code).
                route_config.validate_clusters.value = False
                hcm.ClearField("rds")
                hcm.route_config.CopyFrom(route_config)
                network_filter.typed_config.Pack(hcm)
    for _, message in resources[TYPE_CLUSTER]:
        cluster_out = boot.static_resources.clusters.add()
        cluster_out.CopyFrom(message)
        if cluster_out.HasField("transport_socket"):
            upstream = tls_pb2.UpstreamTlsContext()
            assert cluster_out.transport_socket.typed_config.Unpack(upstream)
            _static_sds(upstream.common_tls_context)
            cluster_out.transport_socket.typed_config.Pack(upstream)
        if cluster_out.type == cluster_pb2.Cluster.EDS:
            cluster_out.type = cluster_pb2.Cluster.STATIC
            cluster_out.ClearField("eds_cluster_config")
            cluster_out.load_assignment.CopyFrom(assignments[cluster_out.name])
    as_dict: dict[str, Any] = json_format.MessageToDict(boot, preserving_proto_field_name=True)
    return as_dict


def envoy_validate(config: ir.ProxyConfig, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Envoy's verdict on the resources of ``config`` (as a static bootstrap in ``tmp_path``)."""
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(static_bootstrap(build_resources(config))))
    return validate_bootstrap(path)


def validate_bootstrap(path: Path) -> subprocess.CompletedProcess[str]:
    """``envoy --mode validate -c PATH``: exit 0 when Envoy would start with this bootstrap."""
    return subprocess.run(
        [
            find_envoy(),
            "--mode",
            "validate",
            "-c",
            str(path),
            "--use-dynamic-base-id",
            "--disable-hot-restart",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def with_test_certificates(config: ir.ProxyConfig, tmp_path: Path) -> ir.ProxyConfig:
    """``config`` with real key material, for Envoy to load: every SDS secret's bytes and every
    certificate or CA file path replaced by freshly issued test ones (names unchanged). Golden
    files hold placeholders for both: file paths live on the proxy, and key material is never
    written down."""
    ca = make_ca()
    cert = issue(ca, ["*.example.com"])
    chain, key = write_pem_files(tmp_path, "server", cert)
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca.cert_pem)

    def fix_chain(chain_: ir.FilterChain) -> ir.FilterChain:
        if chain_.tls is None:
            return chain_
        tls = replace(
            chain_.tls,
            certificate_files=tuple((str(chain), str(key)) for _ in chain_.tls.certificate_files),
            ca_file=str(ca_path) if chain_.tls.ca_file else None,
        )
        return replace(chain_, tls=tls)

    def fix_cluster(cluster: ir.Cluster) -> ir.Cluster:
        tls = cluster.upstream_tls
        if tls is None:
            return cluster
        return replace(
            cluster,
            upstream_tls=replace(
                tls,
                ca_file=str(ca_path) if tls.ca_file else None,
                client_cert_file=str(chain) if tls.client_cert_file else None,
                client_key_file=str(key) if tls.client_key_file else None,
            ),
        )

    return replace(
        config,
        listeners=tuple(
            replace(lis, chains=tuple(fix_chain(c) for c in lis.chains)) for lis in config.listeners
        ),
        clusters=tuple(fix_cluster(c) for c in config.clusters),
        secrets=tuple(
            replace(s, certificate_chain=cert.chain_pem, private_key=ir.SecretBytes(cert.key_pem))
            for s in config.secrets
        ),
        ca_secrets=tuple(replace(s, ca_certificates=ca.cert_pem) for s in config.ca_secrets),
    )
