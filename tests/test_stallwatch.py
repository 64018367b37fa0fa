"""The stall watch names where a held-up loop is stuck, while it is stuck, once."""
from __future__ import annotations

import logging
import threading
import time

from ftorch import stallwatch


def _records(caplog, *names: str) -> list[str]:
    """Reports of these loops (other tests' channel threads may be watched too)."""
    return [r.getMessage() for r in caplog.records if r.name == "ftorch.stallwatch"
            and r.getMessage().split()[0] in names]


def test_a_stuck_loop_is_reported_once_with_where_it_waits(caplog):
    caplog.set_level(logging.WARNING, logger="ftorch.stallwatch")
    release = threading.Event()

    def stuck_in_a_blocking_call() -> None:
        stallwatch.tick("probe", 0.1)
        release.wait(30)
        stallwatch.rest()

    t = threading.Thread(target=stuck_in_a_blocking_call)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not _records(caplog, "probe") and time.monotonic() < deadline:
            time.sleep(0.01)
        deadline = time.monotonic() + 0.3   # a second report would come within a few looks
        while time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        release.set()
        t.join()
    said = _records(caplog, "probe")
    assert len(said) == 1, said
    assert said[0].startswith("probe thread stuck for ")
    assert "stuck_in_a_blocking_call" in said[0]


def test_a_loop_that_rests_is_not_reported(caplog):
    caplog.set_level(logging.WARNING, logger="ftorch.stallwatch")
    done = threading.Event()

    def rests_then_waits() -> None:
        stallwatch.tick("idle", 0.05)
        stallwatch.rest()
        done.wait(30)

    t = threading.Thread(target=rests_then_waits)
    t.start()
    try:
        stallwatch.tick("marker", 0.05)   # this thread's own loop, stuck in the test's wait
        deadline = time.monotonic() + 10
        while not _records(caplog, "marker") and time.monotonic() < deadline:
            time.sleep(0.01)
        stallwatch.rest()
    finally:
        done.set()
        t.join()
    said = _records(caplog, "marker", "idle")
    assert [s.split()[0] for s in said] == ["marker"], said
