"""Backup side: hold the replaying QEMU inside what it has received, via replay-break.

Runs the `horizon.decide` loop over QMP: woken by new data (or every interval), it moves the
break forward and continues the backup when it has stopped at the old one; tells the lag meter
where the backup is.
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


class ReplayController(Worker):
    thread_name = "replayer"

    def __init__(self, guest: Guest, feeder: Feeder, margin: int, interval_s: float,
                 lag: LagMeter) -> None:
        self.guest = guest
        self.feeder = feeder
        self.margin = margin
        self.interval_s = interval_s
        self.icount = 0
        self.status = "prelaunch"
        self.break_at: int | None = None
        self.break_hits = 0
        self.finished = False
        self.error: str | None = None
        self.lag = lag
        super().__init__()

    def _wake(self) -> None:
        with self.feeder.changed:
            self.feeder.changed.notify_all()

    def _run(self) -> None:
        last = 0.0
        while not self._stop.is_set() and not self.finished:
            with self.feeder.changed:
                self.feeder.changed.wait(self.interval_s)
            wait = self.interval_s - (time.monotonic() - last)
            if wait > 0 and self._stop.wait(wait):
                break
            last = time.monotonic()
            try:
                self._step()
            except VirtError as e:
                if not self.guest.is_active():
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
