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
