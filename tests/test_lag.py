from ftorch.channel.lag import LagMeter


def test_lag_is_how_much_later_the_backup_reached_what_the_primary_recorded():
    m = LagMeter()
    assert m.seconds() is None                 # nothing has passed yet
    m.recorded(100, at=10.0)
    m.recorded(200, at=10.5)
    m.recorded(300, at=11.0)
    m.replayed(150, at=10.8)                   # inside the chunk recorded (ending) at 10.5
    assert abs(m.seconds() - 0.3) < 1e-9
    m.replayed(300, at=11.05)
    assert abs(m.seconds() - 0.05) < 1e-9


def test_a_backup_waiting_while_the_primary_idles_does_not_fall_behind():
    m = LagMeter()
    m.recorded(100, at=10.0)
    m.replayed(100, at=10.02)
    m.replayed(100, at=99.0)                   # the same position later: no move, same lag
    assert abs(m.seconds() - 0.02) < 1e-9


def test_the_meter_keeps_only_the_log_ahead_of_the_backup_and_ignores_resends():
    m = LagMeter()
    for i in range(1, 1001):
        m.recorded(i * 10, at=float(i))
    m.recorded(5000, at=2000.0)                # a resend after a reconnect: known already
    assert len(m) == 1000
    m.replayed(9000, at=901.0)
    assert len(m) == 101                       # the chunk it is in, and those after
    assert m.seconds() == 1.0
    m.replayed(20000, at=1500.0)               # past the newest chunk: measured against it
    assert len(m) == 1 and m.seconds() == 500.0


def test_behind_is_the_age_of_the_oldest_log_not_replayed_and_grows_while_the_backup_stands():
    m = LagMeter()
    assert m.behind(slack=0) is None
    m.recorded(100, at=10.0)
    m.recorded(200, at=10.5)
    m.replayed(150, at=10.6)
    assert abs(m.behind(slack=0, now=10.7) - 0.2) < 1e-9    # the chunk ending at 200
    assert abs(m.behind(slack=0, now=12.5) - 2.0) < 1e-9    # no move since: it grows


def test_a_backup_level_with_the_recorder_but_its_margin_is_not_behind():
    m = LagMeter()
    m.recorded(100_000, at=10.0)
    m.replayed(99_000, at=10.1)                # held 1000 short of what it has
    assert m.behind(slack=2000, now=50.0) == 0.0
    assert m.behind(slack=0, now=50.0) == 40.0
