"""What every manifest model shares: camelCase aliases, immutability, object metadata.

Models keep fields they do not know (``extra="allow"``) so that :func:`unknown_fields` can turn
them into warnings: an unsupported field that changes behaviour is never dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

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


def _may_hold_model(annotation: Any) -> bool:
    """Can a field of this type hold a model (so extras) anywhere inside it?"""
    if annotation is Any:
        return False  # pydantic builds no model for Any
    if isinstance(annotation, type):
        return issubclass(annotation, BaseModel)
    origin = get_origin(annotation)
    if origin is Literal:
        return False
    args = get_args(annotation)
    if origin is Annotated:
        return _may_hold_model(args[0])
    if args:  # list[X], dict[K, V], X | None
        return any(_may_hold_model(a) for a in args)
    return True  # a ForwardRef, TypeVar or anything else we cannot see through: walk it


_MODEL_BEARING: dict[type[BaseModel], tuple[tuple[str, str], ...]] = {}


def _model_bearing_fields(cls: type[BaseModel]) -> tuple[tuple[str, str], ...]:
    """``(name, alias)`` of the fields worth walking: a ``str`` or ``dict[str, str]`` field never
    holds an unknown field, and skipping them makes the walk ~10x cheaper."""
    found = _MODEL_BEARING.get(cls)
    if found is None:
        found = tuple(
            (name, field.alias or name)
            for name, field in cls.model_fields.items()
            if _may_hold_model(field.annotation)
        )
        _MODEL_BEARING[cls] = found
    return found


def _collect(value: Any, path: str, out: list[str]) -> None:
    """Append the path of every extra below ``value`` (depth first, extras before fields)."""
    if isinstance(value, KubeModel):
        extra = value.__pydantic_extra__
        if extra:
            out.extend(f"{path}.{name}" if path else name for name in sorted(extra))
        for name, alias in _model_bearing_fields(type(value)):
            item = getattr(value, name)
            if item is not None and not isinstance(item, str):
                _collect(item, f"{path}.{alias}" if path else alias, out)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if isinstance(item, KubeModel | list | tuple | Mapping):
                _collect(item, f"{path}[{i}]", out)
    elif isinstance(value, Mapping):
        # e.g. an Istio headers map: ``{cookie: {regx: ...}}`` must warn about ``regx``.
        for key, item in value.items():
            if isinstance(item, KubeModel | list | tuple | Mapping):
                _collect(item, f"{path}.{key}", out)


def unknown_fields(resource: Resource) -> list[str]:
    """Dotted paths of fields present in the manifest that the model does not know."""
    found: list[str] = []
    _collect(resource, "", found)
    return [
        p
        for p in found
        if p.split(".", 1)[0] not in resource.IGNORED_TOP_LEVEL and not p.startswith("metadata.")
    ]
