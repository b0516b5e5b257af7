"""The collector policy around builds (``meshxds.memory``)."""

from __future__ import annotations

import gc
import sys
import threading

from meshxds.memory import BUILD_SWITCH_INTERVAL_S, building


def test_overlapping_builds_keep_the_collector_paused_until_the_last_one_ends() -> None:
    assert gc.isenabled()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with building():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with building():
            second_in.set()
            first_out.wait(5)
            seen.append(gc.isenabled())  # the first build is over; this one still runs
        seen.append(gc.isenabled())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen == [False, True]
    gc.unfreeze()


def test_a_build_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with building():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
        gc.unfreeze()


def test_a_build_shortens_the_gil_switch_interval_until_the_last_one_ends() -> None:
    default = sys.getswitchinterval()
    with building():
        assert sys.getswitchinterval() == BUILD_SWITCH_INTERVAL_S
        with building():  # overlapping builds: restored when the last ends, not the first
            pass
        assert sys.getswitchinterval() == BUILD_SWITCH_INTERVAL_S
    assert sys.getswitchinterval() == default
    gc.unfreeze()
