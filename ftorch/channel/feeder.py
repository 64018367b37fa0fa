"""Backup side: spool the received log on local disk and feed it to the replaying QEMU's pipe.

The receiver appends frames to the spool and acknowledges them at once, so a backup that replays
slowly (a boot on a busy host) never slows the channel or the primary. A feeding thread copies
spooled events into the named pipe: first the 4 version bytes, then the log from byte 12 on
(QEMU's seek to 12 fails on a pipe and is ignored), in pieces of at most 16 KiB. The fed offset
and instruction count are published only once a whole frame's events are in the pipe.
"""
from __future__ import annotations

import fcntl
import logging
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ftorch.host.space import Reclaimer
from ftorch.rr.replaylog import CHECKPOINT_FIRST, END_EVENT, HEADER_SIZE, VERSION_BYTES, block_completions

log = logging.getLogger("ftorch.feeder")
PIECE = 16384
F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032
PIPE_BYTES = 1 << 20
# Disk requests a guest may have in flight when its primary dies (virtio-blk queue depth).
IN_FLIGHT_MAX = 128
# A spool write slower than this is logged: the receiver writes before it acks or beats again,
# so a disk that stalls the write (writeback throttling on a busy host) silences the backup.
SLOW_WRITE_S = 0.2


def make_fifo(fifo: Path, uid: int, gid: int) -> None:
    if fifo.exists() and not stat.S_ISFIFO(fifo.stat().st_mode):
        fifo.unlink()
    if not fifo.exists():
        os.mkfifo(fifo, 0o600)
    os.chown(fifo, uid, gid)


@dataclass(frozen=True)
class StreamStart:
    """Where a backup's stream begins: log offset, instruction count, lowest open disk request."""
    offset: int
    icount: int
    block: int


class Feeder:
    """Spool (received) and pipe (fed) positions of one backup's log stream."""

    def __init__(self, fifo: Path, spool: Path, owner_uid: int = -1, owner_gid: int = -1,
                 start: StreamStart | None = None, keep: int | None = None) -> None:
        """start: the stream begins mid-log, where a clone's snapshot left it. keep: give the
        spool's fed space back to the filesystem, keeping the newest `keep` bytes; None: never."""
        st = start or StreamStart(HEADER_SIZE, 0, 0)
        self.fifo = fifo
        self.start = st
        self.received = st.offset              # end of what is in the spool
        self.received_icount = st.icount
        self.received_block = st.block         # lowest disk request not completed at `received`
        self.offset = st.offset                # end of what is in the pipe
        self.icount = st.icount
        self.ended = False                     # the primary's END is in the spool
        self.final = False                     # ... and everything before it is in the pipe
        self.injected = False                  # the END is ours, not the primary's
        self.error: str | None = None
        # One condition for "the spool grew" and "the pipe got more": the feeding thread and the
        # replay controller both wait on it.
        self.changed = threading.Condition(threading.RLock())
        self._arrived = self.changed
        self._chunks: list[tuple[int, int, int]] = []   # (offset, length, icount) not yet fed
        self._stop = False
        make_fifo(fifo, owner_uid, owner_gid)
        self._spool = os.open(spool, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self._reclaimer = Reclaimer(self._spool, keep, "backup's spool") if keep is not None \
            else None
        # O_RDWR: opening never blocks and the reader never sees EOF while the agent lives.
        self._fd = os.open(fifo, os.O_RDWR)
        try:
            fcntl.fcntl(self._fd, F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe only means more, smaller waits
        self.pipe_size = fcntl.fcntl(self._fd, F_GETPIPE_SZ)
        self.fed_bytes = 0   # bytes of events written into the pipe so far
        # A replaying QEMU reads the first event while starting; loading a snapshot then resets
        # its reader and reads on, so a stream that starts at a snapshot gets a throw-away first
        # event (a checkpoint, no payload) or its real first event would be lost.
        os.write(self._fd, VERSION_BYTES + (bytes([CHECKPOINT_FIRST]) if start else b""))
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)
        self._thread.start()

    def append(self, offset: int, events: bytes, icount: int, block: int | None = None) -> None:
        """Spool complete events that start at `offset` and end at instruction count `icount`
        (`block`: lowest disk request not completed at their end, if it changed)."""
        if offset != self.received:
            raise ValueError(f"append at {offset}, expected {self.received}")
        t = time.monotonic()
        os.pwrite(self._spool, events, offset)
        if (took := time.monotonic() - t) > SLOW_WRITE_S:
            log.warning("spooling %d bytes took %.3f s: the host's disk held the channel up",
                        len(events), took)
        with self._arrived:
            self._chunks.append((offset, len(events), icount))
            self.received += len(events)
            self.received_icount = icount
            if block is not None:
                self.received_block = block
            self._arrived.notify_all()

    def inject_end(self) -> int:
        """Close the received stream (at a failover, or after the primary's clean stop) so the
        backup replays exactly to its last complete event and stays there (QEMU exits at a bare
        end of file): completions for the disk requests the guest may have in flight, then END.
        Returns the final instruction count. Idempotent."""
        with self.changed:
            if not self.ended:
                tail = block_completions(self.received_block, IN_FLIGHT_MAX) + END_EVENT
                self.append(self.received, tail, self.received_icount)
                self.ended = self.injected = True
                self.changed.notify_all()
            return self.received_icount

    def _next(self) -> tuple[int, int, int] | None:
        with self._arrived:
            self._arrived.wait_for(lambda: self._chunks or self.ended or self._stop)
            return self._chunks.pop(0) if self._chunks else None

    def _run(self) -> None:
        try:
            while not self._stop:
                chunk = self._next()
                if chunk is None:
                    break
                offset, length, icount = chunk
                view = memoryview(os.pread(self._spool, length, offset))
                while view:
                    n = os.write(self._fd, view[:PIECE])
                    view = view[n:]
                    with self.changed:
                        self.fed_bytes += n
                        self.changed.notify_all()
                with self.changed:
                    self.offset, self.icount = offset + length, icount
                    self.changed.notify_all()
                if self._reclaimer is not None:
                    self._reclaimer.done_to(self.offset, self.received)
        except OSError as e:
            self.error = f"feeding the backup's pipe failed: {e}"
            log.error("%s", self.error)
        with self.changed:
            self.final = self.ended and self.error is None and not self._stop
            self.changed.notify_all()

    @property
    def backlog(self) -> int:
        """Frames received and not yet fed to the pipe."""
        return len(self._chunks)

    def half_full(self) -> bool:
        """The pipe holds at least half its size of events: plenty for QEMU's first reads, and
        a writer that fills it waits for the reader (a paused recorder logs clock reads at a
        high rate and no instructions: a clone's stream may start with a pipe-full of them)."""
        return self.fed_bytes >= self.pipe_size // 2

    def close(self) -> None:
        with self._arrived:
            self._stop = True
            self._arrived.notify_all()
        os.close(self._fd)      # unblocks a write into a pipe nobody reads any more
        self._thread.join(timeout=5)
        os.close(self._spool)
