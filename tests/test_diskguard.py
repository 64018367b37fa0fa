"""A full disk is a state: the guard acts once on the way down, once on the way back up, with a
gap between the two thresholds so a paused guest does not flap."""
from collections import namedtuple

from ftorch.agent import diskguard
from ftorch.agent.diskguard import MIB, DiskGuard, low_on_disk

Usage = namedtuple("Usage", "total used free")


def test_hysteresis():
    assert low_on_disk(63 * MIB, 64 * MIB, was_low=False)
    assert not low_on_disk(64 * MIB, 64 * MIB, was_low=False)
    assert low_on_disk(100 * MIB, 64 * MIB, was_low=True)      # not back yet
    assert not low_on_disk(128 * MIB, 64 * MIB, was_low=True)


def test_the_guard_acts_once_each_way_and_reports(monkeypatch, tmp_path):
    free = [500 * MIB]
    monkeypatch.setattr(diskguard.shutil, "disk_usage", lambda p: Usage(0, 0, free[0]))
    calls: list[str] = []
    g = DiskGuard(tmp_path, 64, on_low=lambda why: calls.append(why) or "guest paused",
                  on_ok=lambda: calls.append("ok"))
    for f in (500, 10, 5, 100, 200, 300):
        free[0] = f * MIB
        g.check()
        if f == 10:
            st = g.status()
            assert st.low and st.action == "guest paused" and st.free_bytes == 10 * MIB
    assert len(calls) == 2 and "10 MiB free" in calls[0] and "64 MiB reserve" in calls[0]
    assert calls[1] == "ok" and not g.status().low and g.status().action == ""
