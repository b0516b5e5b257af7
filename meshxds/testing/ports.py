"""Loopback ports and bounded polling: the two primitives every harness piece needs."""

from __future__ import annotations

import math
import random
import socket
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeout", "free_port", "wait_until"]

T = TypeVar("T")


_SPARE_PORTS = range(21000, 32000)
"""Below Linux's ephemeral range (32768-60999 by default): the kernel never gives these to an
outgoing connection's local end, which could otherwise take a port between ``free_port()``
and the bind (a CI run saw Envoy's listener NACKed with "Address already in use")."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now on ``host``, outside the ephemeral range.

    Another process may still bind it before the caller does, so prefer letting a server bind
    port 0 itself where it can.
    """
    for _ in range(200):
        port = random.choice(_SPARE_PORTS)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # a crowded range: any port
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


class WaitTimeout(TimeoutError):
    """A bounded wait ran out; the message says what was awaited and what was last seen."""


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
    abort: Callable[[], str | None] | None = None,
    details: Callable[[], str] | None = None,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    An exception from ``predicate`` counts as "not yet" (a server still starting refuses
    connections) and is quoted if the wait fails. ``abort`` returns a reason to give up early
    (say, the process died). ``details`` adds context, such as a log tail, to the failure.
    Bounded both in time and in attempts.
    """
    deadline = time.monotonic() + timeout
    last_value: object = None
    last_error: BaseException | None = None
    reason: str | None = None
    for _ in range(max(1, math.ceil(timeout / max(interval, 0.001))) + 1):
        try:
            value = predicate()
        except Exception as exc:
            last_error = exc
        else:
            if value:
                return value
            last_value, last_error = value, None
        reason = abort() if abort is not None else None
        if reason is not None or time.monotonic() >= deadline:
            break
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    message = f"{reason}" if reason is not None else f"timed out after {timeout:g}s"
    message += f" waiting for {what}"
    message += f"; last error: {last_error!r}" if last_error is not None else f"; last value: {last_value!r}"
    if details is not None:
        message += "\n" + details()
    raise WaitTimeout(message)
