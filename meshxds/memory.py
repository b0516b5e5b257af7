"""The process's garbage-collector policy around big builds.

A translation allocates hundreds of thousands of long-lived, acyclic objects (models, IR,
protobuf bytes). CPython's cyclic collector would traverse all of them again and again while
they are built, and every later full collection would walk the whole heap (about a second at
10,000 Services) in the middle of an endpoint fast-path update. Reference counting frees these
objects anyway, so: no cyclic collection while building, and what survives is frozen out of
every later collection (``gc.freeze``), as long-running Python servers do.

Freed memory is not always given back: glibc keeps the pages of freed heap chunks mapped, so
after the snapshots of departed proxies are released the process would stay at its peak size.
``trim`` hands them back (``malloc_trim``), as Go's scavenger does for Go control planes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import sys
import threading
from collections.abc import Callable, Iterator

__all__ = ["building", "trim"]


_lock = threading.Lock()
_builds = 0
_reenable = False
_switch_interval = sys.getswitchinterval()

BUILD_SWITCH_INTERVAL_S = 0.001
"""The GIL switch interval while a build runs in a worker thread: the event loop waits at most
about this long for the GIL each time it wakes (a new stream, an ACK, /healthz), not CPython's
5 ms, which a request pays several times over while a translation holds the GIL."""


@contextlib.contextmanager
def building() -> Iterator[None]:
    """Pause the cyclic collector for a build; freeze what it left alive; and while it runs, let
    the event loop take the GIL sooner (``BUILD_SWITCH_INTERVAL_S``).

    Builds overlap (a read, a translation and a snapshot build in three worker threads): the
    collector comes back when the last one ends, not when the first does, or the others would
    run with it on and a full pass would hold the GIL (and the event loop) for a quarter second.
    """
    global _builds, _reenable, _switch_interval
    with _lock:
        if _builds == 0:
            _reenable = gc.isenabled()
            gc.disable()
            _switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_interval, BUILD_SWITCH_INTERVAL_S))
        _builds += 1
    try:
        yield
    finally:
        with _lock:
            _builds -= 1
            gc.freeze()
            if _builds == 0:
                sys.setswitchinterval(_switch_interval)
                if _reenable:
                    gc.enable()


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to trim
    return function


def trim() -> bool:
    """Return the C heap's free pages to the OS; ``False`` where the C library cannot.

    Takes a few to ~70 ms on a heap of hundreds of MB, without the GIL: call it from a worker
    thread, after something big was freed."""
    malloc_trim = _malloc_trim()
    if malloc_trim is None:
        return False
    malloc_trim(0)
    return True
