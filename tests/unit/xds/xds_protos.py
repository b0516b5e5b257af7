"""Hand-built Envoy protos and snapshots for the xds cache, stream and server tests.

Names follow design.md (``outbound|PORT||HOST`` clusters, ``0.0.0.0_PORT`` listeners,
``http.PORT`` route configurations) but nothing here goes through the translators.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from google.protobuf import any_pb2, duration_pb2, struct_pb2
from google.protobuf.message import Message

from meshxds.xds.cache import (
    TYPE_CLUSTER,
    TYPE_ENDPOINT,
    TYPE_LISTENER,
    TYPE_ROUTE,
    TYPE_SECRET,
    Snapshot,
)


def pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def ads() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(), resource_api_version=config_source_pb2.V3
    )


def socket_address(host: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(socket_address=address_pb2.SocketAddress(address=host, port_value=port))


def sds_secret(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads())


def eds_cluster(
    name: str, *, service_name: str = "", upstream_secret: str | None = None
) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        connect_timeout=duration_pb2.Duration(seconds=1),
    )
    cluster.eds_cluster_config.eds_config.CopyFrom(ads())
    cluster.eds_cluster_config.service_name = service_name
    if upstream_secret is not None:
        context = tls_pb2.UpstreamTlsContext()
        context.common_tls_context.validation_context_sds_secret_config.CopyFrom(sds_secret(upstream_secret))
        cluster.transport_socket.name = "envoy.transport_sockets.tls"
        cluster.transport_socket.typed_config.CopyFrom(pack(context))
    return cluster


def static_cluster(name: str, port: int, host: str = "127.0.0.1") -> cluster_pb2.Cluster:
    return cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration_pb2.Duration(seconds=1),
        load_assignment=load_assignment(name, port, host=host),
    )


def load_assignment(name: str, port: int, *, host: str = "127.0.0.1") -> endpoint_pb2.ClusterLoadAssignment:
    return endpoint_pb2.ClusterLoadAssignment(
        cluster_name=name,
        endpoints=[
            endpoint_components_pb2.LocalityLbEndpoints(
                lb_endpoints=[
                    endpoint_components_pb2.LbEndpoint(
                        endpoint=endpoint_components_pb2.Endpoint(address=socket_address(host, port))
                    )
                ]
            )
        ],
    )


def http_connection_manager(route_name: str) -> hcm_pb2.HttpConnectionManager:
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=route_name,
        rds=hcm_pb2.Rds(config_source=ads(), route_config_name=route_name),
    )
    hcm.http_filters.add(name="envoy.filters.http.router").typed_config.CopyFrom(pack(router_pb2.Router()))
    return hcm


def listener(
    name: str,
    port: int,
    route_name: str,
    *,
    host: str = "127.0.0.1",
    server_secret: str | None = None,
    default_chain: bool = False,
) -> listener_pb2.Listener:
    chain = listener_components_pb2.FilterChain()
    chain.filters.add(name="envoy.filters.network.http_connection_manager").typed_config.CopyFrom(
        pack(http_connection_manager(route_name))
    )
    if server_secret is not None:
        context = tls_pb2.DownstreamTlsContext()
        context.common_tls_context.tls_certificate_sds_secret_configs.append(sds_secret(server_secret))
        chain.transport_socket.name = "envoy.transport_sockets.tls"
        chain.transport_socket.typed_config.CopyFrom(pack(context))
    result = listener_pb2.Listener(name=name, address=socket_address(host, port))
    if default_chain:
        result.default_filter_chain.CopyFrom(chain)
    else:
        result.filter_chains.append(chain)
    return result


def route_configuration(name: str, cluster: str, *, prefix: str = "/") -> route_pb2.RouteConfiguration:
    return route_pb2.RouteConfiguration(
        name=name,
        virtual_hosts=[
            route_components_pb2.VirtualHost(
                name=name,
                domains=["*"],
                routes=[
                    route_components_pb2.Route(
                        match=route_components_pb2.RouteMatch(prefix=prefix),
                        route=route_components_pb2.RouteAction(cluster=cluster),
                    )
                ],
            )
        ],
    )


def tls_secret(name: str, *, marker: str = "") -> secret_pb2.Secret:
    secret = secret_pb2.Secret(name=name)
    secret.validation_context.trusted_ca.inline_string = f"not a real CA {marker}"
    return secret


def cluster_name(service: str, port: int = 80) -> str:
    return f"outbound|{port}||{service}.default.svc.cluster.local"


def mesh_snapshot(
    *,
    services: Iterable[str] = ("web",),
    listeners: Mapping[int, str] | None = None,
    endpoint_port: int = 9000,
    route_prefix: str = "/",
    secrets: Iterable[str] = (),
    previous: Snapshot | None = None,
) -> Snapshot:
    """EDS clusters for ``services``; per listener port, a listener + route to a service's cluster.

    ``listeners`` maps port -> service (default: 8080 -> the first service). ``endpoint_port``
    and ``route_prefix`` exist to change EDS and RDS bytes without changing names.
    """
    services = list(services)
    if listeners is None:
        listeners = {8080: services[0]} if services else {}
    by_type: dict[str, list[tuple[str, Message]]] = {t: [] for t in (TYPE_CLUSTER, TYPE_ENDPOINT)}
    by_type[TYPE_LISTENER], by_type[TYPE_ROUTE], by_type[TYPE_SECRET] = [], [], []
    for service in services:
        name = cluster_name(service)
        by_type[TYPE_CLUSTER].append((name, eds_cluster(name)))
        by_type[TYPE_ENDPOINT].append((name, load_assignment(name, endpoint_port)))
    secrets = list(secrets)
    for port, service in sorted(listeners.items()):
        route_name = f"http.{port}"
        secret = secrets[0] if secrets else None
        by_type[TYPE_LISTENER].append(
            (f"0.0.0.0_{port}", listener(f"0.0.0.0_{port}", port, route_name, server_secret=secret))
        )
        by_type[TYPE_ROUTE].append(
            (route_name, route_configuration(route_name, cluster_name(service), prefix=route_prefix))
        )
    by_type[TYPE_SECRET] = [(name, tls_secret(name)) for name in secrets]
    return Snapshot.from_messages(by_type, previous=previous)


def node(node_id: str = "proxy-1", *, namespace: str | None = None, **labels: str) -> base_pb2.Node:
    result = base_pb2.Node(id=node_id, cluster="test")
    metadata: dict[str, object] = {}
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels:
        metadata["labels"] = dict(labels)
    result.metadata.CopyFrom(struct_pb2.Struct())
    result.metadata.update(metadata)
    return result
