"""kgateway extensions (``gateway.kgateway.dev/v1alpha1``): Backend and HTTPListenerPolicy,
as kgateway's HTTP/2 guide uses them, and BackendConfigPolicy (active health checks,
connectTimeout, maxRequestsPerConnection) attached to Services and Backends."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from meshxds.model.base import KubeModel, Resource
from meshxds.model.istio import Duration, parse_istio_duration

__all__ = [
    "GROUP",
    "Backend",
    "BackendConfigPolicy",
    "HTTPListenerPolicy",
    "HealthCheck",
    "StaticHost",
]

GROUP = "gateway.kgateway.dev"


class StaticHost(KubeModel):
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class StaticBackend(KubeModel):
    hosts: list[StaticHost] = Field(min_length=1)
    app_protocol: str | None = None


class BackendSpec(KubeModel):
    type: Literal["Static", "AWS", "GCP", "DynamicForwardProxy"] = "Static"
    static: StaticBackend | None = None

    @model_validator(mode="after")
    def _static_needs_hosts(self) -> BackendSpec:
        if self.type == "Static" and self.static is None:
            raise ValueError("a Static Backend needs spec.static.hosts")
        return self


class Backend(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha1",)
    KIND: ClassVar[str] = "Backend"
    spec: BackendSpec


class LocalPolicyTargetReference(KubeModel):
    group: str
    kind: str
    name: str = Field(min_length=1)
    section_name: str | None = None


class FileSink(KubeModel):
    path: str = Field(min_length=1)
    string_format: str | None = None
    json_format: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_format(self) -> FileSink:
        if self.string_format is not None and self.json_format is not None:
            raise ValueError("give stringFormat or jsonFormat, not both")
        return self


class AccessLog(KubeModel):
    file_sink: FileSink | None = None
    grpc_service: dict[str, Any] | None = None
    filter: dict[str, Any] | None = None


class HTTPListenerPolicySpec(KubeModel):
    target_refs: list[LocalPolicyTargetReference] = Field(min_length=1)
    access_log: list[AccessLog] = Field(default_factory=list)


class HTTPListenerPolicy(Resource):
    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha1",)
    KIND: ClassVar[str] = "HTTPListenerPolicy"
    spec: HTTPListenerPolicySpec


class HealthCheckHttp(KubeModel):
    host: str | None = None
    """The Host header of the checks; unset, the cluster's name (Envoy's default)."""
    path: str = Field(min_length=1, pattern=r"^/")
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"] | None = None


class HealthCheckGrpc(KubeModel):
    service_name: str | None = None
    """The ``grpc.health.v1`` service asked about; unset, the server as a whole (``""``)."""
    authority: str | None = None


class HealthCheck(KubeModel):
    """Active health checking (Envoy's ``HealthCheck``): one of ``http`` and ``grpc``."""

    timeout: Duration
    interval: Duration
    unhealthy_threshold: int | None = Field(default=None, ge=1)
    healthy_threshold: int | None = Field(default=None, ge=1)
    http: HealthCheckHttp | None = None
    grpc: HealthCheckGrpc | None = None

    @model_validator(mode="after")
    def _one_kind_positive_times(self) -> HealthCheck:
        if (self.http is None) == (self.grpc is None):
            raise ValueError("give exactly one of http and grpc")
        for name, value in (("timeout", self.timeout), ("interval", self.interval)):
            if parse_istio_duration(value) <= 0:
                raise ValueError(f"{name} must be greater than 0, not {value!r}")
        return self


class CommonHttpProtocolOptions(KubeModel):
    max_requests_per_connection: int | None = Field(default=None, ge=0)
    """0 or unset: unlimited."""


class BackendConfigPolicySpec(KubeModel):
    target_refs: list[LocalPolicyTargetReference] = Field(min_length=1, max_length=16)
    connect_timeout: Duration | None = None
    common_http_protocol_options: CommonHttpProtocolOptions | None = None
    health_check: HealthCheck | None = None

    @model_validator(mode="after")
    def _positive_connect_timeout(self) -> BackendConfigPolicySpec:
        if self.connect_timeout is not None and parse_istio_duration(self.connect_timeout) <= 0:
            raise ValueError(f"connectTimeout must be greater than 0, not {self.connect_timeout!r}")
        return self


class BackendConfigPolicy(Resource):
    """Cluster settings for the Services (all ports, or the one ``sectionName`` names) and
    Backends it targets, in its own namespace."""

    API_GROUP: ClassVar[str] = GROUP
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1alpha1",)
    KIND: ClassVar[str] = "BackendConfigPolicy"
    spec: BackendConfigPolicySpec
