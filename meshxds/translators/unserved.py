"""The status condition of an object that sets fields meshxds parses but does not serve (those
the model marks :class:`~meshxds.model.base.Unserved`): the API's own place to say so, beside the
warning every source reports when it reads the object. Gateway API kinds only: theirs is the
status meshxds writes.

``meshxds.io/UnservedFields``, ``True`` (reason ``NotServed``), with one sentence per field; an
object that sets none has no such condition. A type of its own, not a message on ``Accepted``:
the object is accepted and served, without those fields.
"""

from __future__ import annotations

from meshxds.conditions import Condition, condition
from meshxds.model.base import Resource, unserved_fields

__all__ = ["UNSERVED_FIELDS", "unserved_condition"]

UNSERVED_FIELDS = "meshxds.io/UnservedFields"


def unserved_condition(obj: Resource) -> Condition | None:
    """``UnservedFields=True`` naming every such field ``obj`` sets; ``None`` when it sets none."""
    found = unserved_fields(obj)
    if not found:
        return None
    message = "; ".join(marker.describe(path) for path, marker in found)
    return condition(UNSERVED_FIELDS, True, "NotServed", message, generation=obj.metadata.generation)
