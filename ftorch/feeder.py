"""Backup side: feed received log events into the named pipe the replaying QEMU reads.

The pipe gets the 4 version bytes and then the log from byte 12 on (QEMU's seek to 12 fails on a
pipe and is ignored). Writes go in pieces of at most 16 KiB; the fed offset and instruction count
are published only once a whole frame's events are in the pipe.
"""
from __future__ import annotations

import fcntl
import os
import stat
import threading
from pathlib import Path

from .replaylog import HEADER_SIZE, VERSION_BYTES

PIECE = 16384
F_SETPIPE_SZ = 1031
PIPE_BYTES = 1 << 20


class Feeder:
    def __init__(self, fifo: Path, owner_uid: int = -1, owner_gid: int = -1) -> None:
        self.fifo = fifo
        self.offset = HEADER_SIZE
        self.icount = 0
        self.final = False
        self.changed = threading.Condition()
        if fifo.exists() and not stat.S_ISFIFO(fifo.stat().st_mode):
            fifo.unlink()
        if not fifo.exists():
            os.mkfifo(fifo, 0o600)
        os.chown(fifo, owner_uid, owner_gid)
        # O_RDWR: opening never blocks and the reader never sees EOF while the agent lives.
        self._fd = os.open(fifo, os.O_RDWR)
        try:
            fcntl.fcntl(self._fd, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe only means more, smaller waits
        os.write(self._fd, VERSION_BYTES)

    def feed(self, offset: int, events: bytes, icount: int) -> None:
        """Write complete events that start at `offset` and end at instruction count `icount`."""
        if offset != self.offset:
            raise ValueError(f"feed at {offset}, expected {self.offset}")
        view = memoryview(events)
        while view:
            view = view[os.write(self._fd, view[:PIECE]):]
        with self.changed:
            self.offset += len(events)
            self.icount = icount
            self.changed.notify_all()

    def finish(self) -> None:
        """The whole log is in the pipe: the backup may run to its end."""
        with self.changed:
            self.final = True
            self.changed.notify_all()

    def close(self) -> None:
        os.close(self._fd)
