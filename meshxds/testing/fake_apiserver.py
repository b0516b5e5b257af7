"""An in-process Kubernetes API server for tests: the real HTTP protocol, an in-memory store.

There is no Kubernetes API server package for our machines, so tests drive meshxds (and the
official ``kubernetes`` client it uses) against this one, on 127.0.0.1, through a generated
kubeconfig. It speaks what those clients need:

- discovery: ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``, ``/version``;
- collections (``.../<plural>``, ``.../namespaces/<ns>/<plural>``): list with
  ``metadata.resourceVersion``; ``?watch=1`` streams newline-delimited JSON events (ADDED,
  MODIFIED, DELETED, BOOKMARK with ``allowWatchBookmarks``, ERROR) and ends after
  ``timeoutSeconds``; a watch from a compacted ``resourceVersion`` gets ``410 Gone`` (an ERROR
  event, as the real server sends, or an HTTP 410 with ``expired_as_http=True``);
- objects: GET, POST, PUT, merge PATCH, DELETE, and ``/status`` (GET, PUT, merge PATCH) — a
  write naming a stale ``metadata.resourceVersion`` gets 409 Conflict; a write to the main
  resource bumps ``metadata.generation`` when anything but metadata and status changed;
- 404 for kinds whose CRD is not installed; ``install_crd`` adds one (with its
  ``CustomResourceDefinition`` object, so CRD watches see it), as a cluster admin would;
- ``coordination.k8s.io/v1`` Leases are ordinary objects (create, get, update with conflicts).

Test controls: ``drop_watches()`` (cut every watch connection mid-stream), ``end_watches()``
(end them cleanly, as a watch timeout does), ``expire()`` (compact history: open and future
watches from older versions get 410), ``stop()`` / ``start()`` (the same port), ``requests``
(every request with its bearer token). ``python -m meshxds.testing.fake_apiserver`` runs one.

One resourceVersion counter for everything, as etcd has. Objects are stored once per kind; any
served version of the group returns them with that ``apiVersion`` (no schema conversion).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import yaml

__all__ = [
    "FakeApiServer",
    "RequestRecord",
    "ResourceType",
    "plural_of",
]

JSON = dict[str, Any]
_MAX_BODY = 8 * 1024 * 1024
_MAX_WATCH_S = 3600.0


def plural_of(kind: str) -> str:
    """The conventional plural resource name of a kind (``GatewayClass`` → ``gatewayclasses``)."""
    lower = kind.lower()
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    if lower.endswith("y") and lower[-2:-1] not in ("a", "e", "i", "o", "u"):
        return lower[:-1] + "ies"
    return lower + "s"


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One served resource: ``group`` ("" for core), the versions served, kind, plural, scope."""

    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    namespaced: bool = True
    status_subresource: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    def api_version(self, version: str | None = None) -> str:
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the server answered."""

    method: str
    path: str
    query: Mapping[str, str]
    token: str
    status: int
    time: float
    body: Any = None


_BUILTIN = (
    ResourceType("", ("v1",), "Namespace", "namespaces", namespaced=False),
    ResourceType("", ("v1",), "Service", "services"),
    ResourceType("", ("v1",), "Secret", "secrets", status_subresource=False),
    ResourceType("", ("v1",), "Pod", "pods"),
    ResourceType("", ("v1",), "ConfigMap", "configmaps", status_subresource=False),
    ResourceType("discovery.k8s.io", ("v1",), "EndpointSlice", "endpointslices", status_subresource=False),
    ResourceType("coordination.k8s.io", ("v1",), "Lease", "leases", status_subresource=False),
    ResourceType(
        "apiextensions.k8s.io",
        ("v1",),
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
    ),
)
_CRD = _BUILTIN[-1]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _status(code: int, reason: str, message: str) -> JSON:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _HttpError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


@dataclass(slots=True)
class _Event:
    rv: int
    type: str
    namespace: str
    obj: JSON


@dataclass(slots=True)
class _Kind:
    """The objects of one resource type, and its event history since the last compaction."""

    rtype: ResourceType
    objects: dict[tuple[str, str], JSON] = field(default_factory=dict)
    history: list[_Event] = field(default_factory=list)
    oldest: int = 0
    """Watches from a resourceVersion below this get 410 Gone (history before it is compacted)."""


class FakeApiServer:
    """``with FakeApiServer() as api: api.write_kubeconfig(path); api.apply_yaml(...)``."""

    def __init__(
        self,
        *,
        port: int = 0,
        bookmark_interval_s: float = 1.0,
        expired_as_http: bool = False,
        version: tuple[str, str] = ("1", "33"),
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.bookmark_interval_s = bookmark_interval_s
        self.expired_as_http = expired_as_http
        self.version = version
        self.requests: list[RequestRecord] = []
        self._cond = threading.Condition()
        self._rv = 100
        self._kinds: dict[tuple[str, str], _Kind] = {}
        self._types_by_kind: dict[tuple[str, str], ResourceType] = {}
        self._drop_epoch = 0
        self._end_epoch = 0
        self._watches = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        for rtype in _BUILTIN:
            self._add_type(rtype)

    # -- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> Self:
        """Listen (again, on the same port after a ``stop``) and serve in a background thread."""
        if self._httpd is not None:
            return self
        server = _Server((self.host, self.port), _handler_class(self))
        self._httpd = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-apiserver", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (the store is kept for ``start``)."""
        server, self._httpd = self._httpd, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._conn_lock:
            conns = list(self._connections)
        for conn in conns:
            _abort(conn)
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FakeApiServer {self.url} {'running' if self.running else 'stopped'} rv={self._rv}>"

    def write_kubeconfig(
        self,
        path: str | Path,
        *,
        token: str = "test-token",
        context: str = "fake",
        namespace: str = "default",
    ) -> Path:
        """A kubeconfig pointing at this server (plain HTTP, bearer ``token``)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": f"user-{token}", "user": {"token": token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": "fake", "user": f"user-{token}", "namespace": namespace},
                }
            ],
            "current-context": context,
        }
        out = Path(path)
        out.write_text(yaml.safe_dump(config, sort_keys=False))
        return out

    # -- resource types ----------------------------------------------------------------------------
    def _add_type(self, rtype: ResourceType) -> None:
        self._kinds[rtype.key] = _Kind(rtype)
        self._types_by_kind[(rtype.group, rtype.kind)] = rtype

    def install_crd(
        self,
        group: str,
        kind: str,
        *,
        versions: Iterable[str] = ("v1",),
        namespaced: bool = True,
        plural: str | None = None,
    ) -> ResourceType:
        """Serve a custom kind from now on, and record its CRD (an ADDED event for CRD watches)."""
        rtype = ResourceType(group, tuple(versions), kind, plural or plural_of(kind), namespaced)
        with self._cond:
            if rtype.key not in self._kinds:
                self._add_type(rtype)
            crd = {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{rtype.plural}.{group}"},
                "spec": {
                    "group": group,
                    "names": {"kind": kind, "plural": rtype.plural, "singular": kind.lower()},
                    "scope": "Namespaced" if namespaced else "Cluster",
                    "versions": [
                        {"name": v, "served": True, "storage": i == 0, "subresources": {"status": {}}}
                        for i, v in enumerate(rtype.versions)
                    ],
                },
                "status": {"conditions": [{"type": "Established", "status": "True"}]},
            }
            self._upsert(_CRD, crd, replace_status=True)
        return rtype

    def install_kinds(self, models: Iterable[Any]) -> None:
        """``install_crd`` for each model (``API_GROUP``, ``KIND``, ``API_VERSIONS``, ``NAMESPACED``)
        not built in; built-in kinds (core, discovery.k8s.io) are always served."""
        for model in models:
            if (model.API_GROUP, model.KIND) in self._types_by_kind:
                continue
            self.install_crd(
                model.API_GROUP, model.KIND, versions=model.API_VERSIONS, namespaced=model.NAMESPACED
            )

    def uninstall_crd(self, group: str, kind: str) -> None:
        """Stop serving a custom kind; its objects go with it (as deleting a CRD does)."""
        with self._cond:
            rtype = self._types_by_kind.pop((group, kind))
            self._kinds.pop(rtype.key)
            name = f"{rtype.plural}.{group}"
            crd = self._kinds[_CRD.key].objects.get(("", name))
            if crd is not None:
                self._delete_locked(_CRD, "", name)
            self._cond.notify_all()

    def served(self, group: str, kind: str) -> ResourceType | None:
        with self._cond:
            return self._types_by_kind.get((group, kind))

    # -- objects -----------------------------------------------------------------------------------
    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def _type_of(self, body: Mapping[str, Any]) -> ResourceType:
        group = str(body.get("apiVersion", "")).rpartition("/")[0]
        rtype = self._types_by_kind.get((group, str(body.get("kind", ""))))
        if rtype is None:
            raise KeyError(f"{body.get('apiVersion')} {body.get('kind')} is not served (install its CRD)")
        return rtype

    def apply(self, body: Mapping[str, Any]) -> JSON:
        """Create or replace an object as an admin would (status included); returns it as stored."""
        with self._cond:
            return copy.deepcopy(
                self._upsert(self._type_of(body), copy.deepcopy(dict(body)), replace_status=True)
            )

    def apply_yaml(self, text: str) -> list[JSON]:
        return [self.apply(doc) for doc in yaml.safe_load_all(text) if doc]

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        with self._cond:
            rtype = self._types_by_kind[(api_version.rpartition("/")[0], kind)]
            self._delete_locked(rtype, namespace if rtype.namespaced else "", name)

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> JSON | None:
        with self._cond:
            rtype = self._types_by_kind.get((api_version.rpartition("/")[0], kind))
            if rtype is None:
                return None
            obj = self._kinds[rtype.key].objects.get((namespace if rtype.namespaced else "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, group: str, kind: str) -> list[JSON]:
        with self._cond:
            rtype = self._types_by_kind[(group, kind)]
            return [copy.deepcopy(o) for _, o in sorted(self._kinds[rtype.key].objects.items())]

    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, kind: _Kind, type_: str, obj: JSON) -> None:
        ns = str(obj.get("metadata", {}).get("namespace", ""))
        kind.history.append(_Event(int(obj["metadata"]["resourceVersion"]), type_, ns, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _upsert(
        self,
        rtype: ResourceType,
        body: JSON,
        *,
        replace_status: bool,
        expect_rv: str | None = None,
        create_only: bool = False,
    ) -> JSON:
        """Create or update (under the lock). ``replace_status=False`` keeps the stored status, as
        writes to the main resource of a kind with a status subresource do."""
        kind = self._kinds[rtype.key]
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise _HttpError(422, "Invalid", "metadata.name: Required value")
        namespace = (meta.get("namespace") or "default") if rtype.namespaced else ""
        if rtype.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        key = (namespace, name)
        old = kind.objects.get(key)
        body["apiVersion"] = body.get("apiVersion") or rtype.api_version()
        body["kind"] = rtype.kind
        if old is None:
            if expect_rv:
                raise _HttpError(404, "NotFound", f'{rtype.plural} "{name}" not found')
            meta.update(
                uid=str(uuid.uuid4()),
                creationTimestamp=_now(),
                generation=1,
                resourceVersion=str(self._bump()),
            )
            kind.objects[key] = body
            self._record(kind, "ADDED", body)
            return body
        if create_only:
            raise _HttpError(409, "AlreadyExists", f'{rtype.plural} "{name}" already exists')
        if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
            raise _HttpError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        if not replace_status and rtype.status_subresource:
            body.pop("status", None)
            if "status" in old:
                body["status"] = copy.deepcopy(old["status"])
        old_meta = old["metadata"]
        generation = int(old_meta.get("generation", 1))
        if _spec_of(body) != _spec_of(old):
            generation += 1
        meta.update(
            uid=old_meta.get("uid"),
            creationTimestamp=old_meta.get("creationTimestamp"),
            generation=generation,
        )
        if _without_rv(body) == _without_rv(old):
            return old  # no-op writes do not bump resourceVersion (as the real server)
        meta["resourceVersion"] = str(self._bump())
        kind.objects[key] = body
        self._record(kind, "MODIFIED", body)
        return body

    def _write_status(
        self, rtype: ResourceType, namespace: str, name: str, new: JSON, expect_rv: str | None
    ) -> JSON:
        kind = self._kinds[rtype.key]
        old = kind.objects.get((namespace, name))
        if old is None:
            raise _HttpError(404, "NotFound", f'{rtype.plural} "{name}" not found')
        if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
            raise _HttpError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rtype.plural} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        body = copy.deepcopy(old)
        if "status" in new:
            body["status"] = new["status"]
        else:
            body.pop("status", None)
        if body == old:
            return old
        body["metadata"]["resourceVersion"] = str(self._bump())
        kind.objects[(namespace, name)] = body
        self._record(kind, "MODIFIED", body)
        return body

    def _delete_locked(self, rtype: ResourceType, namespace: str, name: str) -> JSON:
        kind = self._kinds[rtype.key]
        obj = kind.objects.pop((namespace, name), None)
        if obj is None:
            raise _HttpError(404, "NotFound", f'{rtype.plural} "{name}" not found')
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self._bump())
        self._record(kind, "DELETED", obj)
        return obj

    # -- test controls -----------------------------------------------------------------------------
    def drop_watches(self) -> None:
        """Cut every open watch connection without ending its stream (a broken connection)."""
        with self._cond:
            self._drop_epoch += 1
            self._cond.notify_all()

    def end_watches(self) -> None:
        """End every open watch cleanly, as the server does when ``timeoutSeconds`` runs out."""
        with self._cond:
            self._end_epoch += 1
            self._cond.notify_all()

    def expire(self, group: str | None = None, kind: str | None = None) -> None:
        """Compact the history (of one kind, or all): watches from any older resourceVersion, open
        or future, get 410 Gone and must relist."""
        with self._cond:
            oldest = self._bump()  # every resourceVersion handed out so far is now too old
            for k in self._kinds.values():
                if (group is None or k.rtype.group == group) and (kind is None or k.rtype.kind == kind):
                    k.oldest = oldest
                    k.history.clear()
            self._cond.notify_all()

    @property
    def open_watches(self) -> int:
        with self._cond:
            return self._watches

    def requests_for(self, *, method: str | None = None, path: str | None = None) -> list[RequestRecord]:
        """Recorded requests, by method and/or a regular expression the path must match."""
        with self._cond:
            records = list(self.requests)
        return [
            r
            for r in records
            if (method is None or r.method == method) and (path is None or re.search(path, r.path))
        ]

    def status_writes(self) -> list[RequestRecord]:
        """Successful PUT/PATCH requests on ``/status`` subresources."""
        return [
            r
            for r in self.requests_for(path=r"/status$")
            if r.method in ("PUT", "PATCH") and 200 <= r.status < 300
        ]

    # -- request handling (called from handler threads) --------------------------------------------
    def _log(self, record: RequestRecord) -> None:
        with self._cond:
            self.requests.append(record)

    def _route(self, path: str) -> tuple[str, Any]:
        """Parse a request path into what it names."""
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            return "version", None
        if parts == ["api"]:
            return "core-versions", None
        if parts == ["apis"]:
            return "groups", None
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _HttpError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            return "resources", (group, version)
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural = rest[0]
        name = rest[1] if len(rest) >= 2 else ""
        sub = rest[2] if len(rest) >= 3 else ""
        if len(rest) > 3 or (sub and sub != "status"):
            raise _HttpError(404, "NotFound", "the server could not find the requested resource")
        with self._cond:
            kind = self._kinds.get((group, plural))
            if kind is None or version not in kind.rtype.versions:
                raise _HttpError(404, "NotFound", "the server could not find the requested resource")
            rtype = kind.rtype
        if namespace and not rtype.namespaced:
            raise _HttpError(404, "NotFound", "the server could not find the requested resource")
        return "object" if name else "collection", (rtype, version, namespace, name, sub)

    def _discovery(self, what: str, arg: Any) -> JSON:
        with self._cond:
            types = [k.rtype for k in self._kinds.values()]
        if what == "version":
            major, minor = self.version
            return {
                "major": major,
                "minor": minor,
                "gitVersion": f"v{major}.{minor}.0-fake",
                "platform": "fake",
            }
        if what == "core-versions":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if what == "groups":
            groups: dict[str, list[str]] = {}
            for t in types:
                if t.group:
                    seen = groups.setdefault(t.group, [])
                    seen.extend(v for v in t.versions if v not in seen)
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": g,
                        "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                        "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                    }
                    for g, vs in sorted(groups.items())
                ],
            }
        group, version = arg
        served = [t for t in types if t.group == group and version in t.versions]
        if not served:
            raise _HttpError(404, "NotFound", "the server could not find the requested resource")
        resources: list[JSON] = []
        for t in sorted(served, key=lambda t: t.plural):
            verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
            resources.append(
                {
                    "name": t.plural,
                    "singularName": t.kind.lower(),
                    "namespaced": t.namespaced,
                    "kind": t.kind,
                    "verbs": verbs,
                }
            )
            if t.status_subresource:
                resources.append(
                    {
                        "name": f"{t.plural}/status",
                        "singularName": "",
                        "namespaced": t.namespaced,
                        "kind": t.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    def _list(self, rtype: ResourceType, version: str, namespace: str) -> JSON:
        with self._cond:
            kind = self._kinds.get(rtype.key)
            if kind is None:
                raise _HttpError(404, "NotFound", "the server could not find the requested resource")
            items = [
                _as_version(o, rtype, version)
                for (ns, _), o in sorted(kind.objects.items())
                if not namespace or ns == namespace
            ]
            rv = self._rv
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version(version),
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    def _watch_events(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str,
        resource_version: str,
        *,
        bookmarks: bool,
        timeout_s: float,
        alive: Callable[[], bool],
    ) -> Iterator[JSON | None]:
        """Events for one watch; ``None`` means "cut the connection now"."""
        deadline = time.monotonic() + min(timeout_s, _MAX_WATCH_S)
        with self._cond:
            kind = self._kinds.get(rtype.key)
            if kind is None:
                raise _HttpError(404, "NotFound", "the server could not find the requested resource")
            drop_epoch, end_epoch = self._drop_epoch, self._end_epoch
            pending: list[JSON] = []
            if resource_version in ("", "0"):
                # No version: the current state as synthetic ADDED events, then changes.
                since = self._rv
                pending = [
                    {"type": "ADDED", "object": _as_version(o, rtype, version)}
                    for (ns, _), o in sorted(kind.objects.items())
                    if not namespace or ns == namespace
                ]
            else:
                try:
                    since = int(resource_version)
                except ValueError:
                    raise _HttpError(
                        400, "BadRequest", f"invalid resourceVersion {resource_version!r}"
                    ) from None
                if since < kind.oldest:
                    raise _HttpError(410, "Expired", f"too old resource version: {since} ({kind.oldest})")
        yield from pending
        next_bookmark = time.monotonic() + self.bookmark_interval_s
        while alive():
            with self._cond:
                current = self._kinds.get(rtype.key)
                if current is not kind or self._drop_epoch != drop_epoch:
                    yield None  # the kind was uninstalled, or the test cuts connections
                    return
                if self._end_epoch != end_epoch:
                    return
                if since < kind.oldest:
                    yield _status(410, "Expired", f"too old resource version: {since} ({kind.oldest})")
                    return
                fresh = [
                    e for e in kind.history if e.rv > since and (not namespace or e.namespace == namespace)
                ]
                now = time.monotonic()
                if not fresh:
                    if now >= deadline:
                        return
                    wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                    if wait > 0:
                        self._cond.wait(min(wait, 0.5))
                        continue
                rv_now = self._rv
            for e in fresh:
                since = e.rv
                yield {"type": e.type, "object": _as_version(e.obj, rtype, version)}
            if bookmarks and time.monotonic() >= next_bookmark:
                next_bookmark = time.monotonic() + self.bookmark_interval_s
                since = max(since, rv_now)
                yield {
                    "type": "BOOKMARK",
                    "object": {
                        "kind": rtype.kind,
                        "apiVersion": rtype.api_version(version),
                        "metadata": {"resourceVersion": str(since)},
                    },
                }

    def _handle(self, handler: _Handler, method: str) -> None:
        url = urlsplit(handler.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        auth = handler.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        body: Any = None
        status = 500
        logged = False

        def reply(code: int, payload: Any) -> None:
            nonlocal status, logged
            status = code
            # Logged before the answer goes out: a client that reads its answer, then the log
            # (as tests do), finds the request there.
            self._log(RequestRecord(method, url.path, query, token, code, time.time(), body))
            logged = True
            handler.send_json(code, payload)

        try:
            length = int(handler.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                raise _HttpError(413, "RequestEntityTooLarge", "request body too large")
            raw = handler.rfile.read(length) if length else b""
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise _HttpError(400, "BadRequest", "request body is not JSON") from None
            what, arg = self._route(url.path)
            if what in ("version", "core-versions", "groups", "resources"):
                if method != "GET":
                    raise _HttpError(405, "MethodNotAllowed", "discovery is read-only")
                reply(200, self._discovery(what, arg))
            elif what == "collection":
                rtype, version, namespace, _, _ = arg
                if method == "GET" and query.get("watch") in ("1", "true", "True"):
                    record = RequestRecord(method, url.path, query, token, 200, time.time())
                    self._stream_watch(handler, rtype, version, namespace, query, record)
                    return
                if method == "GET":
                    reply(200, self._list(rtype, version, namespace))
                elif method == "POST":
                    if not isinstance(body, dict):
                        raise _HttpError(400, "BadRequest", "expected an object")
                    body.setdefault("metadata", {})
                    if rtype.namespaced:
                        body["metadata"]["namespace"] = namespace or body["metadata"].get("namespace")
                    body["apiVersion"] = rtype.api_version(version)
                    with self._cond:
                        created = self._upsert(rtype, body, replace_status=True, create_only=True)
                        out = _as_version(created, rtype, version)
                    reply(201, out)
                else:
                    raise _HttpError(405, "MethodNotAllowed", f"{method} is not allowed on a collection")
            else:
                reply(200, self._object(method, arg, body, handler.headers.get("Content-Type", "")))
        except _HttpError as exc:
            if not logged:
                reply(exc.code, _status(exc.code, exc.reason, exc.message))
        except (BrokenPipeError, ConnectionError):
            status = 499
        if not logged:
            self._log(RequestRecord(method, url.path, query, token, status, time.time(), body))

    def _object(self, method: str, arg: Any, body: Any, content_type: str) -> JSON:
        rtype, version, namespace, name, sub = arg
        ns = namespace if rtype.namespaced else ""
        with self._cond:
            kind = self._kinds[rtype.key]
            current = kind.objects.get((ns, name))
            if method == "GET":
                if current is None:
                    raise _HttpError(404, "NotFound", f'{rtype.plural} "{name}" not found')
                return _as_version(current, rtype, version)
            if method == "DELETE":
                return _as_version(self._delete_locked(rtype, ns, name), rtype, version)
            if not isinstance(body, dict):
                raise _HttpError(400, "BadRequest", "expected an object")
            if method == "PATCH":
                if "merge-patch" not in content_type and "strategic-merge" not in content_type:
                    raise _HttpError(415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}")
                if current is None:
                    raise _HttpError(404, "NotFound", f'{rtype.plural} "{name}" not found')
                expect = str(body.get("metadata", {}).get("resourceVersion") or "") or None
                merged = merge_patch(current, body)
            elif method == "PUT":
                expect = str(body.get("metadata", {}).get("resourceVersion") or "") or None
                merged = copy.deepcopy(body)
            else:
                raise _HttpError(405, "MethodNotAllowed", f"{method} is not allowed")
            merged.setdefault("metadata", {})["name"] = name
            if rtype.namespaced:
                merged["metadata"]["namespace"] = ns
            if sub == "status":
                out = self._write_status(rtype, ns, name, merged, expect)
            else:
                if method == "PUT" and current is None and expect:
                    raise _HttpError(404, "NotFound", f'{rtype.plural} "{name}" not found')
                merged["apiVersion"] = rtype.api_version(version)
                out = self._upsert(
                    rtype, merged, replace_status=not rtype.status_subresource, expect_rv=expect
                )
            return _as_version(out, rtype, version)

    def _stream_watch(
        self,
        handler: _Handler,
        rtype: ResourceType,
        version: str,
        namespace: str,
        query: Mapping[str, str],
        record: RequestRecord,
    ) -> None:
        timeout_s = float(query.get("timeoutSeconds") or _MAX_WATCH_S)
        bookmarks = query.get("allowWatchBookmarks") in ("1", "true", "True")
        events = self._watch_events(
            rtype,
            version,
            namespace,
            query.get("resourceVersion", ""),
            bookmarks=bookmarks,
            timeout_s=timeout_s,
            alive=lambda: self._httpd is not None,
        )
        try:
            # The first step runs the checks that answer with an HTTP error (404, 410) instead of 200.
            first: list[JSON | None] = list(itertools.islice(events, 1))
        except _HttpError as exc:
            if exc.code == 410 and not self.expired_as_http:
                first = [_status(410, exc.reason, exc.message)]  # as the real server: 200 + an ERROR event
                events = iter(())
            else:
                raise
        self._log(record)  # now, not at the end: a watch may stream for minutes
        with self._cond:
            self._watches += 1
        try:
            handler.start_chunked(200)
            for event in itertools.chain(first, events):
                if event is None:
                    _abort(handler.connection)
                    handler.close_connection = True
                    return
                if event.get("kind") == "Status":
                    event = {"type": "ERROR", "object": event}
                handler.write_chunk(json.dumps(event).encode() + b"\n")
                if event["type"] == "ERROR":
                    break
            handler.end_chunked()
        except (BrokenPipeError, ConnectionError, OSError):
            handler.close_connection = True
        finally:
            with self._cond:
                self._watches -= 1


def _spec_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion")}


def _without_rv(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "apiVersion"}
    out["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "resourceVersion"}
    return out


def _as_version(obj: Mapping[str, Any], rtype: ResourceType, version: str) -> JSON:
    out = copy.deepcopy(dict(obj))
    out["apiVersion"] = rtype.api_version(version)
    return out


def _abort(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        conn.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up (a cut watch, a stopped server) are routine here, not tracebacks.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: FakeApiServer
    server_version = "fake-apiserver/1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out as separate writes; without this, Nagle + delayed ACK adds 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.api._conn_lock:
            self.api._connections.add(self.connection)

    def finish(self) -> None:
        with self.api._conn_lock:
            self.api._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is ``FakeApiServer.requests``

    def send_json(self, code: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_chunked(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self.api._handle(self, "GET")

    def do_POST(self) -> None:
        self.api._handle(self, "POST")

    def do_PUT(self) -> None:
        self.api._handle(self, "PUT")

    def do_PATCH(self) -> None:
        self.api._handle(self, "PATCH")

    def do_DELETE(self) -> None:
        self.api._handle(self, "DELETE")


def _handler_class(api: FakeApiServer) -> type[_Handler]:
    return type("Handler", (_Handler,), {"api": api})


def main(argv: list[str] | None = None) -> int:
    """Run a fake API server with every meshxds kind installed, for manual experiments."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubeconfig", default="fake-kubeconfig.yaml")
    parser.add_argument("--manifests", nargs="*", default=[], help="YAML files to apply at start")
    args = parser.parse_args(argv)
    from meshxds.model.manifests import KINDS

    with FakeApiServer(port=args.port) as api:
        api.install_kinds(KINDS.values())
        for path in args.manifests:
            api.apply_yaml(Path(path).read_text())
        print(f"fake API server on {api.url}; kubeconfig {api.write_kubeconfig(args.kubeconfig)}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
