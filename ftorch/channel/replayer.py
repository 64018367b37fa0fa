"""Backup side: hold the replaying QEMU inside what it has received, via replay-break.

Runs the `horizon.decide` loop over QMP, driven by events: new data moves the break forward at
once (at most one control step per `min_gap_s`), and QEMU pausing at a break (a libvirt event)
continues it at once; a poll every `SAMPLE_S` covers a lost event and feeds the lag meter.
"""
from __future__ import annotations

import logging
import time

from ftorch.channel.feeder import Feeder
from ftorch.channel.horizon import decide
from ftorch.channel.lag import LagMeter
from ftorch.errors import VirtError
from ftorch.host.virt import Guest
from ftorch.worker import Worker

log = logging.getLogger("ftorch.replayer")


# With no data and no pause, the loop still looks every SAMPLE_S: the lag meter's samples, and
# a pause whose event was lost (a reconnect of libvirtd) costs at most this much.
SAMPLE_S = 0.1


class ReplayController(Worker):
    thread_name = "replayer"

    def __init__(self, guest: Guest, feeder: Feeder, margin: int, min_gap_s: float,
                 lag: LagMeter) -> None:
        self.guest = guest
        self.feeder = feeder
        self.margin = margin
        self.min_gap_s = min_gap_s
        self.icount = 0
        self.status = "prelaunch"
        self.break_at: int | None = None
        self.break_hits = 0
        self.finished = False
        self.error: str | None = None
        self.lag = lag
        self._paused = False          # a pause event not yet acted on
        self._seen: tuple[int, bool] = (-1, False)   # (received icount, ended) at the last step
        self._sampled = 0.0
        super().__init__()

    def _wake(self) -> None:
        with self.feeder.changed:
            self.feeder.changed.notify_all()

    def _on_pause(self) -> None:
        with self.feeder.changed:
            self._paused = True
            self.feeder.changed.notify_all()

    def _news(self) -> bool:
        f = self.feeder
        return self._paused or (f.received_icount, f.ended) != self._seen or self._stop.is_set()

    def _run(self) -> None:
        try:
            watch = self.guest.on_pause(self._on_pause)
        except VirtError as e:
            log.warning("%s: polling every %.0f ms instead", e, SAMPLE_S * 1e3)
            watch = None
        try:
            self._loop()
        finally:
            if watch is not None:
                self.guest.stop_watching(watch)

    def _loop(self) -> None:
        last = 0.0
        while not self._stop.is_set() and not self.finished:
            with self.feeder.changed:
                # past the stream's end QEMU runs onto the END with no event to say it got
                # there: a go-live waits on this poll
                self.feeder.changed.wait_for(
                    self._news, self.min_gap_s if self.feeder.ended else SAMPLE_S)
                self._paused = False
                self._seen = (self.feeder.received_icount, self.feeder.ended)
            # several chunks in a burst make one step: each step costs libvirtd and QEMU's
            # monitor a round trip or two, taken from the replay they control
            wait = self.min_gap_s - (time.monotonic() - last)
            if wait > 0 and self._stop.wait(wait):
                break
            last = time.monotonic()
            try:
                self._step()
            except VirtError as e:
                if self.guest.exited():   # not libvirtd restarting: the kernel says so
                    self.error = "the backup QEMU exited"
                    log.error("%s at icount %d (%s)", self.error, self.icount, e)
                    return
                log.warning("replay control: %s", e)

    def _step(self) -> None:
        # The horizon counts what is spooled, not what is already in the pipe: the feeding
        # thread writes all of the spool without waiting on anything, so QEMU cannot run dry
        # before the spool's end. Counting only the pipe deadlocks: a long run of events with
        # no instructions (clock reads while the guest idles) can fill the pipe while the
        # backup waits at a break that only more instructions in the pipe would move.
        have, final = self.feeder.received_icount, self.feeder.ended
        self.status = self.guest.run_state()
        if self._must_sample(final):
            self._sampled = time.monotonic()
            icount = self.guest.replay().icount
            if icount != self.icount:
                self.icount = icount
                self.lag.replayed(icount)
        if final and self.icount >= have:
            self.finished = True
            log.info("backup replayed the whole log: icount %d", self.icount)
            return
        d = decide(have, self.margin, final, self.break_at, self.status, self.icount,
                   self.feeder.injected)
        if self.status == "paused":
            self.break_hits += 1
            self.break_at = None
        if d.delete_break:
            self.guest.qmp("replay-delete-break")
            self.break_at = None
        if d.set_break is not None:
            self.guest.qmp("replay-break", icount=d.set_break)
            self.break_at = d.set_break
        if d.cont:
            self.guest.qmp("cont")

    def _must_sample(self, final: bool) -> bool:
        """Whether this step needs QEMU's count. While it runs under a break, the last count
        (lower than the true one) is enough to move the break: a goal past the break is past
        the count too. A pause, the stream's end, a missing break, or the lag meter need it."""
        return (self.status != "running" or final or self.break_at is None
                or time.monotonic() - self._sampled >= SAMPLE_S)
