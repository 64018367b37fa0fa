"""A full disk is a state, not a livelock: watch the free space of this host's pair folder.

Below the reserve (limits.disk_reserve_mib) the agent acts before writes start failing: a
recording side pauses its guest (output waits; nothing is lost) until the space is back to twice
the reserve; a backup steps down (roles: DISK_FULL), stops listening, and the primary, hearing
nothing, goes on alone within the channel timeout and re-protects once this host has room.
Without the reserve, a backup whose spool write fails drops the connection, the primary
reconnects at once, and the pair spins with its acks stuck and output held (issue 12).
"""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from ftorch.status import DiskStatus
from ftorch.worker import Worker

log = logging.getLogger("ftorch.disk")
CHECK_S = 0.5
MIB = 1 << 20


def low_on_disk(free: int, reserve: int, was_low: bool) -> bool:
    """Low below the reserve; fine again only at twice the reserve, so that a guest paused for
    space does not flap between paused and running around one threshold."""
    return free < (2 * reserve if was_low else reserve)


class DiskGuard(Worker):
    thread_name = "disk-guard"

    def __init__(self, folder: Path, reserve_mib: int, on_low: Callable[[str], str],
                 on_ok: Callable[[], None]) -> None:
        """on_low(why) returns what was done (for status); on_ok() undoes it if it can."""
        self.folder = folder
        self.reserve = reserve_mib * MIB
        self.on_low, self.on_ok = on_low, on_ok
        self.free: int | None = None
        self.low = False
        self.since: float | None = None
        self.action = ""
        super().__init__()

    def status(self) -> DiskStatus:
        return DiskStatus(free_bytes=self.free, reserve_bytes=self.reserve, low=self.low,
                          since=self.since, action=self.action)

    def check(self) -> None:
        """One look at the free space, acting on a change (the loop's body; tests call it)."""
        try:
            self.free = shutil.disk_usage(self.folder).free
        except OSError as e:
            log.error("cannot read the free space of %s: %s", self.folder, e)
            return
        low = low_on_disk(self.free, self.reserve, self.low)
        if low and not self.low:
            self.low, self.since = True, time.time()
            why = (f"disk full: {self.free // MIB} MiB free in {self.folder}, below the "
                   f"{self.reserve // MIB} MiB reserve (limits.disk_reserve_mib)")
            log.error("%s", why)
            self.action = self.on_low(why)
        elif not low and self.low:
            log.warning("disk space back: %d MiB free in %s", self.free // MIB, self.folder)
            self.low, self.since, self.action = False, None, ""
            self.on_ok()

    def _run(self) -> None:
        while not self._stop.wait(CHECK_S):
            self.check()
