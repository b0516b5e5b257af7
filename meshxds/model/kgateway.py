"""kgateway extensions (``gateway.kgateway.dev/v1alpha1``): Backend and HTTPListenerPolicy,
as kgateway's HTTP/2 guide uses them."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from meshxds.model.base import KubeModel, Resource

__all__ = ["GROUP", "Backend", "HTTPListenerPolicy", "StaticHost"]

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
