"""What translators report about the objects they read, as data: Kubernetes status conditions
(Gateway API style), and analysis messages (Istio style: ``istioctl analyze``, an Istio object's
``status.validationMessages``). Computed by translators, consumed by sources, the CLI and the
admin endpoint (which import this module, never a translator).

Translators never read the clock: ``lastTransitionTime`` is set by whoever writes status.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "AnalysisMessage",
    "Condition",
    "Level",
    "MessageType",
    "ObjectKey",
    "ObjectStatus",
    "condition",
    "merge_conditions",
]

_MAX_MESSAGE = 32 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""
    observed_generation: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "observedGeneration": self.observed_generation,
        }


def _sentence(message: str) -> str:
    message = message.strip()[:_MAX_MESSAGE]
    if not message:
        return message
    message = message[0].upper() + message[1:]
    return message if message.endswith(".") else message + "."


def condition(type_: str, status: bool, reason: str, message: str = "", *, generation: int = 0) -> Condition:
    """A condition with the message normalised (capitalised, ends with a period, capped)."""
    return _condition(type_, status, reason, message, generation)


@functools.lru_cache(maxsize=4096)
def _condition(type_: str, status: bool, reason: str, message: str, generation: int) -> Condition:
    # Memoized: a Condition is immutable, and 10,000 routes attached to one Gateway report the
    # same few ("Attached to the Gateway.", "All references resolved.") at the same generations.
    return Condition(
        type=type_, status=status, reason=reason, message=_sentence(message), observed_generation=generation
    )


def merge_conditions(conditions: Iterable[Condition]) -> tuple[Condition, ...]:
    """One condition per type; a False beats a True (the problem is what the user must see)."""
    by_type: dict[str, Condition] = {}
    for cond in conditions:
        prev = by_type.get(cond.type)
        if prev is None or (prev.status and not cond.status):
            by_type[cond.type] = cond
    return tuple(by_type.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectStatus:
    """The status subresource meshxds computed for one object."""

    kind: str
    namespace: str
    name: str
    status: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name, "status": self.status}


class Level(StrEnum):
    """How bad a message is (Istio's ``AnalysisMessageBase.Level``): an error means meshxds does
    not serve what the object asks for; a warning, that it serves it differently or in part."""

    ERROR = "ERROR"
    WARNING = "WARNING"
    INFO = "INFO"


@dataclass(frozen=True, slots=True)
class MessageType:
    """A kind of problem, as Istio's ``AnalysisMessageBase.Type``: ``IST0101`` /
    ``ReferencedResourceNotFound`` where Istio has one, an ``MXD`` code where it has none."""

    code: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectKey:
    """The object a message is about."""

    kind: str
    namespace: str
    name: str
    ref: str
    """How meshxds prints it (``Kind/namespace/name``; an Istio Gateway
    ``Gateway.networking.istio.io/namespace/name``): the key of ``ResourceSet.origins``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AnalysisMessage:
    """One problem found in valid manifests: which object and field, how bad, what kind, why."""

    type: MessageType
    level: Level
    message: str
    object: ObjectKey | None = None
    """``None`` when the problem belongs to no one object (two services claiming one port)."""
    field: str = ""
    """Dotted path in the object, e.g. ``spec.servers[2].tls.credentialName``."""

    def __str__(self) -> str:
        """``ref: field: message``, as meshxds has always printed its warnings."""
        ref = self.object.ref if self.object is not None else ""
        return ": ".join(p for p in (ref, self.field, self.message) if p)

    def labelled(self) -> str:
        """``str(self)`` and the type's code, as the CLI prints it: ``... not found [IST0101]``."""
        return f"{self} [{self.type.code}]"

    def as_dict(self, *, file: str = "") -> dict[str, str]:
        """The entry ``validate --output json`` and ``/debug/config`` list (a manifest error's
        keys, plus the type); ``file``: where the object came from, when known."""
        return {
            "file": file,
            "object": self.object.ref if self.object is not None else "",
            "field": self.field,
            "message": self.message,
            "code": self.type.code,
            "reason": self.type.name,
        }
