"""The recorder's side of the lag bound: the rules (rr/throttle.py), the freezer that several
reasons share and the duty cycle (agent/throttle.py), with a fake guest."""
import threading
import time

import pytest

from ftorch.agent.throttle import DISK, LAG, Freezer, Throttle
from ftorch.errors import FtorchError, VirtError
from ftorch.hysteresis import Switch, Zone, zone
from ftorch.rr import throttle
from ftorch.rr.throttle import pace, share

P = throttle.policy(bound_s=0.5, max_share=0.95)


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -0.1])
def test_a_share_that_would_stop_the_guest_or_do_nothing_is_refused(bad):
    with pytest.raises(FtorchError, match="max_slowdown"):
        throttle.policy(0.5, bad)


@pytest.mark.parametrize("lag, expected", [(None, Zone.UNKNOWN), (0.1, Zone.UNDER),
                                           (0.125, Zone.BAND), (0.25, Zone.BAND),
                                           (0.26, Zone.OVER)])
def test_zones_split_at_a_half_and_a_quarter_of_the_bound(lag, expected):
    assert zone(P.band, lag) is expected


def test_slowing_starts_past_half_the_bound_and_ends_under_a_quarter():
    state, seen = Switch.OFF, []
    for lag in (0.2, 0.3, 0.2, 0.13, 0.12, 0.2):
        state, s = pace(P, state, lag)
        seen.append((state, s > 0))
    assert seen == [(Switch.OFF, False), (Switch.ON, True), (Switch.ON, True),
                    (Switch.ON, True), (Switch.OFF, False), (Switch.OFF, False)]


def test_the_share_grows_with_the_lag_up_to_the_most_at_half_the_bound():
    shares = [share(P, lag) for lag in (0.1, 0.125, 0.2, 0.25, 0.5, 2.0)]
    assert shares == sorted(shares)
    assert shares[0] == shares[1] == P.min_share and shares[2] < P.max_share
    assert shares[3] == shares[-1] == P.max_share


def test_a_backup_that_is_gone_frees_the_guest_at_once():
    assert pace(P, Switch.ON, None) == (Switch.OFF, 0.0)


class FakeGuest:
    def __init__(self) -> None:
        self.frozen = False
        self.calls: list[str] = []
        self.gone = False

    def freeze(self) -> None:
        if self.gone:
            raise VirtError("g: cannot send SIGSTOP: its QEMU is not running")
        self.calls.append("freeze")
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self.calls.append("thaw")
            self.frozen = False


def test_the_guest_runs_only_when_no_reason_holds_it():
    g = FakeGuest()
    f = Freezer(lambda: g)
    assert f.hold(DISK) and f.hold(LAG)
    assert g.calls == ["freeze"]
    f.release(LAG)
    assert g.frozen and f.holds(DISK)
    f.release(DISK)
    assert g.calls == ["freeze", "thaw"] and not g.frozen


def test_a_barred_reason_lets_go_at_once_and_cannot_hold_again():
    g = FakeGuest()
    f = Freezer(lambda: g)
    assert f.hold(LAG)
    f.bar(LAG)
    assert not g.frozen and not f.hold(LAG)
    assert f.hold(DISK)       # another reason still can
    f.release(DISK)
    f.unbar(LAG)
    assert f.hold(LAG)


def test_nothing_is_held_without_a_running_qemu():
    g = FakeGuest()
    g.gone = True
    assert not Freezer(lambda: g).hold(DISK)
    assert not Freezer(lambda: None).hold(DISK)


def test_frozen_time_is_counted_by_reason():
    g = FakeGuest()
    f = Freezer(lambda: g)
    f.hold(LAG)
    time.sleep(0.02)
    held = f.release(LAG)
    assert held >= 0.02 and f.total_s[LAG] == held and DISK not in f.total_s


def run_throttle(lag: list[float | None], seconds: float) -> tuple[Throttle, FakeGuest]:
    g = FakeGuest()
    t = Throttle(lambda: lag[0], Freezer(lambda: g), P, period_s=0.02)
    t.start()
    time.sleep(seconds)
    return t, g


def test_a_trailing_backup_freezes_the_recorder_for_a_share_of_each_period():
    lag: list[float | None] = [0.5]
    t, g = run_throttle(lag, 0.3)
    st = t.status()
    assert st.slowed and st.share == pytest.approx(0.95) and st.episodes == 1
    assert g.calls.count("freeze") >= 5
    lag[0] = 0.05                     # caught up: free again, and thawed
    deadline = time.monotonic() + 2
    while t.status().slowed and time.monotonic() < deadline:
        time.sleep(0.01)
    t.stop()
    st = t.status()
    assert not st.slowed and not g.frozen and st.frozen_s > 0 and st.slowed_s > 0
    assert 0 < st.slowdown <= 1


def test_stopping_the_throttle_thaws_a_frozen_guest():
    lag: list[float | None] = [5.0]
    t, g = run_throttle(lag, 0.1)
    t.stop()
    assert not g.frozen and not t._thread.is_alive()


def test_a_guest_whose_qemu_went_away_is_not_fought_over():
    g = FakeGuest()
    g.gone = True
    t = Throttle(lambda: 1.0, Freezer(lambda: g), P, period_s=0.02)
    t.start()
    time.sleep(0.1)
    t.stop()
    assert g.calls == [] and t.status().frozen_s == 0


def test_the_freezer_is_safe_between_threads():
    g = FakeGuest()
    f = Freezer(lambda: g)
    stop = threading.Event()

    def churn(reason: str) -> None:
        while not stop.is_set():
            f.hold(reason)
            f.release(reason)
    threads = [threading.Thread(target=churn, args=(r,)) for r in (DISK, LAG)]
    for th in threads:
        th.start()
    time.sleep(0.1)
    stop.set()
    for th in threads:
        th.join()
    assert not g.frozen
    assert all(a != b for a, b in zip(g.calls, g.calls[1:], strict=False))   # they alternate
