"""The failover watch performs every action of the role table, and applies every event on its
own thread (control commands submit theirs and wait)."""
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from ftorch.agent.failover import FailoverWatch
from ftorch.arbiter.roles import Action, Event, Role, RoleError
from ftorch.config import load

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/lab.yaml"


def watch() -> FailoverWatch:
    side = SimpleNamespace(cfg=load(EXAMPLE), key="b",   # neither Primary nor Backup: a backup
                           guest_exited=lambda: False)
    return FailoverWatch(side, on_live=lambda live: None)


def test_every_action_of_the_table_has_a_handler():
    assert set(watch()._handlers) == set(Action)


def test_submitted_events_are_applied_on_the_watch_thread_in_order():
    w = watch()
    w.lock = SimpleNamespace(current=lambda: None)
    seen: list[tuple[Event, str]] = []
    real = w._apply

    def record(event: Event, detail: str = "") -> None:
        seen.append((event, threading.current_thread().name))
        real(event, detail)

    w._apply = record
    w._silent = lambda: False
    w.start()
    try:
        w.submit(Event.OPERATOR_STOP, timeout=10)
        assert w.role == Role.STOPPED
        with pytest.raises(RoleError, match="take-over cannot happen to a side that is stopped"):
            w.submit(Event.TAKE_OVER, timeout=10)
    finally:
        w.stop()
    assert seen == [(Event.OPERATOR_STOP, "failover"), (Event.TAKE_OVER, "failover")]


def test_a_backup_with_a_full_disk_steps_down_and_never_claims():
    w = watch()
    w.lock = SimpleNamespace(current=lambda: None)
    withdrawn: list[str] = []
    w.subject = SimpleNamespace(withdraw=withdrawn.append)
    w._silent = lambda: True          # the primary goes quiet right after: no claim follows
    w.role = Role.BACKUP
    w._apply(Event.DISK_FULL, "12 MiB free")
    assert w.role == Role.WITHDRAWN and withdrawn == [w.reason] and "12 MiB free" in w.reason
    with pytest.raises(RoleError):
        w._apply(Event.CHANNEL_SILENT)


def test_a_side_whose_qemu_died_steps_down_before_it_would_race():
    """QEMU gone and the peer silent too (the peer's stream stopped with it): stepping down
    comes first, so a side with no guest never claims the pair."""
    w = watch()
    withdrawn: list[str] = []
    w.subject = SimpleNamespace(withdraw=withdrawn.append, guest_exited=lambda: True,
                                domain_now=lambda: "ftorch-kv-b")
    w._silent = lambda: True
    w.role = Role.BACKUP
    w._look()
    assert w.role == Role.WITHDRAWN and withdrawn == [w.reason]
    assert "ftorch-kv-b is gone" in w.reason and "detected_at" in w.times


def test_a_live_qemu_and_a_talking_peer_change_nothing():
    w = watch()
    w.subject = SimpleNamespace(guest_exited=lambda: False)
    w._silent = lambda: False
    w.role = Role.PRIMARY
    w._look()
    assert w.role == Role.PRIMARY and "detected_at" not in w.times
