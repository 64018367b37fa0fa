"""When a primary's QEMU is gone, whether that is a death (its peer must take over) or the
guest powering off (QEMU closed its log with END: nobody races)."""
import threading
from types import SimpleNamespace

from ftorch.agent.primary import Primary


def primary(ended: bool, read_to: int = 100, size: int = 100, exited: bool = True):
    p = SimpleNamespace(guest=SimpleNamespace(exited=lambda: exited), stopping=False,
                        withdrawn=None, tail=SimpleNamespace(ended=ended, read_to=read_to),
                        _log_size=lambda: size)
    p._log_read = lambda: Primary._log_read(p)
    return p


def test_a_qemu_killed_mid_log_is_a_death():
    assert Primary.guest_exited(primary(ended=False))


def test_a_guest_that_powered_off_ended_its_log_and_is_no_death():
    assert not Primary.guest_exited(primary(ended=True))


def test_the_tail_is_given_the_last_bytes_before_judging():
    p = primary(ended=False, read_to=50, size=100)

    def tail_reads_the_end() -> None:
        p.tail.read_to, p.tail.ended = 100, True
    threading.Timer(0.05, tail_reads_the_end).start()
    assert not Primary.guest_exited(p)


def test_a_running_qemu_an_operator_stop_or_a_withdrawn_side_is_no_death():
    assert not Primary.guest_exited(primary(ended=False, exited=False))
    stopping = primary(ended=False)
    stopping.stopping = True
    assert not Primary.guest_exited(stopping)
