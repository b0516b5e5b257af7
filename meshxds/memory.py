"""The process's garbage-collector policy around big builds.

A translation allocates hundreds of thousands of long-lived, acyclic objects (models, IR,
protobuf bytes). CPython's cyclic collector would traverse all of them again and again while
they are built, and every later full collection would walk the whole heap (about a second at
10,000 Services) in the middle of an endpoint fast-path update. Reference counting frees these
objects anyway, so: no cyclic collection while building, and what survives is frozen out of
every later collection (``gc.freeze``), as long-running Python servers do.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["building"]


@contextlib.contextmanager
def building() -> Iterator[None]:
    """Pause the cyclic collector for a build; freeze what it left alive."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
