"""A full disk (or another limit) is a state: the guard acts once on the way down, once on the
way back up, with a gap between the two thresholds so a paused guest does not flap."""
from collections import namedtuple

from ftorch.agent import guard
from ftorch.agent.guard import MIB, ResourceGuard, low_on_disk

Usage = namedtuple("Usage", "total used free")


def test_hysteresis():
    assert low_on_disk(63 * MIB, 64 * MIB, was_low=False)
    assert not low_on_disk(64 * MIB, 64 * MIB, was_low=False)
    assert low_on_disk(100 * MIB, 64 * MIB, was_low=True)      # not back yet
    assert not low_on_disk(128 * MIB, 64 * MIB, was_low=True)


def test_the_guard_acts_once_each_way_and_reports(monkeypatch, tmp_path):
    free = [500 * MIB]
    monkeypatch.setattr(guard.shutil, "disk_usage", lambda p: Usage(0, 0, free[0]))
    calls: list[str] = []
    g = ResourceGuard(tmp_path, 64, on_low=lambda why: calls.append(why) or "guest paused",
                      on_ok=lambda: calls.append("ok"), overload=lambda: None)
    for f in (500, 10, 5, 100, 200, 300):
        free[0] = f * MIB
        g.check()
        if f == 10:
            st = g.status()
            assert st.low and st.action == "guest paused" and st.free_bytes == 10 * MIB
            assert st.tripped.startswith("disk full: 10 MiB free")
    assert len(calls) == 2 and "10 MiB free" in calls[0] and "64 MiB reserve" in calls[0]
    assert calls[1] == "ok" and not g.status().low and g.status().action == ""
    assert g.status().tripped == ""


def test_an_overload_trips_the_guard_as_a_full_disk_does(monkeypatch, tmp_path):
    monkeypatch.setattr(guard.shutil, "disk_usage", lambda p: Usage(0, 0, 500 * MIB))
    over: list[str | None] = [None]
    calls: list[str] = []
    g = ResourceGuard(tmp_path, 64, on_low=lambda why: calls.append(why) or "stepped down",
                      on_ok=lambda: calls.append("ok"), overload=lambda: over[0])
    g.check()
    over[0] = "backlog of 9 frames over limits.backlog_frames (8)"
    g.check()
    g.check()
    assert calls == [over[0]] and g.status().tripped == over[0] and not g.status().low
