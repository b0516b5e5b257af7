"""What every manifest model shares: camelCase aliases, immutability, object metadata.

Models keep fields they do not know (``extra="allow"``) so that :func:`unknown_fields` can turn
them into warnings: an unsupported field that changes behaviour is never dropped silently. A
field the model knows but translation does not serve carries :class:`Unserved` on its type, and
:func:`unserved_fields` lists those an object sets, for the same warnings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import SchemaValidator, ValidationError

R = TypeVar("R", bound="Resource")

__all__ = [
    "KubeModel",
    "ObjectMeta",
    "Resource",
    "Unserved",
    "unknown_fields",
    "unserved_fields",
    "unserved_marker",
    "validate_known",
]


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


@dataclass(frozen=True, slots=True)
class Unserved:
    """Put on a model field's type, ``Annotated[X, Unserved("why")]``: meshxds parses the field
    but translation does not serve it. An object that sets it (to anything but its default, a
    value of ``unless`` or one ``served`` accepts) is warned about, naming the object and the
    field, as an unknown field is (:func:`unserved_fields`)."""

    why: str
    """What is not served, in a few words."""
    effect: str = "ignored"
    """What meshxds does instead: ``"ignored"``, ``"the rule is not applied"``."""
    unless: tuple[object, ...] = ()
    """Values that ask for what meshxds does anyway (a Service's ``sessionAffinity: None``)."""
    served: Callable[[Any], bool] | None = None
    """The values meshxds does serve when no list can name them (an ExtensionRef filter naming a
    kgateway TrafficPolicy, whatever its name)."""

    def describe(self, path: str) -> str:
        """``field spec.x is not served by meshxds (why); effect``."""
        return f"field {path} is not served by meshxds ({self.why}); {self.effect}"


def unserved_marker(field: FieldInfo) -> Unserved | None:
    """The field's :class:`Unserved` marker, if it has one."""
    return next((m for m in field.metadata if isinstance(m, Unserved)), None)


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            yield annotation
        return
    for arg in get_args(annotation):  # list[X], dict[K, V], X | None, Annotated[X, ...]
        yield from _models_in(arg)


_UnservedPlan = tuple[tuple[str, str, Unserved | None, Any], ...]
_UNSERVED_PLAN: dict[type[BaseModel], _UnservedPlan] = {}


def _unserved_plan(cls: type[BaseModel]) -> _UnservedPlan:
    """``(name, alias, marker, default)`` of the fields of ``cls`` the walk looks at: the marked
    ones (with the default that asks for nothing), and (marker ``None``) those that may hold a
    model with marked fields. Most classes have neither, and their objects are never walked."""
    plan = _UNSERVED_PLAN.get(cls)
    if plan is None:
        _UNSERVED_PLAN[cls] = ()  # no model holds itself today; this keeps a cycle from looping
        entries: list[tuple[str, str, Unserved | None, Any]] = []
        for name, field in cls.model_fields.items():
            marker = unserved_marker(field)
            if marker is not None:
                entries.append(
                    (name, field.alias or name, marker, field.get_default(call_default_factory=True))
                )
            elif any(_unserved_plan(model) for model in _models_in(field.annotation)):
                entries.append((name, field.alias or name, None, None))
        plan = _UNSERVED_PLAN[cls] = tuple(entries)
    return plan


def _collect_unserved(value: BaseModel, path: str, out: list[tuple[str, Unserved]]) -> None:
    values = value.__dict__  # a model's field values (``getattr`` without the attribute lookup)
    for name, alias, marker, default in _unserved_plan(type(value)):
        item = values.get(name)
        if item is None:
            continue
        if marker is not None:
            if (
                item != default
                and not any(item == harmless for harmless in marker.unless)
                and not (marker.served is not None and marker.served(item))
            ):
                out.append((f"{path}.{alias}" if path else alias, marker))
        elif item:  # an empty list or map holds nothing (a model is always true)
            _collect_within(item, f"{path}.{alias}" if path else alias, out)


def _collect_within(item: Any, path: str, out: list[tuple[str, Unserved]]) -> None:
    if isinstance(item, BaseModel):
        _collect_unserved(item, path, out)
    elif isinstance(item, list | tuple):
        for i, element in enumerate(item):
            if isinstance(element, BaseModel | list | tuple | Mapping):
                _collect_within(element, f"{path}[{i}]", out)
    elif isinstance(item, Mapping):
        # e.g. an Istio headers map: ``{cookie: {...}}``
        for key, element in item.items():
            if isinstance(element, BaseModel | list | tuple | Mapping):
                _collect_within(element, f"{path}.{key}", out)


def unserved_fields(obj: BaseModel) -> list[tuple[str, Unserved]]:
    """``(path, marker)`` of every :class:`Unserved` field ``obj`` sets, depth first, the path
    camelCase as written (``spec.trafficPolicy.loadBalancer.localityLbSetting``)."""
    found: list[tuple[str, Unserved]] = []
    _collect_unserved(obj, "", found)
    return found


# The common case, a manifest with no unknown field, validated in one pass: a copy of the model's
# core schema that forbids extras below the top level (whose extras ``status``, ``apiVersion``,
# ``kind`` are checked by name) and below ``metadata`` (server-set fields, never warned about).
# It builds instances of the very same classes; a manifest it rejects, for any reason, takes the
# full path (lenient validation, then the walk above), so errors and warnings read the same.
_STRICT: dict[type[Resource], SchemaValidator] = {}


def _forbid_extras(schema: Any, *, top: bool) -> None:
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "model" and schema.get("cls") is ObjectMeta:
            return
        if kind == "model-fields" and not top:
            schema["extra_behavior"] = "forbid"
        for key, value in schema.items():
            _forbid_extras(value, top=top and key in ("schema", "definitions") and kind != "model-fields")
    elif isinstance(schema, list):
        for value in schema:
            _forbid_extras(value, top=False)


def _all_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    stack: list[type[BaseModel]] = [BaseModel]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


@contextmanager
def _validators_not_reused() -> Iterator[None]:
    """pydantic-core reuses a complete model's own validator for a nested ``model`` schema, which
    would bring back ``extra="allow"``: mark the classes incomplete while the copy is built."""
    complete = [m for m in _all_models() if m.__dict__.get("__pydantic_complete__")]
    for model in complete:
        model.__pydantic_complete__ = False
    try:
        yield
    finally:
        for model in complete:
            model.__pydantic_complete__ = True


def _strict_validator(model: type[Resource]) -> SchemaValidator:
    validator = _STRICT.get(model)
    if validator is None:
        schema = copy.deepcopy(model.__pydantic_core_schema__)
        _forbid_extras(schema, top=True)
        with _validators_not_reused():
            validator = SchemaValidator(schema)
        _STRICT[model] = validator
    return validator


def validate_known(model: type[R], data: Mapping[str, Any]) -> R | None:
    """``data`` as a ``model`` when it is valid and has no field the model does not know (the
    top-level ``status``, ``apiVersion``, ``kind`` and anything in ``metadata`` aside); ``None``
    otherwise, for the caller to report through ``model_validate`` and :func:`unknown_fields`."""
    try:
        obj = _strict_validator(model).validate_python(data)
    except ValidationError:
        return None
    extra = obj.__pydantic_extra__
    if extra and not extra.keys() <= model.IGNORED_TOP_LEVEL:
        return None
    assert isinstance(obj, model)
    return obj
