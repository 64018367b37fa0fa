"""The lag bound's rules (gate/lagbound.py) and the bridge's waiting frame (gate/holder.py)."""
import threading
import time

import pytest

from ftorch.errors import FtorchError
from ftorch.gate import lagbound
from ftorch.gate.holder import InboundHold
from ftorch.gate.lagbound import admit
from ftorch.hysteresis import RULES, Switch, Zone, step, zone

P = lagbound.policy(bound_s=0.5, max_hold_s=0.2)


def test_the_rules_table_is_complete():
    assert set(RULES) == {(h, z) for h in Switch for z in Zone}


def test_an_unknown_transition_raises(monkeypatch):
    monkeypatch.delitem(RULES, (Switch.OFF, Zone.OVER))
    with pytest.raises(FtorchError, match="no rule"):
        step(P.band, Switch.OFF, 1.0)


@pytest.mark.parametrize("lag, expected", [(None, Zone.UNKNOWN), (0.1, Zone.UNDER),
                                           (0.25, Zone.BAND), (0.5, Zone.BAND),
                                           (0.51, Zone.OVER)])
def test_zones_split_at_the_bound_and_half_of_it(lag, expected):
    assert zone(P.band, lag) is expected


def test_holding_starts_past_the_bound_and_ends_only_under_half_of_it():
    state = Switch.OFF
    seen = []
    for lag in (0.3, 0.6, 0.4, 0.3, 0.24, 0.4):
        state = step(P.band, state, lag)
        seen.append(state)
    assert seen == [Switch.OFF, Switch.ON, Switch.ON, Switch.ON, Switch.OFF, Switch.OFF]


def test_a_frame_waits_while_holding_but_never_past_max_hold():
    assert admit(P, Switch.OFF, 0.6, 0.0) == (Switch.ON, False)
    assert admit(P, Switch.ON, 0.6, 0.19) == (Switch.ON, False)
    assert admit(P, Switch.ON, 0.6, 0.2) == (Switch.ON, True)
    assert admit(P, Switch.ON, 0.2, 0.05) == (Switch.OFF, True)


def test_no_backup_no_wait():
    assert admit(P, Switch.ON, None, 0.0) == (Switch.OFF, True)


def test_the_holder_lets_a_frame_in_when_the_backup_catches_up():
    lags = iter([0.9, 0.9, 0.4, 0.1])
    hold = InboundHold(lambda: next(lags), lagbound.policy(0.5, 10.0))
    hold.wait(threading.Event())
    st = hold.status()
    assert (st.holding, st.episodes, st.frames_held, st.timeouts) == (False, 1, 1, 0)
    assert st.longest_s > 0


def test_the_holder_gives_up_at_max_hold_and_counts_it():
    hold = InboundHold(lambda: 5.0, lagbound.policy(0.5, 0.03))
    hold.wait(threading.Event())
    st = hold.status()
    assert st.holding and st.timeouts == 1 and st.longest_s >= 0.03


def test_a_frame_that_arrived_max_hold_ago_goes_in_at_once():
    hold = InboundHold(lambda: 5.0, lagbound.policy(0.5, 60.0))
    t0 = time.monotonic()
    hold.wait(threading.Event(), since=t0 - 60.0)
    assert time.monotonic() - t0 < 30.0 and hold.status().frames_held == 0


def test_a_stopping_bridge_does_not_wait():
    stop = threading.Event()
    stop.set()
    hold = InboundHold(lambda: 5.0, lagbound.policy(0.5, 60.0))
    hold.wait(stop)
    assert hold.status().frames_held == 0


def test_an_open_hold_lets_frames_through_without_counting():
    hold = InboundHold(lambda: 0.1, P)
    hold.wait(threading.Event())
    assert hold.status().frames_held == 0 and not hold.status().holding
