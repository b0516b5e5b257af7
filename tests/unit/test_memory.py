"""The collector policy around builds (``meshxds.memory``)."""

from __future__ import annotations

import gc
import threading

from meshxds.memory import building


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
