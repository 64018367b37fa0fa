"""The channel's silence bookkeeping (channel/liveness.py), on made-up clock readings."""
from ftorch.channel.liveness import Liveness


def test_a_peer_never_heard_is_not_silent():
    live = Liveness(timeout_s=0.5)
    live.nothing(100.0)
    assert not live.silent() and live.silent_for() == 0.0


def test_silence_is_what_this_side_saw_from_the_last_frame_to_its_last_empty_look():
    live = Liveness(timeout_s=0.5)
    live.heard(10.0)
    live.nothing(10.5)
    assert not live.silent()                # exactly the timeout: not yet
    live.nothing(10.51)
    assert live.silent()
    live.heard(10.6)
    live.nothing(10.7)
    assert not live.silent() and abs(live.silent_for() - 0.1) < 1e-9


def test_a_side_that_was_held_up_has_not_seen_its_peer_fall_silent():
    """This side's threads stalled for a second (a starved or frozen host): it did not look
    meanwhile, so the peer is not silent; the frames waiting in its socket then arrive."""
    live = Liveness(timeout_s=0.5)
    live.heard(10.0)
    live.nothing(10.02)                     # then nothing ran here until 11.0
    assert not live.silent()
    live.heard(11.0)                        # what the peer sent meanwhile was waiting
    assert not live.silent() and live.longest_gap_s == 1.0


def test_longest_gap_and_close_calls_are_kept():
    live = Liveness(timeout_s=0.5)
    closes = [live.heard(t) for t in (0.0, 0.05, 0.1, 0.4, 0.45, 0.9)]   # gaps .05 .05 .3 .05 .45
    assert abs(live.longest_gap_s - 0.45) < 1e-9
    assert live.close_calls == 2 and [round(c, 2) for c in closes if c] == [0.3, 0.45]
    assert live.heard(2.0) == 0.0           # 1.1 s: past the timeout, not a close call
    assert live.close_calls == 2 and abs(live.longest_gap_s - 1.1) < 1e-9


def test_after_its_own_hold_up_a_side_waits_a_whole_timeout_again():
    """Both lab hosts stall at once: the peer sent nothing meanwhile either. The silence that
    counts starts when this side's loop resumed, so the peer has a timeout to speak again."""
    live = Liveness(timeout_s=0.5)
    live.heard(10.0)
    live.held_up(10.6)                      # this side's loop resumes after 0.6 s
    live.nothing(10.63)                     # the peer has not spoken again yet
    assert not live.silent()
    live.nothing(11.2)                      # nor for a whole timeout since: it is silent
    assert live.silent() and abs(live.silent_for() - 0.6) < 1e-9
