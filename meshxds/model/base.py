"""What every manifest model shares: camelCase aliases, immutability, object metadata.

Models keep fields they do not know (``extra="allow"``) so that :func:`unknown_fields` can turn
them into warnings: an unsupported field that changes behaviour is never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["KubeModel", "ObjectMeta", "Resource", "unknown_fields"]


class KubeModel(BaseModel):
    """Base of every spec fragment: camelCase on the wire, snake_case in Python, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        extra="allow",
        str_strip_whitespace=False,
    )


class ObjectMeta(KubeModel):
    name: str = Field(min_length=1, max_length=253)
    namespace: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int = 0
    resource_version: str = ""
    uid: str = ""
    creation_timestamp: str = ""


class Resource(KubeModel):
    """A top-level Kubernetes object. Subclasses set ``API_GROUP``, ``KIND`` and ``NAMESPACED``."""

    API_GROUP: ClassVar[str] = ""
    API_VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)
    KIND: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = True
    # Fields whose content we read only partially on purpose (status is ours to write).
    IGNORED_TOP_LEVEL: ClassVar[frozenset[str]] = frozenset({"status", "apiVersion", "kind"})

    api_version: str = ""
    kind: str = ""
    metadata: ObjectMeta

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> tuple[str, str]:
        return (self.metadata.namespace, self.metadata.name)

    @property
    def ref(self) -> str:
        """``Kind/namespace/name`` (``Kind/name`` when cluster-scoped), as errors print it."""
        if self.NAMESPACED:
            return f"{self.KIND}/{self.metadata.namespace}/{self.metadata.name}"
        return f"{self.KIND}/{self.metadata.name}"


def _walk(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, KubeModel):
        for extra in sorted(value.model_extra or {}):
            yield f"{path}.{extra}" if path else extra
        for name, field in type(value).model_fields.items():
            alias = field.alias or name
            yield from _walk(getattr(value, name), f"{path}.{alias}" if path else alias)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    elif isinstance(value, Mapping):
        # e.g. an Istio headers map: ``{cookie: {regx: ...}}`` must warn about ``regx``.
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}")


def unknown_fields(resource: Resource) -> list[str]:
    """Dotted paths of fields present in the manifest that the model does not know."""
    return [
        p
        for p in _walk(resource, "")
        if p.split(".", 1)[0] not in resource.IGNORED_TOP_LEVEL and not p.startswith("metadata.")
    ]
