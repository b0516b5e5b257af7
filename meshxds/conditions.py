"""Kubernetes status conditions as data (Gateway API style): computed by translators, written by
sources (which import this module, never a translator).

Translators never read the clock: ``lastTransitionTime`` is set by whoever writes status.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Condition", "ObjectStatus", "condition", "merge_conditions"]

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
