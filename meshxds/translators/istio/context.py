"""One proxy identity's Istio build: what it reads (the proxy, the service registry, the cluster
builder, the Secrets) and what it produces (listeners, analysis messages). Gateways and sidecars
both build into one ``BuildContext``; ``RouteContext`` (``routes.py``) adds where on it rules
are being applied."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meshxds import ir
from meshxds.conditions import AnalysisMessage, Level, MessageType, ObjectKey
from meshxds.model import core
from meshxds.model.base import Resource
from meshxds.translators.istio.clusters import ClusterBuilder
from meshxds.translators.istio.registry import ServiceRegistry

__all__ = ["At", "BuildContext"]


@dataclass(frozen=True, slots=True)
class At:
    """Where a message points: an object, and a field path in it."""

    object: ObjectKey
    field: str = ""

    @classmethod
    def of(cls, obj: Resource, field: str = "") -> At:
        return cls(ObjectKey(kind=obj.KIND, namespace=obj.namespace, name=obj.name, ref=obj.ref), field)

    @classmethod
    def source(cls, ref: ir.ObjectRef) -> At:
        """The object an IR node came from (a registered service's Service or ServiceEntry)."""
        return cls(ObjectKey(kind=ref.kind, namespace=ref.namespace, name=ref.name, ref=str(ref)))

    def sub(self, suffix: str) -> At:
        """A field inside this one: ``at.sub(".tls")``, ``at.sub("[0]")``."""
        return At(self.object, self.field + suffix)


@dataclass(slots=True, kw_only=True)
class BuildContext:
    """What one proxy identity's build needs and what it produces."""

    proxy_namespace: str
    proxy_labels: Mapping[str, str]
    """What ``sourceLabels`` in VirtualService matches are compared with."""
    registry: ServiceRegistry
    clusters: ClusterBuilder
    """Builds (once) the clusters routes name; holds the Secrets they and the servers use."""
    secrets: Mapping[tuple[str, str], core.Secret]
    """Every Secret by (namespace, name): where a server's ``credentialName`` is looked up."""
    listener_address: str
    """Where listeners bind when a server names no ``bind``."""
    listeners: list[ir.Listener] = field(default_factory=list)
    messages: list[AnalysisMessage] = field(default_factory=list)

    def error(self, at: At | None, type_: MessageType, message: str) -> None:
        """Report what makes meshxds leave something out."""
        self._report(at, type_, Level.ERROR, message)

    def warn(self, at: At | None, type_: MessageType, message: str) -> None:
        """Report what meshxds serves differently from what was asked, or in part."""
        self._report(at, type_, Level.WARNING, message)

    def _report(self, at: At | None, type_: MessageType, level: Level, message: str) -> None:
        self.messages.append(
            AnalysisMessage(
                type=type_,
                level=level,
                message=message,
                object=at.object if at is not None else None,
                field=at.field if at is not None else "",
            )
        )
