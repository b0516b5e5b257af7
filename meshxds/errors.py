"""The meshxds exception tree.

::

    MeshxdsError
     ├── ManifestError        a manifest we cannot accept: file, kind/namespace/name, field path
     │    └── ManifestErrors  several of them at once (a whole directory is reported in one go)
     ├── SourceError          a source cannot read its input (I/O, API server)
     │    └── WatchExpired    the API server answered 410 Gone: relist
     └── IRValidationError    the IR a translator produced breaks an invariant (all problems at once)

A valid manifest that asks for something wrong (a backendRef to a missing Service, say) is not
an exception: it becomes status conditions and warnings. NACKs from Envoy are data, not errors.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "IRValidationError",
    "ManifestError",
    "ManifestErrors",
    "MeshxdsError",
    "SourceError",
    "WatchExpired",
]


class MeshxdsError(Exception):
    """Root of every error meshxds raises on purpose."""


class ManifestError(MeshxdsError):
    """A manifest that cannot be accepted, located precisely enough to fix it."""

    def __init__(self, message: str, *, path: str = "", ref: str = "", field_path: str = "") -> None:
        self.message = message
        self.path = path
        """The file (or API URL) the object came from."""
        self.ref = ref
        """``Kind/namespace/name`` of the object, when it could be read."""
        self.field_path = field_path
        """Dotted path of the offending field, e.g. ``spec.ports[0].port``."""
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(p for p in (self.path, self.ref, self.field_path) if p)
        return f"{where}: {self.message}" if where else self.message

    def as_dict(self) -> dict[str, str]:
        return {"file": self.path, "object": self.ref, "field": self.field_path, "message": self.message}


class ManifestErrors(MeshxdsError):
    """Every manifest error found in one read of a source."""

    def __init__(self, errors: Sequence[ManifestError]) -> None:
        self.errors = tuple(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class SourceError(MeshxdsError):
    """A source could not read its input."""


class WatchExpired(SourceError):
    """The resourceVersion we watched from is gone (HTTP 410): the source must relist."""


class IRValidationError(MeshxdsError):
    """The IR breaks invariants; ``problems`` lists all of them."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))
