from ftorch.gate.outputgate import OutputGate


def test_frame_waits_for_the_ack_of_the_log_before_it():
    g = OutputGate()
    assert g.submit(b"f1", required=100, now=1.0) == []
    assert g.ack(99, now=1.1) == [] and g.held == 1
    assert g.ack(100, now=1.25) == [(b"f1", 0.25)]
    assert g.held == 0 and g.released == 1


def test_already_acknowledged_log_lets_a_frame_through_at_once():
    g = OutputGate()
    g.ack(500, now=0.0)
    assert g.submit(b"f", required=400, now=2.0) == [(b"f", 0.0)]


def test_order_is_kept_even_when_a_later_frame_needs_less():
    g = OutputGate()
    g.submit(b"a", required=200, now=0.0)
    assert g.submit(b"b", required=100, now=0.1) == []   # b must not overtake a
    assert [f for f, _ in g.ack(150, now=0.2)] == []
    assert [f for f, _ in g.ack(200, now=0.3)] == [b"a", b"b"]


def test_release_all_when_alone():
    g = OutputGate()
    g.submit(b"a", required=100, now=0.0)
    g.submit(b"b", required=200, now=0.0)
    assert [f for f, _ in g.release_all(now=1.0)] == [b"a", b"b"] and g.held == 0


def test_closed_gate_releases_nothing():
    g = OutputGate()
    g.open = False
    g.submit(b"x", required=0, now=0.0)
    assert g.ack(10**9, now=1.0) == [] and g.held == 1


def test_at_its_limit_the_gate_drops_new_frames_and_never_releases_early():
    g = OutputGate(max_held=2)
    assert g.submit(b"1", 100, 0.0) == [] and g.submit(b"2", 200, 0.0) == []
    assert g.submit(b"3", 300, 0.0) == [] and (g.held, g.dropped) == (2, 1)
    assert [f for f, _ in g.ack(250, 1.0)] == [b"1", b"2"]
    assert g.submit(b"4", 400, 1.0) == [] and g.held == 1


def test_acked_output_leaves_only_under_a_running_lease():
    """A primary frozen past its lease may be dead to its backup, which may be live by now:
    acks read after it wakes, echoing old heartbeats, release nothing (outputgate.py)."""
    g = OutputGate()
    g.require_lease()
    g.submit(b"a", required=100, now=1.0)
    assert g.ack(100, now=1.1) == [] and g.held == 1          # acked, but no lease yet
    assert [f for f, _ in g.ack(100, now=1.2, lease_until=1.7)] == [b"a"]
    g.submit(b"b", required=150, now=1.8)
    assert g.ack(200, now=1.9, lease_until=1.5) == []          # an old echo renews nothing
    assert g.lease_until == 1.7 and g.held == 1 and g.lease_waits > 0
    assert [f for f, _ in g.ack(200, now=2.0, lease_until=2.4)] == [b"b"]


def test_without_a_required_lease_acks_alone_release():
    g = OutputGate()   # a gate whose owner never asked for leases (no backup, tests)
    g.submit(b"a", required=10, now=0.0)
    assert [f for f, _ in g.ack(10, now=99.0)] == [b"a"]
