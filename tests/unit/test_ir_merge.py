"""``ir.ProxyConfig.merge``: the same value under one name is shared; two different values under
one name are a conflict that ``validate()`` reports, never a silent pick (issue 9, point 2)."""

from __future__ import annotations

import pytest

from meshxds import ir, names
from meshxds.model.manifests import SourcedDocument, parse_documents
from meshxds.translators.backends import BackendIndex

HOST = "echo.default.svc.cluster.local"
NAME = names.cluster_name(HOST, 9000)
SERVICE = ir.ObjectRef(kind="Service", namespace="default", name="echo")


def cluster(protocol: ir.UpstreamProtocol, *, name: str = NAME) -> ir.Cluster:
    return ir.Cluster(name=name, upstream_protocol=protocol, source=SERVICE)


def listener(port: int, *, name: str = "0.0.0.0_8080", gateway: str = "gw") -> ir.Listener:
    chain = ir.FilterChain(name=name, tcp_backends=(ir.WeightedCluster(cluster=NAME, weight=1),))
    source = ir.ObjectRef(kind="Gateway", namespace="default", name=gateway)
    return ir.Listener(
        name=name, address="0.0.0.0", port=port, chains=(chain,), stat_prefix=name, sources=(source,)
    )


def test_equal_values_under_one_name_are_shared() -> None:
    a = ir.ProxyConfig(listeners=(listener(8080),), clusters=(cluster(ir.UpstreamProtocol.HTTP1),))
    b = ir.ProxyConfig(listeners=(listener(8080),), clusters=(cluster(ir.UpstreamProtocol.HTTP1),))
    merged = ir.ProxyConfig.merge([a, b])
    assert merged.conflicts == ()
    assert len(merged.clusters) == 1
    assert merged.validate() == []


def test_two_clusters_under_one_name_are_reported() -> None:
    http1 = ir.ProxyConfig(clusters=(cluster(ir.UpstreamProtocol.HTTP1),))
    http2 = ir.ProxyConfig(clusters=(cluster(ir.UpstreamProtocol.HTTP2),))
    merged = ir.ProxyConfig.merge([http1, http2])
    assert merged.conflicts == (f"cluster {NAME} is defined twice, differently (upstream_protocol differ)",)
    assert merged.conflicts[0] in merged.validate()


def test_two_listeners_under_one_name_are_reported_with_their_origins() -> None:
    a = ir.ProxyConfig(listeners=(listener(8080),), clusters=(cluster(ir.UpstreamProtocol.HTTP1),))
    b = ir.ProxyConfig(
        listeners=(listener(9090, gateway="other"),), clusters=(cluster(ir.UpstreamProtocol.HTTP1),)
    )
    [problem] = ir.ProxyConfig.merge([a, b]).conflicts
    assert problem == (
        "listener 0.0.0.0_8080 is defined twice, differently "
        "(port, sources differ; from Gateway/default/gw and Gateway/default/other)"
    )


def test_conflicts_survive_a_further_merge() -> None:
    first = ir.ProxyConfig.merge(
        [
            ir.ProxyConfig(clusters=(cluster(ir.UpstreamProtocol.HTTP1),)),
            ir.ProxyConfig(clusters=(cluster(ir.UpstreamProtocol.HTTP2),)),
        ]
    )
    again = ir.ProxyConfig.merge([first, ir.ProxyConfig()])
    assert again.conflicts == first.conflicts
    assert again.validate()


@pytest.mark.parametrize(
    ("subset", "variant", "expected"),
    [
        ("", "", f"outbound|9000||{HOST}"),
        ("", "http2", f"outbound|9000|~http2|{HOST}"),
        ("v1", "http2", f"outbound|9000|v1~http2|{HOST}"),
    ],
    ids=["default-variant-keeps-the-plain-name", "variant-in-the-subset-part", "variant-after-a-subset"],
)
def test_variant_names(subset: str, variant: str, expected: str) -> None:
    assert names.cluster_name(HOST, 9000, subset=subset, variant=variant) == expected
    assert names.parse_cluster_name(expected)[2] == (f"{subset}~{variant}" if variant else subset)


SERVICE_YAML = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "echo", "namespace": "default"},
    "spec": {"ports": [{"name": "http", "port": 9000}]},
}


def test_both_protocol_variants_of_a_port_are_kept_with_one_endpoint_key() -> None:
    resources = parse_documents([SourcedDocument(path="s.yaml", index=0, body=SERVICE_YAML)])
    index = BackendIndex(resources=resources)
    ref = {"group": "", "kind": "Service", "name": "echo", "namespace": "default", "port": 9000}
    http = index.resolve_backend_ref(**ref, from_kind="HTTPRoute", from_namespace="default")
    grpc = index.resolve_backend_ref(
        **ref,
        from_kind="GRPCRoute",
        from_namespace="default",
        force_protocol=(ir.UpstreamProtocol.HTTP2, "GRPCRoute backends always speak HTTP/2"),
    )
    assert http.cluster is not None and grpc.cluster is not None
    assert (http.cluster.name, http.cluster.upstream_protocol) == (NAME, ir.UpstreamProtocol.HTTP1)
    assert grpc.cluster.name == names.cluster_name(HOST, 9000, variant="http2")
    assert grpc.cluster.upstream_protocol is ir.UpstreamProtocol.HTTP2
    assert grpc.cluster.endpoint_key == http.cluster.endpoint_key
