"""Give log space back to the filesystem while the log's writer keeps the file open.

The primary's rr.log (QEMU writes it for as long as the guest runs) and the backup's spool grow
by ~26-40 KB/s for an idle guest, ~2.6 GB a day. What the backup has acknowledged (primary) or
fed to its QEMU (backup) is never read again, so it is punched out of the file: the file keeps
its size and offsets, its blocks go back to the filesystem. The newest `keep` bytes stay (a
window to debug from, and short test runs keep whole logs that tests can scan).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger("ftorch.space")
BLOCK = 4096
STEP = 1 << 20                     # punch once this much more can go: few syscalls
_PUNCH_HOLE, _KEEP_SIZE = 0x02, 0x01
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def reclaimable(done: int, end: int, keep: int, punched: int) -> tuple[int, int] | None:
    """The byte range to punch now, or None: below both `done` (never read again) and
    `end - keep`, whole blocks only, from the last punch on, once at least STEP has built up.
    The first block (the log's header) stays."""
    upto = min(done, end - keep) // BLOCK * BLOCK
    start = max(punched, BLOCK)
    return (start, upto) if upto - start >= STEP else None


def punch(fd: int, start: int, end: int) -> None:
    """Deallocate [start, end) of an open file, keeping its size (reads there give zeros)."""
    if _libc.fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, start, end - start) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"punching a hole in the log: {os.strerror(err)}")


class Reclaimer:
    """Punch a log file behind what is done with it, a step at a time."""

    def __init__(self, fd: int, keep: int, what: str) -> None:
        self.fd, self.keep, self.what = fd, keep, what
        self.punched = 0               # [BLOCK, punched) is given back
        self.failed = False

    def done_to(self, done: int, end: int) -> None:
        """Everything before `done` is not needed any more; the file has `end` bytes."""
        span = None if self.failed else reclaimable(done, end, self.keep, self.punched)
        if span is None:
            return
        try:
            punch(self.fd, *span)
            self.punched = span[1]
        except OSError as e:           # a filesystem without holes: the log just grows
            self.failed = True
            log.warning("the %s cannot give space back (%s); it grows with the log", self.what, e)
