"""free_port and wait_until."""

from __future__ import annotations

import socket
import time

import pytest

from meshxds.testing.ports import WaitTimeout, free_port, wait_until


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = iter([None, 0, "", "done"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.001) == "done"


def test_wait_until_treats_exceptions_as_not_yet_and_quotes_the_last_one() -> None:
    def boom() -> bool:
        raise ConnectionRefusedError("still starting")

    with pytest.raises(WaitTimeout, match=r"timed out after 0.1s waiting for server.*still starting"):
        wait_until(boom, timeout=0.1, interval=0.01, what="server")


def test_wait_until_gives_up_early_when_abort_says_so() -> None:
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"process died waiting for x; last value: False\nLOG TAIL"):
        wait_until(
            lambda: False, timeout=30, what="x", abort=lambda: "process died", details=lambda: "LOG TAIL"
        )
    assert time.monotonic() - start < 5


def test_wait_until_is_bounded_in_time() -> None:
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match="last value: False"):
        wait_until(lambda: False, timeout=0.2, interval=0.05)
    assert time.monotonic() - start < 2
