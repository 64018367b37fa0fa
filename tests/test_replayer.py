"""The replay control loop's event paths, against a stand-in for libvirt's domain: a pause event
is acted on at once, and new data moves the break without asking QEMU for its count."""
import threading
import time

import pytest

from ftorch.channel import replayer
from ftorch.channel.lag import LagMeter
from ftorch.channel.replayer import ReplayController
from ftorch.host.virt import ReplayInfo


class FakeFeeder:
    def __init__(self) -> None:
        self.changed = threading.Condition(threading.RLock())
        self.received_icount, self.ended, self.injected = 0, False, False

    def receive(self, icount: int) -> None:
        with self.changed:
            self.received_icount = icount
            self.changed.notify_all()


class FakeGuest:
    """QEMU under replay-break: runs straight to its break and pauses there, saying so only
    through the pause callback (as libvirt's lifecycle event does)."""

    def __init__(self) -> None:
        self.state, self.icount, self.brk = "prelaunch", 0, None
        self.calls: list[tuple] = []
        self.on_paused = None
        self.lock = threading.Lock()

    def on_pause(self, callback) -> int:
        self.on_paused = callback
        return 1

    def stop_watching(self, _watch: int) -> None:
        self.on_paused = None

    def run_state(self) -> str:
        return self.state

    def replay(self) -> ReplayInfo:
        self.calls.append(("query-replay",))
        return ReplayInfo("play", self.icount)

    def qmp(self, command: str, **args) -> None:
        self.calls.append((command, *args.values()))
        if command == "replay-break":
            self.brk = args["icount"]
        elif command == "cont":
            self.state = "running"

    def hit_break(self) -> None:
        self.icount, self.brk, self.state = self.brk, None, "paused"
        self.on_paused()

    def exited(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def _no_poll(monkeypatch):
    """The loop's fallback poll out of reach: what happens within a test's deadline happened
    on an event (or on the stream-end poll), not on the poll."""
    monkeypatch.setattr(replayer, "SAMPLE_S", 3600.0)


def until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.001)


def controller(gap_s: float = 0.0) -> tuple[ReplayController, FakeGuest, FakeFeeder]:
    guest, feeder = FakeGuest(), FakeFeeder()
    c = ReplayController(guest, feeder, 1000, gap_s, LagMeter())
    c.start()
    return c, guest, feeder


def test_first_data_sets_the_break_and_starts_the_backup():
    c, guest, feeder = controller()
    try:
        feeder.receive(50_000)
        until(lambda: guest.state == "running")
        assert guest.brk == 49_000
    finally:
        c.stop()


def test_a_pause_event_continues_the_backup_without_waiting_for_the_poll():
    c, guest, feeder = controller()
    try:
        feeder.receive(50_000)
        until(lambda: guest.state == "running")
        with feeder.changed:   # data and the pause together, as at a break hit in a burst
            feeder.received_icount = 90_000
            guest.hit_break()
        until(lambda: guest.state == "running" and guest.brk == 89_000)
        assert c.break_hits == 1 and c.icount == 49_000
    finally:
        c.stop()


def test_new_data_moves_a_running_backups_break_without_a_count_query():
    c, guest, feeder = controller()
    try:
        feeder.receive(50_000)
        until(lambda: guest.state == "running")
        guest.calls.clear()
        for n in range(1, 6):
            feeder.receive(50_000 + n * 10_000)
            until(lambda n=n: guest.brk == 49_000 + n * 10_000)
        moves = [x for x in guest.calls if x[0] == "replay-break"]
        assert len(moves) == 5
        assert ("query-replay",) not in guest.calls
    finally:
        c.stop()


def test_a_burst_of_chunks_makes_one_step_per_gap():
    c, guest, feeder = controller(gap_s=0.2)
    try:
        feeder.receive(50_000)
        until(lambda: guest.state == "running")
        guest.calls.clear()
        for n in range(1, 21):
            feeder.receive(50_000 + n * 1000)
        until(lambda: guest.brk == 69_000)
        assert sum(x[0] == "replay-break" for x in guest.calls) <= 2
    finally:
        c.stop()


def test_the_stream_end_is_polled_until_the_backup_reaches_it():
    c, guest, feeder = controller(gap_s=0.005)
    try:
        feeder.receive(50_000)
        until(lambda: guest.state == "running")
        with feeder.changed:
            feeder.ended = feeder.injected = True
            feeder.changed.notify_all()
        until(lambda: guest.brk is None or ("replay-delete-break",) in guest.calls)
        guest.icount = 50_000   # QEMU ran onto the END: no event says so
        until(lambda: c.finished)
    finally:
        c.stop()
