"""Primary side: follow the replay log as QEMU writes it and index its complete events.

The tail never waits on the network: it only appends to an index of chunks (offset, length,
icount at the end, when it was recorded); the sender reads chunk bytes back from the file by offset, so a
slow or absent backup costs disk space, not a stalled reader.
"""
from __future__ import annotations

import bisect
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ftorch.errors import LogFormatError
from ftorch.host.space import Reclaimer
from ftorch.rr.replaylog import HEADER_SIZE, LogParser
from ftorch.worker import Worker

log = logging.getLogger("ftorch.logtail")
POLL_S = 0.0005


@dataclass(frozen=True)
class Chunk:
    offset: int
    length: int
    icount: int        # instruction count at the end of the chunk
    recorded_at: float  # wall clock when the primary recorded the chunk's end (see _recorded_at)
    net_keys: tuple[bytes, ...] = ()
    block: int = 0     # lowest disk-request number not completed at the end of the chunk

    @property
    def end(self) -> int:
        return self.offset + self.length


def _recorded_at(parser: LogParser) -> float:
    """When the recorder logged the parser's position: its last read of the host's wall clock
    (QEMU reads it every few ms while the guest runs: p99 3 ms apart on an idle lab guest, at
    most ~1 s), so the lag measured from it is the end-to-end lag, not the tail's read delay.
    A stream with no such read yet counts from now."""
    ns = parser.host_clock_ns
    return ns / 1e9 if ns is not None else time.time()


def _clock_ns(chunk: Chunk | None) -> int | None:
    return int(chunk.recorded_at * 1e9) if chunk is not None else None


def frame_key(frame: bytes) -> bytes:
    """Identity of a network frame, to match a frame given to QEMU with its log event."""
    return hashlib.blake2b(frame, digest_size=8).digest()


class LogTail(Worker):
    """Follows one recording log file in a thread; thread-safe accessors for the sender."""

    thread_name = "logtail"

    def __init__(self, path: str, max_chunk: int = 65536, base_icount: int = 0,
                 keep: int | None = None) -> None:
        """base_icount: QEMU's instruction count where the log starts (a recorder started from
        a snapshot counts on from the snapshot's count). keep: give acknowledged log space back
        to the filesystem, keeping the newest `keep` bytes (host/space.py); None: never."""
        self.path = path
        self.keep = keep
        self._reclaimer: Reclaimer | None = None
        self.max_chunk = max_chunk
        self.base_icount = base_icount
        self.parser = LogParser(icount=base_icount)
        self.parser.net_frames = []
        self.error: str | None = None
        self._starts: list[int] = []
        self._chunks: list[Chunk] = []
        self._cond = threading.Condition()
        self._fd: int | None = None
        self.cut: int | None = None     # a planned switch ends the stream here (cut_here)
        self.read_to = HEADER_SIZE      # file bytes consumed
        super().__init__()

    @property
    def ended(self) -> bool:
        return self.parser.ended

    def _open(self) -> int:
        while not self._stop.is_set():
            try:
                return os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                time.sleep(0.01)
        raise LogFormatError("stopped before the log appeared")

    def _run(self) -> None:
        try:
            self._fd = self._open()
            if self.keep is not None:
                self._reclaimer = Reclaimer(os.open(self.path, os.O_WRONLY), self.keep,
                                            "primary's log")
            pos = HEADER_SIZE
            while not self._stop.is_set() and not self.parser.ended:
                data = os.pread(self._fd, self.max_chunk, pos)
                if not data:
                    time.sleep(POLL_S)
                    continue
                pos += len(data)
                self._add(data)
                with self._cond:
                    self.read_to = pos
                    self._cond.notify_all()
        except (LogFormatError, OSError) as e:
            self.error = f"log tail of {self.path} failed: {e}"
            log.error("%s", self.error)
        with self._cond:
            self._cond.notify_all()

    @property
    def stream_end(self) -> int | None:
        """Where the streamed log ends once the recording is over: where its closing events
        (SHUTDOWN, then clock reads and END, no instructions) begin.

        The backup never gets them: replaying the recorded SHUTDOWN makes libvirt destroy the
        backup before its final count can be read. Its feeder ends the stream with an END of its
        own instead, as at a failover. A planned switch ends it earlier, at `cut`.
        """
        if self.cut is not None:
            return self.cut
        return self.parser.closing_at if self.parser.ended else None

    def _wait_locked(self, reached: Callable[[], bool], offset: int, timeout: float) -> None:
        """With the condition held: wait until the tail has `reached` offset; a tail error or
        the deadline raises LogFormatError."""
        deadline = time.monotonic() + timeout
        while not reached():
            if self.error:
                raise LogFormatError(self.error)
            left = deadline - time.monotonic()
            if left <= 0:
                raise LogFormatError(f"log tail did not reach offset {offset} in {timeout:.0f} s")
            self._cond.wait(left)

    def cut_here(self, timeout: float) -> tuple[int, int]:
        """End the stream after every complete event now in the file (the guest is paused);
        return (offset, icount) there."""
        size = os.stat(self.path).st_size
        with self._cond:
            self._wait_locked(lambda: self.read_to >= size, size, timeout)
            end = self.stream_end if self.stream_end is not None else self.parser.offset
            self.cut = end
            self._cond.notify_all()
            return end, self.icount_at(end)

    def _add(self, data: bytes) -> None:
        start = self.parser.offset
        done = self.parser.feed(data)
        if not done:
            return
        frames, self.parser.net_frames = self.parser.net_frames, []
        end = self.parser.offset
        if self.parser.closing_at is not None:
            end = min(end, self.parser.closing_at)
        if end <= start:
            return
        chunk = Chunk(start, end - start, self.parser.icount, _recorded_at(self.parser),
                      tuple(frame_key(f) for f in frames or ()), self.parser.first_open_block)
        with self._cond:
            self._starts.append(chunk.offset)
            self._chunks.append(chunk)
            self._cond.notify_all()

    @property
    def indexed(self) -> int:
        """Chunks in the index: those the backup has not acknowledged, and one more."""
        return len(self._chunks)

    def forget_before(self, offset: int) -> None:
        """The backup has acknowledged everything before offset, and a backup only ever
        resumes from what it holds: drop the index of the chunks before the one ending there
        (without this the index grows with every chunk the guest ever logged)."""
        with self._cond:
            k = bisect.bisect_left(self._starts, offset) - 1
            if k > 0:
                del self._starts[:k]
                del self._chunks[:k]
        if self._reclaimer is not None:
            self._reclaimer.done_to(offset, self.read_to)

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self._thread.is_alive():
            return                      # still reading: its files stay open
        for fd in (self._fd, self._reclaimer.fd if self._reclaimer else None):
            if fd is not None:
                os.close(fd)
        self._fd, self._reclaimer = None, None

    def chunk_at(self, offset: int, timeout: float) -> Chunk | None:
        """The chunk starting at offset, waiting up to timeout for it to be recorded."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._starts and offset < self._starts[0]:
                raise LogFormatError(f"offset {offset} was acknowledged earlier and is no longer "
                                     f"kept (the log is kept from {self._starts[0]}): the peer "
                                     "asks for log it already had")
            while True:
                stream_end = self.stream_end
                if stream_end is not None and offset >= stream_end:
                    return None
                i = bisect.bisect_left(self._starts, offset)
                if i < len(self._starts):
                    if self._starts[i] != offset:
                        raise LogFormatError(f"offset {offset} is not a chunk boundary")
                    return self._chunks[i]
                left = deadline - time.monotonic()
                if left <= 0 or self.error:
                    return None
                self._cond.wait(left)

    def icount_at(self, offset: int) -> int:
        """Instruction count at a chunk boundary (the stream start counts as base_icount)."""
        if offset == HEADER_SIZE:
            return self.base_icount
        with self._cond:
            i = bisect.bisect_left(self._starts, offset)
            if i == 0 and self._starts and offset <= self._starts[0]:
                raise LogFormatError(f"offset {offset} was acknowledged earlier and is no longer "
                                     f"kept (the log is kept from {self._starts[0]})")
            if i == 0 or self._chunks[i - 1].end != offset:
                raise LogFormatError(f"offset {offset} is not a chunk boundary of the log")
            return self._chunks[i - 1].icount

    def boundary_at(self, offset: int, timeout: float) -> tuple[int, int]:
        """Make offset (an event boundary QEMU reported, e.g. a snapshot's log position) a chunk
        boundary, splitting the chunk around it; return (icount, lowest open disk request)."""
        with self._cond:
            self._wait_locked(lambda: self.parser.offset >= offset, offset, timeout)
            i = bisect.bisect_right(self._starts, offset) - 1
            if offset == HEADER_SIZE or self._chunks[i].offset == offset:
                prev = self._chunks[i - 1] if i > 0 else None
                return (prev.icount, prev.block) if prev else (self.base_icount, 0)
            whole = self._chunks[i]
            prev = self._chunks[i - 1] if i > 0 else None
            p = LogParser(whole.offset, prev.icount if prev else self.base_icount,
                          prev.block if prev else 0, _clock_ns(prev))
            if p.feed(self.read(whole)[:offset - whole.offset]) != offset - whole.offset:
                raise LogFormatError(f"offset {offset} is not an event boundary of the log")
            head = Chunk(whole.offset, offset - whole.offset, p.icount, _recorded_at(p), (),
                         p.first_open_block)
            rest = Chunk(offset, whole.end - offset, whole.icount, whole.recorded_at,
                         whole.net_keys, whole.block)
            self._chunks[i:i + 1] = [head, rest]
            self._starts[i:i + 1] = [head.offset, rest.offset]
            return p.icount, p.first_open_block

    def read(self, chunk: Chunk) -> bytes:
        if self._fd is None:
            raise LogFormatError(f"the log tail of {self.path} is stopped")
        data = os.pread(self._fd, chunk.length, chunk.offset)
        if len(data) != chunk.length:
            raise LogFormatError(f"log file shrank: chunk at {chunk.offset} is gone")
        return data

    def head(self) -> tuple[int, int]:
        """(offset, icount) at the end of the complete events read so far."""
        return self.parser.offset, self.parser.icount
