"""What the Kubernetes source holds: the newest version of every watched object, parsed once.

Watch threads write (``replace`` after a list, ``apply`` per event); the serving loop reads a
consistent :class:`KubeResourceSet` with ``snapshot()``. Pure bookkeeping, no I/O: the one lock
is held only to swap dict entries.

Each object is validated when it arrives, with the same :func:`parse_documents` as files, its
API path standing in for the file name. Unlike the directory source, an invalid object does not
reject the whole read: it is reported (``KubeResourceSet.errors``) and left out. A directory is
one author's edit that should land whole or not at all; the API server holds many authors'
objects, each already schema-checked by the server, so one user's bad object must not freeze
everyone else's config.

A change that no translator can see — a new resourceVersion only, managedFields, or the status
of a kind whose model does not read status (our own status writes) — updates the stored body
(the status writer needs the newest one) without waking a translation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from meshxds.errors import ManifestError, ManifestErrors
from meshxds.model import gatewayapi
from meshxds.model.base import Resource
from meshxds.model.core import ConfigMap, Secret
from meshxds.model.manifests import ResourceSet, SourcedDocument, parse_documents

__all__ = ["KubeResourceSet", "ObjectStore", "StoredObject", "trim"]

JSON = dict[str, Any]

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_ISTIO_GROUP = "networking.istio.io"


@dataclass(frozen=True, slots=True)
class KubeResourceSet(ResourceSet):
    """A ``ResourceSet`` from the API (its ``errors``: the objects left out as invalid)."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    body: JSON
    """The object as the API returned it, trimmed (see :func:`trim`)."""
    origin: str
    """Its API path, e.g. ``/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/web``."""
    resource: Resource | None
    error: ManifestError | None
    warnings: tuple[str, ...]
    fingerprint: Any
    """What translation reads of it: equal fingerprints translate the same."""


def trim(model: type[Resource], body: Mapping[str, Any]) -> JSON:
    """Drop what meshxds never reads, before storing: ``managedFields`` and the last-applied
    annotation (a full copy of the object, Secret data included) everywhere; Pods keep only
    labels, node and IPs; Namespaces only metadata (their labels select routes)."""
    out = dict(body)
    meta = dict(out.get("metadata") or {})
    meta.pop("managedFields", None)
    annotations = meta.get("annotations")
    if isinstance(annotations, Mapping) and _LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != _LAST_APPLIED}
    out["metadata"] = meta
    if model.KIND == "Pod" and not model.API_GROUP:
        spec, status = out.get("spec") or {}, out.get("status") or {}
        out["spec"] = {k: spec[k] for k in ("nodeName",) if k in spec}
        out["status"] = {k: status[k] for k in ("podIP", "podIPs") if k in status}
    elif model.KIND == "Namespace" and not model.API_GROUP:
        out = {k: out[k] for k in ("apiVersion", "kind", "metadata") if k in out}
    return out


def _fingerprint(model: type[Resource], body: Mapping[str, Any]) -> Any:
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "resourceVersion"}
    reads_status = "status" in model.model_fields
    rest = {k: v for k, v in body.items() if k != "metadata" and (reads_status or k != "status")}
    return (meta, rest)


def _parse(model: type[Resource], body: JSON, origin: str) -> StoredObject:
    try:
        parsed = parse_documents([SourcedDocument(path=origin, index=0, body=body)])
    except ManifestErrors as exc:
        return StoredObject(body, origin, None, exc.errors[0], (), _fingerprint(model, body))
    resource = next(iter(parsed), None)
    if resource is not None and not isinstance(resource, model):
        error = ManifestError(f"expected a {model.KIND}, got {type(resource).__name__}", path=origin)
        return StoredObject(body, origin, None, error, (), _fingerprint(model, body))
    return StoredObject(body, origin, resource, None, parsed.warnings, _fingerprint(model, body))


def _key(model: type[Resource], body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace") or "") if model.NAMESPACED else "", str(meta.get("name") or ""))


@dataclass(slots=True)
class _Kind:
    objects: dict[tuple[str, str], StoredObject] = field(default_factory=dict)
    synced: bool = False
    absent: bool = False


class ObjectStore:
    """Thread-safe newest-object store for a fixed set of kinds, one writing thread per kind.

    ``on_change`` is called (outside the lock, from the writing thread) after every change a
    translation can see; ``on_status`` after a change to an object's status alone.
    """

    def __init__(
        self,
        models: Iterable[type[Resource]],
        *,
        on_change: Callable[[], None] = lambda: None,
        on_status: Callable[[], None] = lambda: None,
    ) -> None:
        self._kinds: dict[type[Resource], _Kind] = {m: _Kind() for m in models}
        self._lock = threading.Lock()
        self.on_change = on_change
        self.on_status = on_status
        self.changes = 0
        """How many visible changes so far (tests and metrics)."""

    @property
    def models(self) -> tuple[type[Resource], ...]:
        return tuple(self._kinds)

    # -- writers (watch threads) -------------------------------------------------------------------
    def replace(self, model: type[Resource], items: Iterable[tuple[JSON, str]]) -> bool:
        """A fresh list of a kind: ``(body, origin)`` pairs. Objects not in it are gone."""
        fresh: dict[tuple[str, str], StoredObject] = {}
        with self._lock:
            old = self._kinds[model].objects
        for body, origin in items:
            trimmed = trim(model, body)
            key = _key(model, trimmed)
            prev = old.get(key)
            fp = _fingerprint(model, trimmed)
            if prev is not None and prev.fingerprint == fp:
                fresh[key] = StoredObject(
                    trimmed, origin, prev.resource, prev.error, prev.warnings, prev.fingerprint
                )
            else:
                fresh[key] = _parse(model, trimmed, origin)
        with self._lock:
            kind = self._kinds[model]
            changed = (
                not kind.synced
                or kind.absent
                or kind.objects.keys() != fresh.keys()
                or any(kind.objects[k].fingerprint != v.fingerprint for k, v in fresh.items())
            )
            kind.objects, kind.synced, kind.absent = fresh, True, False
        return self._changed(changed, status=True)

    def apply(self, model: type[Resource], event_type: str, body: JSON, origin: str) -> bool:
        """One watch event: ADDED / MODIFIED store the object, DELETED removes it."""
        trimmed = trim(model, body)
        key = _key(model, trimmed)
        status_only = False
        with self._lock:
            prev = self._kinds[model].objects.get(key)
        if event_type == "DELETED":
            with self._lock:
                removed = self._kinds[model].objects.pop(key, None)
            return self._changed(removed is not None)
        fp = _fingerprint(model, trimmed)
        if prev is not None and prev.fingerprint == fp:
            stored = StoredObject(trimmed, origin, prev.resource, prev.error, prev.warnings, fp)
            status_only = prev.body.get("status") != trimmed.get("status")
            changed = False
        else:
            stored = _parse(model, trimmed, origin)
            changed = True
        with self._lock:
            self._kinds[model].objects[key] = stored
        return self._changed(changed, status=status_only)

    def mark_absent(self, model: type[Resource]) -> bool:
        """The kind is not served (no CRD): it counts as synced, with no objects."""
        with self._lock:
            kind = self._kinds[model]
            changed = bool(kind.objects) or not kind.synced
            kind.objects, kind.synced, kind.absent = {}, True, True
        return self._changed(changed)

    def _changed(self, changed: bool, *, status: bool = False) -> bool:
        if changed:
            with self._lock:
                self.changes += 1
            self.on_change()
        if changed or status:
            self.on_status()
        return changed

    # -- readers -----------------------------------------------------------------------------------
    @property
    def synced(self) -> bool:
        """Every kind was listed (or found absent) at least once: a snapshot is complete."""
        with self._lock:
            return all(k.synced for k in self._kinds.values())

    def pending(self) -> list[str]:
        """Kinds not listed yet, as ``group/Kind``."""
        with self._lock:
            return [f"{m.API_GROUP or 'core'}/{m.KIND}" for m, k in self._kinds.items() if not k.synced]

    def absent(self) -> list[type[Resource]]:
        with self._lock:
            return [m for m, k in self._kinds.items() if k.absent]

    def body(self, model: type[Resource], namespace: str, name: str) -> JSON | None:
        """The newest stored body of one object (the status writer reads status and resourceVersion)."""
        with self._lock:
            stored = self._kinds[model].objects.get((namespace if model.NAMESPACED else "", name))
        return stored.body if stored is not None else None

    def bodies(self, model: type[Resource]) -> list[JSON]:
        with self._lock:
            return [o.body for _, o in sorted(self._kinds[model].objects.items())]

    def snapshot(self) -> KubeResourceSet:
        """Every valid object, its origin and warnings; invalid ones as ``errors``. Secrets only
        when a gateway references them."""
        with self._lock:
            kinds = {m: dict(k.objects) for m, k in self._kinds.items()}
        by_kind: dict[type[Resource], dict[tuple[str, str], Resource]] = {}
        origins: dict[str, str] = {}
        warnings: list[str] = []
        errors: list[ManifestError] = []
        wanted, wanted_maps = _referenced_secrets_and_config_maps(kinds)
        for model, objects in kinds.items():
            for key, stored in sorted(objects.items()):
                if stored.error is not None:
                    errors.append(stored.error)
                    continue
                resource = stored.resource
                if resource is None:
                    continue
                # A cluster holds many Secrets and ConfigMaps; only those a gateway names matter.
                if model is Secret and key not in wanted:
                    continue
                if model is ConfigMap and key not in wanted_maps:
                    continue
                by_kind.setdefault(model, {})[key] = resource
                origins[resource.ref] = stored.origin
                warnings.extend(stored.warnings)
        return KubeResourceSet(
            objects=by_kind, origins=origins, warnings=tuple(warnings), errors=tuple(errors)
        )


def _referenced_secrets_and_config_maps(
    kinds: Mapping[type[Resource], Mapping[tuple[str, str], StoredObject]],
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """``(namespace, name)`` of the Secrets, and of the ConfigMaps, a gateway may read: Gateway
    API listeners' ``certificateRefs`` and ``spec.tls.frontend`` CA refs, and Istio
    ``credentialName``s (resolved by the proxy's namespace, which the source cannot know, so a
    name matches in every namespace)."""
    wanted: set[tuple[str, str]] = set()
    maps: set[tuple[str, str]] = set()
    names: set[str] = set()
    for model, objects in kinds.items():
        for stored in objects.values():
            resource = stored.resource
            if isinstance(resource, gatewayapi.Gateway):
                for listener in resource.spec.listeners:
                    for ref in listener.tls.certificate_refs if listener.tls else ():
                        if (ref.group, ref.kind) == ("", "Secret"):
                            wanted.add((ref.namespace or resource.namespace, ref.name))
                for ca in _frontend_ca_refs(resource):
                    key = (ca.namespace or resource.namespace, ca.name)
                    if ca.group == "" and ca.kind == "ConfigMap":
                        maps.add(key)
                    elif ca.group == "" and ca.kind == "Secret":
                        wanted.add(key)
            elif model.API_GROUP == _ISTIO_GROUP:
                names.update(_credential_names(stored.body.get("spec")))
    if names:
        for stored in (o for m, objs in kinds.items() if m is Secret for o in objs.values()):
            if stored.resource is not None and stored.resource.name in names:
                wanted.add(stored.resource.key)
    return wanted, maps


def _frontend_ca_refs(gateway: gatewayapi.Gateway) -> Iterable[gatewayapi.FrontendCACertificateRef]:
    frontend = gateway.spec.tls.frontend if gateway.spec.tls is not None else None
    if frontend is None:
        return
    for settings in (frontend.default, *(p.tls for p in frontend.per_port)):
        if settings.validation is not None:
            yield from settings.validation.ca_certificate_refs


def _credential_names(value: Any) -> Iterable[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "credentialName" and isinstance(item, str) and item:
                yield item
            else:
                yield from _credential_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _credential_names(item)
