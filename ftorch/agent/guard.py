"""Resources as states, not livelocks: the free space of this host's pair folder, and a
backup's backlog (frames received and not yet fed to its QEMU).

Below the reserve (limits.disk_reserve_mib) the agent acts before writes start failing: a
recording side pauses its guest (output waits; nothing is lost) until the space is back to twice
the reserve; a backup steps down (roles: DISK_FULL), stops listening, and the primary, hearing
nothing, goes on alone within the channel timeout and re-protects once this host has room.
Without the reserve, a backup whose spool write fails drops the connection, the primary
reconnects at once, and the pair spins with its acks stuck and output held (issue 12).
A backup whose backlog passes limits.backlog_frames steps down the same way: its index of
received frames (and the lag meter's stamps of the log ahead of its replay) never grows without
end.
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ftorch.status import GuardStatus
from ftorch.worker import Worker

log = logging.getLogger("ftorch.disk")
CHECK_S = 0.5
MIB = 1 << 20


def low_on_disk(free: int, reserve: int, was_low: bool) -> bool:
    """Low below the reserve; fine again only at twice the reserve, so that a guest paused for
    space does not flap between paused and running around one threshold."""
    return free < (2 * reserve if was_low else reserve)


class ResourceGuard(Worker):
    thread_name = "guard"

    def __init__(self, folder: Path, reserve_mib: int, on_low: Callable[[str], str],
                 on_ok: Callable[[], None], overload: Callable[[], str | None]) -> None:
        """on_low(why) returns what was done (for status); on_ok() undoes it if it can;
        overload() says why this side is over a limit other than disk space, or None."""
        self.folder = folder
        self.overload = overload
        self.reserve = reserve_mib * MIB
        self.on_low, self.on_ok = on_low, on_ok
        self.free: int | None = None
        self.low = False               # below the disk reserve (until twice the reserve)
        self.tripped: str | None = None    # why this side acted, while it lasts
        self.since: float | None = None
        self.action = ""
        super().__init__()

    def status(self) -> GuardStatus:
        return GuardStatus(free_bytes=self.free, reserve_bytes=self.reserve, low=self.low,
                           tripped=self.tripped or "", since=self.since, action=self.action)

    def check(self) -> None:
        """One look at the free space and the other limits, acting on a change (the loop's
        body; tests call it)."""
        try:
            self.free = shutil.disk_usage(self.folder).free
        except OSError as e:
            log.error("cannot read the free space of %s: %s", self.folder, e)
            return
        self.low = low_on_disk(self.free, self.reserve, self.low)
        over = self.overload()
        if self.low:
            over = (f"disk full: {self.free // MIB} MiB free in {self.folder}, below the "
                    f"{self.reserve // MIB} MiB reserve (limits.disk_reserve_mib)")
        if over and not self.tripped:
            self.tripped, self.since = over, time.time()
            log.error("%s", over)
            self.action = self.on_low(over)
        elif not over and self.tripped:
            log.warning("back within limits (%d MiB free in %s)", self.free // MIB, self.folder)
            self.tripped, self.since, self.action = None, None, ""
            self.on_ok()

    def _run(self) -> None:
        while not self._stop.wait(CHECK_S):
            self.check()
