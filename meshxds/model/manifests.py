"""Turn raw manifest documents into typed, validated objects.

Parsing is validation: a document that does not fit its model raises :class:`ManifestError`
naming the file, ``Kind/namespace/name`` and the field path. A whole read is reported at once
(:class:`ManifestErrors`), so a user fixes every problem in one pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from meshxds.errors import ManifestError, ManifestErrors
from meshxds.model import core, gatewayapi, istio, kgateway
from meshxds.model.base import Resource, unknown_fields, unserved_fields, validate_known

__all__ = [
    "KINDS",
    "ResourceSet",
    "SourcedDocument",
    "parse_document",
    "parse_documents",
]

R = TypeVar("R", bound=Resource)

_MODELS: tuple[type[Resource], ...] = (
    core.Service,
    core.EndpointSlice,
    core.Secret,
    core.ConfigMap,
    core.Namespace,
    core.Pod,
    gatewayapi.GatewayClass,
    gatewayapi.Gateway,
    gatewayapi.HTTPRoute,
    gatewayapi.GRPCRoute,
    gatewayapi.TLSRoute,
    gatewayapi.TCPRoute,
    gatewayapi.ReferenceGrant,
    gatewayapi.BackendTLSPolicy,
    kgateway.Backend,
    kgateway.HTTPListenerPolicy,
    kgateway.BackendConfigPolicy,
    kgateway.ListenerPolicy,
    kgateway.TrafficPolicy,
    istio.Gateway,
    istio.VirtualService,
    istio.DestinationRule,
    istio.ServiceEntry,
    istio.WorkloadEntry,
)

KINDS: dict[tuple[str, str], type[Resource]] = {(m.API_GROUP, m.KIND): m for m in _MODELS}
"""``(api group, kind)`` → model, for every kind meshxds reads."""


@dataclass(frozen=True, slots=True)
class SourcedDocument:
    """One YAML/JSON document and where it came from."""

    path: str
    index: int
    """Position of the document in its file (0-based), for error messages."""
    body: Any


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _ref_of(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") if isinstance(body.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    kind = body.get("kind", "?")
    name = meta.get("name", "?")
    namespace = meta.get("namespace")
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def parse_document(doc: SourcedDocument) -> tuple[Resource | None, list[str]]:
    """Parse one document. Returns the object (``None`` for kinds we ignore) and warnings."""
    where = f"{doc.path}#{doc.index}" if doc.index else doc.path
    body = doc.body
    if not isinstance(body, Mapping):
        raise ManifestError(f"a manifest must be a mapping, got {type(body).__name__}", path=where)
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if not isinstance(api_version, str) or not api_version:
        raise ManifestError("apiVersion is required", path=where, ref=_ref_of(body), field_path="apiVersion")
    if not isinstance(kind, str) or not kind:
        raise ManifestError("kind is required", path=where, ref=_ref_of(body), field_path="kind")
    group, _, version = api_version.rpartition("/")
    model = KINDS.get((group, kind))
    if model is None:
        return None, [
            f"{where}: {_ref_of(body)}: kind {kind} of {api_version} is not read by meshxds; ignored"
        ]
    if version not in model.API_VERSIONS:
        raise ManifestError(
            f"version {version!r} of {kind} is not supported (use one of {', '.join(model.API_VERSIONS)})",
            path=where,
            ref=_ref_of(body),
            field_path="apiVersion",
        )
    # The body is the source's (maybe cached): copied only when the namespace must be filled in.
    data = body
    meta = body.get("metadata")
    if model.NAMESPACED and isinstance(meta, Mapping) and not meta.get("namespace"):
        data = {**body, "metadata": {**meta, "namespace": "default"}}
    body = data
    known = validate_known(model, data)
    if known is not None:
        return known, _unserved_warnings(where, known)
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        problems = "; ".join(f"{_field_path(e['loc'])}: {e['msg']}" for e in exc.errors()[1:4])
        raise ManifestError(
            first["msg"] + (f" (also: {problems})" if problems else ""),
            path=where,
            ref=_ref_of(body),
            field_path=_field_path(first["loc"]),
        ) from exc
    warnings = [
        f"{where}: {obj.ref}: field {f} is not supported by meshxds; ignored" for f in unknown_fields(obj)
    ]
    return obj, warnings + _unserved_warnings(where, obj)


def _unserved_warnings(where: str, obj: Resource) -> list[str]:
    """A warning per field the model knows and ``obj`` sets but meshxds does not serve."""
    return [f"{where}: {obj.ref}: {marker.describe(path)}" for path, marker in unserved_fields(obj)]


_TOKENS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ResourceSet:
    """A complete, consistent set of objects: what one translation reads."""

    objects: Mapping[type[Resource], Mapping[tuple[str, str], Resource]] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict)
    """``Kind/namespace/name`` → the file (or URL) it came from."""
    warnings: tuple[str, ...] = ()
    errors: tuple[ManifestError, ...] = ()
    """Objects left out because they are invalid (or defined twice): reported, not served."""
    # Each kind sorted once: every translator (and each proxy's Istio build) asks for them.
    _sorted: dict[type[Resource], tuple[Resource, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    token: int = field(default_factory=lambda: next(_TOKENS), init=False, repr=False, compare=False)
    """Unique per set (a copy made with ``dataclasses.replace`` gets its own)."""
    changed_since: tuple[int, Mapping[type[Resource], frozenset[tuple[str, str]]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    """``(token of an earlier set, keys per kind that may differ from it)``, when the source
    knows: a one-file edit is then diffed by its keys, not by every object. ``None``: unknown."""

    def since(self, token: int, changed: Mapping[type[Resource], frozenset[tuple[str, str]]]) -> ResourceSet:
        """Record that only ``changed`` may differ from the set whose token is ``token``; the
        source that made this set calls it before handing the set out."""
        object.__setattr__(self, "changed_since", (token, changed))
        return self

    def all(self, model: type[R]) -> list[R]:
        """Every object of a kind, sorted by (namespace, name) for deterministic output."""
        found = self._sorted.get(model)
        if found is None:
            items = self.objects.get(model, {})
            found = self._sorted[model] = tuple(items[k] for k in sorted(items))
        return list(found)  # type: ignore[arg-type]

    def get(self, model: type[R], namespace: str, name: str) -> R | None:
        return self.objects.get(model, {}).get((namespace, name))  # type: ignore[return-value]

    def __iter__(self) -> Iterator[Resource]:
        for model in self.objects:
            yield from self.all(model)

    def __len__(self) -> int:
        return sum(len(v) for v in self.objects.values())

    @classmethod
    def of(cls, objects: Iterable[Resource], *, warnings: Iterable[str] = ()) -> ResourceSet:
        by_kind: dict[type[Resource], dict[tuple[str, str], Resource]] = {}
        for obj in objects:
            by_kind.setdefault(type(obj), {})[obj.key] = obj
        return cls(objects=by_kind, warnings=tuple(warnings))


def parse_documents(docs: Iterable[SourcedDocument]) -> ResourceSet:
    """Parse every document; raise :class:`ManifestErrors` listing all problems, if any."""
    errors: list[ManifestError] = []
    warnings: list[str] = []
    by_kind: dict[type[Resource], dict[tuple[str, str], Resource]] = {}
    origins: dict[str, str] = {}
    for doc in docs:
        if doc.body is None:  # an empty document between '---' separators
            continue
        try:
            obj, found = parse_document(doc)
        except ManifestError as exc:
            errors.append(exc)
            continue
        warnings.extend(found)
        if obj is None:
            continue
        where = f"{doc.path}#{doc.index}" if doc.index else doc.path
        if obj.ref in origins:
            errors.append(
                ManifestError(f"defined twice (first in {origins[obj.ref]})", path=where, ref=obj.ref)
            )
            continue
        origins[obj.ref] = where
        by_kind.setdefault(type(obj), {})[obj.key] = obj
    if errors:
        raise ManifestErrors(errors)
    return ResourceSet(objects=by_kind, origins=origins, warnings=tuple(warnings))
