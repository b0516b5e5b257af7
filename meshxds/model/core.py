"""Kubernetes core and discovery objects: Service, EndpointSlice, Secret, Namespace, Pod."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from meshxds.model.base import KubeModel, Resource, Unserved

__all__ = [
    "Endpoint",
    "EndpointConditions",
    "EndpointPort",
    "EndpointSlice",
    "Namespace",
    "ObjectReference",
    "Pod",
    "Secret",
    "Service",
    "ServicePort",
    "ServiceSpec",
]


class ServicePort(KubeModel):
    name: str = ""
    port: int = Field(ge=1, le=65535)
    target_port: int | str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    app_protocol: str | None = None
    node_port: int | None = None


class ServiceSpec(KubeModel):
    ports: list[ServicePort] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)
    type: str = "ClusterIP"
    cluster_ip: str = Field(default="", alias="clusterIP")
    cluster_ips: list[str] = Field(default_factory=list, alias="clusterIPs")
    external_name: Annotated[
        str, Unserved("ExternalName Services are not resolved", effect="the Service has no endpoints")
    ] = ""
    ip_families: list[str] = Field(default_factory=list)
    ip_family_policy: str = ""
    session_affinity: Annotated[str, Unserved("session affinity", unless=("None",))] = ""
    publish_not_ready_addresses: bool = False
    internal_traffic_policy: Annotated[
        str, Unserved("node-local endpoints only", unless=("Cluster",), effect="every ready endpoint is used")
    ] = ""
    external_traffic_policy: str = ""


class Service(Resource):
    KIND: ClassVar[str] = "Service"
    spec: ServiceSpec = Field(default_factory=ServiceSpec)

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.spec.ports if p.port == number), None)


class ObjectReference(KubeModel):
    kind: str = ""
    name: str = ""
    namespace: str = ""
    uid: str = ""
    api_version: str = ""
    resource_version: str = ""


class EndpointConditions(KubeModel):
    # Kubernetes: a nil "ready" means unknown, which consumers treat as ready.
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None


class Endpoint(KubeModel):
    addresses: list[str] = Field(min_length=1)
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)
    hostname: str = ""
    target_ref: ObjectReference | None = None
    node_name: str = ""
    zone: str = ""
    hints: dict[str, object] = Field(default_factory=dict)
    deprecated_topology: dict[str, str] = Field(default_factory=dict)

    @property
    def is_ready(self) -> bool:
        return self.conditions.ready is not False


class EndpointPort(KubeModel):
    name: str = ""
    port: int | None = Field(default=None, ge=1, le=65535)
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    app_protocol: str | None = None


class EndpointSlice(Resource):
    API_GROUP: ClassVar[str] = "discovery.k8s.io"
    KIND: ClassVar[str] = "EndpointSlice"
    SERVICE_NAME_LABEL: ClassVar[str] = "kubernetes.io/service-name"

    address_type: Literal["IPv4", "IPv6", "FQDN"] = "IPv4"
    endpoints: list[Endpoint] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)

    @property
    def service_name(self) -> str:
        return self.metadata.labels.get(self.SERVICE_NAME_LABEL, "")


class Secret(Resource):
    KIND: ClassVar[str] = "Secret"
    type: str = "Opaque"
    data: dict[str, str] = Field(default_factory=dict, repr=False)
    string_data: dict[str, str] = Field(default_factory=dict, repr=False)
    immutable: bool = False


class ConfigMap(Resource):
    """Read for CA bundles (``ca.crt``) that Gateway ``spec.tls.frontend`` validation names."""

    KIND: ClassVar[str] = "ConfigMap"
    data: dict[str, str] = Field(default_factory=dict, repr=False)
    binary_data: dict[str, str] = Field(default_factory=dict, repr=False)
    immutable: bool = False


class Namespace(Resource):
    KIND: ClassVar[str] = "Namespace"
    NAMESPACED: ClassVar[bool] = False
    spec: dict[str, object] = Field(default_factory=dict)


class PodSpec(KubeModel):
    # Only what endpoint labelling needs; containers etc. are irrelevant to routing.
    model_config = KubeModel.model_config | {"extra": "ignore"}
    node_name: str = ""


class PodStatus(KubeModel):
    model_config = KubeModel.model_config | {"extra": "ignore"}
    pod_ip: str = Field(default="", alias="podIP")


class Pod(Resource):
    KIND: ClassVar[str] = "Pod"
    spec: PodSpec = Field(default_factory=PodSpec)
    status: PodStatus = Field(default_factory=PodStatus)
