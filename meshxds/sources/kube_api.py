"""The Kubernetes API as meshxds uses it, through the official ``kubernetes`` client.

Raw JSON in and out (``_preload_content=False``): objects go through meshxds' own validation
(:mod:`meshxds.model`), not the client's models, and unknown fields survive to become warnings.
Third-party errors are mapped here, at the boundary, to the meshxds tree::

    SourceError
     ├── WatchExpired     410 Gone: the resourceVersion is compacted; relist
     ├── ApiUnavailable   cannot connect, connection cut, timeout, 429, 5xx: retry with backoff
     └── ApiError         any other answer (``status``); its subclasses:
          ├── NotFound    404: the object, or the whole kind (its CRD is not installed)
          ├── Conflict    409: stale resourceVersion (or AlreadyExists on create)
          └── Forbidden   401/403: RBAC does not allow it

The client is synchronous; callers run it in threads (design.md: "the sync kubernetes client too").
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from meshxds.errors import SourceError, WatchExpired

__all__ = [
    "ApiError",
    "ApiResource",
    "ApiUnavailable",
    "Conflict",
    "Forbidden",
    "KubeApi",
    "NotFound",
    "connect",
]

log = logging.getLogger(__name__)

# (connect, read) seconds for ordinary requests; watches set their own read timeout.
_REQUEST_TIMEOUT = (5.0, 30.0)
_LINE_LIMIT = 64 * 1024 * 1024  # one watch event larger than this is not an object we can use


class ApiUnavailable(SourceError):
    """The API server cannot be reached or answered with a transient error; retry later."""


class ApiError(SourceError):
    """The API server answered with an error."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{status}: {message}")


class NotFound(ApiError):
    """404: the object is gone, or the kind is not served (its CRD is not installed)."""


class Conflict(ApiError):
    """409: the object changed since the resourceVersion we sent (or already exists)."""


class Forbidden(ApiError):
    """401/403: the credentials or RBAC do not allow this request."""


@dataclass(frozen=True, slots=True)
class ApiResource:
    """One kind as the API server serves it: the version we use and its plural name."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str = "", name: str = "", subresource: str = "") -> str:
        """The API path of the collection, or of one object (and its subresource)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace and self.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if subresource:
            base += f"/{subresource}"
        return base


def _message(exc: ApiException) -> str:
    body = exc.body
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    if isinstance(parsed, Mapping) and parsed.get("message"):
        return str(parsed["message"])
    return str(exc.reason or "").strip() or "error"


def _mapped(exc: BaseException, what: str) -> SourceError:
    """A third-party error as ours (the caller raises it ``from`` the original)."""
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = f"{what}: {_message(exc)}"
        if status == 410:
            return WatchExpired(message)
        if status == 404:
            return NotFound(status, message)
        if status == 409:
            return Conflict(status, message)
        if status in (401, 403):
            return Forbidden(status, message)
        if status == 0 or status == 429 or status >= 500:
            return ApiUnavailable(f"{what}: {status or 'no answer'}: {_message(exc)}")
        return ApiError(status, message)
    return ApiUnavailable(f"{what}: {exc.__class__.__name__}: {exc}")


# What the client raises when the server is unreachable or the connection breaks mid-answer.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, OSError)


def connect(
    *, kubeconfig: str | None = None, context: str | None = None, in_cluster: bool = False
) -> KubeApi:
    """A client from a kubeconfig file (and context) or from the pod's service account."""
    configuration = k8s.Configuration()
    try:
        if in_cluster:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as exc:
        where = "in-cluster service account" if in_cluster else f"kubeconfig {kubeconfig or '(default)'}"
        raise SourceError(f"cannot load {where}: {exc}") from exc
    # One long-lived watch connection per kind, plus requests: keep them all pooled.
    configuration.connection_pool_maxsize = 64
    return KubeApi(k8s.ApiClient(configuration))


class KubeApi:
    """List, watch, get and patch any kind by :class:`ApiResource`; discovery; Leases."""

    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.client = api_client
        self._core = k8s.CoreV1Api(api_client)
        self._custom = k8s.CustomObjectsApi(api_client)
        self._apis = k8s.ApisApi(api_client)
        self._leases = k8s.CoordinationV1Api(api_client)

    @property
    def host(self) -> str:
        return str(self.client.configuration.host)

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]

    # -- plumbing ----------------------------------------------------------------------------------
    def _json(self, what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", _REQUEST_TIMEOUT)
        try:
            response = call(*args, _preload_content=False, **kwargs)
            data = response.data
        except ApiException as exc:
            raise _mapped(exc, what) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _mapped(exc, what) from exc
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ApiUnavailable(f"{what}: the answer is not JSON: {data[:200]!r}") from exc

    def _lister(self, res: ApiResource) -> Callable[..., Any]:
        """The client's list function for a kind (also its watch, with ``watch=True``)."""
        if res.group:
            # The custom-objects API is a plain /apis/<group>/<version>/<plural> template: it serves
            # any non-core group, built-in (discovery.k8s.io) or CRD, cluster-wide.
            custom = self._custom

            def list_any(**kwargs: Any) -> Any:
                return custom.list_cluster_custom_object(res.group, res.version, res.plural, **kwargs)

            return list_any
        # Core kinds have typed functions only: list_<snake kind>[_for_all_namespaces].
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in res.kind).lstrip("_")
        name = f"list_{snake}_for_all_namespaces" if res.namespaced else f"list_{snake}"
        fn = getattr(self._core, name, None)
        if fn is None:
            raise ApiError(0, f"the kubernetes client has no {name} for core kind {res.kind}")
        return fn  # type: ignore[no-any-return]

    # -- discovery ---------------------------------------------------------------------------------
    def group_versions(self) -> dict[str, list[str]]:
        """``/apis``: every served API group → its versions (core "" → ``["v1"]``)."""
        payload = self._json("GET /apis", self._apis.get_api_versions)
        out: dict[str, list[str]] = {"": ["v1"]}
        for group in payload.get("groups") or ():
            out[str(group.get("name", ""))] = [str(v.get("version")) for v in group.get("versions") or ()]
        return out

    def resources(self, group: str, version: str) -> list[ApiResource]:
        """``/api/v1`` or ``/apis/<group>/<version>``: the kinds served there (no subresources)."""
        if group:
            payload = self._json(
                f"GET /apis/{group}/{version}", self._custom.get_api_resources, group, version
            )
        else:
            payload = self._json(f"GET /api/{version}", self._core.get_api_resources)
        return [
            ApiResource(group, version, str(r["kind"]), str(r["name"]), bool(r.get("namespaced")))
            for r in payload.get("resources") or ()
            if "/" not in str(r.get("name", ""))
        ]

    # -- reading -----------------------------------------------------------------------------------
    def list(self, res: ApiResource) -> tuple[list[dict[str, Any]], str]:
        """Every object of a kind in all namespaces, and the list's resourceVersion."""
        payload = self._json(f"list {res.path()}", self._lister(res))
        items = [dict(i) for i in payload.get("items") or ()]
        for item in items:
            # List items omit apiVersion/kind; parsing needs them.
            item.setdefault("apiVersion", res.api_version)
            item.setdefault("kind", res.kind)
        return items, str((payload.get("metadata") or {}).get("resourceVersion") or "")

    def watch(
        self,
        res: ApiResource,
        *,
        resource_version: str,
        timeout_s: int,
        read_timeout_s: float,
        on_open: Callable[[Any], None] = lambda response: None,
    ) -> Generator[dict[str, Any], None, None]:
        """Watch events (``{"type", "object"}``) from ``resource_version``, with bookmarks.

        The server ends the stream after ``timeout_s``; ``read_timeout_s`` bounds a silent
        connection (bookmarks keep a healthy one talking). ``on_open`` gets the raw response, so
        another thread can cut it to stop the watch at once.
        """
        what = f"watch {res.path()}"
        try:
            response = self._lister(res)(
                watch=True,
                resource_version=resource_version or None,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_s,
                _preload_content=False,
                _request_timeout=(_REQUEST_TIMEOUT[0], read_timeout_s),
            )
        except ApiException as exc:
            raise _mapped(exc, what) from exc
        except _TRANSPORT_ERRORS as exc:
            raise _mapped(exc, what) from exc
        on_open(response)
        try:
            for line in _lines(response):
                try:
                    event = json.loads(line)
                except ValueError as exc:
                    raise ApiUnavailable(f"{what}: not a JSON event: {line[:200]!r}") from exc
                if isinstance(event, dict):
                    yield event
        except _TRANSPORT_ERRORS as exc:
            raise _mapped(exc, what) from exc
        finally:
            response.close()
            response.release_conn()

    def get(self, res: ApiResource, namespace: str, name: str, *, subresource: str = "") -> dict[str, Any]:
        what = f"GET {res.path(namespace, name, subresource)}"
        if not res.group:
            raise ApiError(0, f"{what}: core kinds are only listed and watched")
        if subresource == "status":
            if res.namespaced:
                return dict(
                    self._json(
                        what,
                        self._custom.get_namespaced_custom_object_status,
                        res.group,
                        res.version,
                        namespace,
                        res.plural,
                        name,
                    )
                )
            return dict(
                self._json(
                    what,
                    self._custom.get_cluster_custom_object_status,
                    res.group,
                    res.version,
                    res.plural,
                    name,
                )
            )
        if res.namespaced:
            return dict(
                self._json(
                    what,
                    self._custom.get_namespaced_custom_object,
                    res.group,
                    res.version,
                    namespace,
                    res.plural,
                    name,
                )
            )
        return dict(
            self._json(what, self._custom.get_cluster_custom_object, res.group, res.version, res.plural, name)
        )

    # -- writing -----------------------------------------------------------------------------------
    def patch_status(
        self, res: ApiResource, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of the ``status`` subresource. A ``metadata.resourceVersion`` in the
        patch makes it conditional: a newer object answers 409 (:class:`Conflict`)."""
        what = f"PATCH {res.path(namespace, name, 'status')}"
        if not res.group:
            raise ApiError(0, f"{what}: status of core kinds is not written by meshxds")
        kwargs = {"_content_type": "application/merge-patch+json"}
        if res.namespaced:
            return dict(
                self._json(
                    what,
                    self._custom.patch_namespaced_custom_object_status,
                    res.group,
                    res.version,
                    namespace,
                    res.plural,
                    name,
                    dict(patch),
                    **kwargs,
                )
            )
        return dict(
            self._json(
                what,
                self._custom.patch_cluster_custom_object_status,
                res.group,
                res.version,
                res.plural,
                name,
                dict(patch),
                **kwargs,
            )
        )

    # -- leases ------------------------------------------------------------------------------------
    def read_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The Lease as JSON, or ``None`` when there is none."""
        try:
            return dict(
                self._json(
                    f"GET lease {namespace}/{name}", self._leases.read_namespaced_lease, name, namespace
                )
            )
        except NotFound:
            return None

    def create_lease(self, namespace: str, name: str, spec: k8s.V1LeaseSpec) -> dict[str, Any]:
        body = k8s.V1Lease(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace), spec=spec)
        return dict(
            self._json(
                f"create lease {namespace}/{name}", self._leases.create_namespaced_lease, namespace, body
            )
        )

    def replace_lease(
        self, namespace: str, name: str, spec: k8s.V1LeaseSpec, *, resource_version: str
    ) -> dict[str, Any]:
        """Update the Lease if it is still at ``resource_version`` (else :class:`Conflict`)."""
        body = k8s.V1Lease(
            metadata=k8s.V1ObjectMeta(name=name, namespace=namespace, resource_version=resource_version),
            spec=spec,
        )
        return dict(
            self._json(
                f"update lease {namespace}/{name}",
                self._leases.replace_namespaced_lease,
                name,
                namespace,
                body,
            )
        )


def _lines(response: Any) -> Iterator[str]:
    """Newline-delimited lines of a streamed body, as they arrive."""
    buffer = bytearray()
    for chunk in response.stream(amt=None, decode_content=False):
        buffer.extend(chunk)
        if len(buffer) > _LINE_LIMIT:
            raise ApiUnavailable(f"a watch event longer than {_LINE_LIMIT} bytes")
        while (end := buffer.find(b"\n")) != -1:
            line = bytes(buffer[:end]).strip()
            del buffer[: end + 1]
            if line:
                yield line.decode("utf-8", errors="replace")
    if buffer.strip():
        yield bytes(buffer).decode("utf-8", errors="replace")
