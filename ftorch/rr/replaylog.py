"""QEMU 10.0 replay-log format: header, event framing, instruction-count accounting.

Sans-I/O: feed bytes with `LogParser.feed`, read the complete-event boundary and the
instruction count there. Event layout from QEMU's replay/replay-internal.h and replay/*.c
(REPLAY_VERSION 0xe0200c); see docs/replay-log.md.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ftorch.errors import LogFormatError

REPLAY_VERSION = 0xE0200C
HEADER_SIZE = 12
VERSION_BYTES = struct.pack(">I", REPLAY_VERSION)

INSTRUCTION = 0
ASYNC_INPUT = 5
ASYNC_BLOCK = 8
ASYNC_CHAR_READ = 7
ASYNC_NET = 9
SHUTDOWN_FIRST, SHUTDOWN_LAST = 10, 21
CHAR_WRITE = 22
CHECKPOINT_FIRST = 30
CHECKPOINT_CLOCK_VIRTUAL = 34   # virtual-clock timers ran (CHECKPOINT_FIRST + 4)
CLOCK_HOST = 28                 # a read of the host's wall clock (ns since the epoch)
CHAR_READ_ALL = 23
AUDIO_IN = 26
RANDOM = 27
END = 39
END_EVENT = bytes([END])

# Payload size of every fixed-size kind; None marks the variable-size ones parsed by hand.
_FIXED: list[int | None] = [None] * 40
_FIXED[INSTRUCTION] = 4
for _k in (1, 2, 6, *range(SHUTDOWN_FIRST, SHUTDOWN_LAST + 1), *range(30, 40)):
    _FIXED[_k] = 0
for _k, _n in ((3, 8), (4, 8), (8, 8), (CHAR_WRITE, 8), (24, 4), (25, 8), (28, 8), (29, 8)):
    _FIXED[_k] = _n
# ASYNC_INPUT payload after its u32 type, by input kind (key is split by key-value kind below).
_INPUT_SIZES = {1: 5, 2: 12, 3: 12, 4: 32}
_INPUT_KEY_SIZES = {0: 9, 1: 5}


def check_header(header: bytes) -> None:
    """Raise LogFormatError unless header is a complete QEMU 10.0 replay-log header."""
    if len(header) < HEADER_SIZE:
        raise LogFormatError(f"replay log truncated: header has {len(header)} of {HEADER_SIZE} bytes")
    (version,) = struct.unpack_from(">I", header)
    if version == 0:
        raise LogFormatError("replay log header is zero: the recording is still running or was "
                             "killed (QEMU writes the header on clean exit)")
    if version != REPLAY_VERSION:
        raise LogFormatError(f"replay log version {version:#x} is not the supported "
                             f"{REPLAY_VERSION:#x} (QEMU 10.0)")


# Bounds past which an event can only be corruption: QEMU's arrays are a network frame (64 KiB
# at most), a serial read or a few random bytes; a completion can overtake only the requests in
# flight with it (virtio-blk's queue depth, 128 here). Without them a corrupt length would make
# the parser buffer, or a corrupt block id allocate, without end.
MAX_ARRAY = 1 << 20
MAX_BLOCK_JUMP = 1024


def _array_end(buf: bytes, pos: int) -> int | None:
    """End of a u32-length-prefixed array starting at pos, or None if incomplete."""
    if pos + 4 > len(buf):
        return None
    length = struct.unpack_from(">I", buf, pos)[0]
    if length > MAX_ARRAY:
        raise LogFormatError(f"an event array of {length} bytes at offset {pos} is over "
                             f"{MAX_ARRAY} bytes: corrupt log")
    end = pos + 4 + length
    return end if end <= len(buf) else None


def _variable_end(kind: int, buf: bytes, pos: int) -> int | None:
    """End of the payload of a variable-size event whose payload starts at pos."""
    n = len(buf)
    if kind == ASYNC_CHAR_READ:
        return _array_end(buf, pos + 1)
    if kind == ASYNC_NET:
        return _array_end(buf, pos + 5)
    if kind in (CHAR_READ_ALL, RANDOM):
        return _array_end(buf, pos + (4 if kind == RANDOM else 0))
    if kind == ASYNC_INPUT:
        if pos + 8 > n:
            return None
        itype, sub = struct.unpack_from(">II", buf, pos)
        if itype == 0:
            size = _INPUT_KEY_SIZES.get(sub)
            end = pos + 8 + size if size is not None else None
        else:
            size = _INPUT_SIZES.get(itype)
            end = pos + 4 + size if size is not None else None
        if end is None:
            raise LogFormatError(f"unknown input event type {itype}/{sub} at offset {pos - 1}")
        return end if end <= n else None
    if kind == AUDIO_IN:
        if pos + 16 > n:
            return None
        recorded = struct.unpack_from(">Q", buf, pos)[0]
        if 16 * recorded > MAX_ARRAY:
            raise LogFormatError(f"an audio event of {recorded} samples at offset {pos - 1}: "
                                 "corrupt log")
        end = pos + 16 + 16 * recorded
        return end if end <= n else None
    raise LogFormatError(f"unknown replay event kind {kind} at offset {pos - 1}")


@dataclass
class Boundary:
    """A complete-event boundary: stream offset and instruction count there."""

    offset: int
    icount: int


class LogParser:
    """Incremental parser of the event stream that follows the 12-byte header.

    `offset`/`icount` describe the end of the last complete event; bytes after it are buffered
    until the event completes. `counts` tallies events by kind.
    """

    def __init__(self, offset: int = HEADER_SIZE, icount: int = 0, next_block: int = 0,
                 host_clock_ns: int | None = None) -> None:
        self.offset = offset
        self.icount = icount
        # The last host wall-clock read the recorder logged: when it recorded this point, to
        # within the spacing of such reads (a few ms; a running guest's QEMU reads it often).
        self.host_clock_ns = host_clock_ns
        # blkreplay numbers disk requests from 0 (or the snapshot's count); completions
        # (ASYNC_BLOCK) carry the number. One past the highest completion seen, and the lower
        # numbers not completed yet (completions can overtake each other; rarely seen).
        self.next_block = next_block
        self.open_blocks: set[int] = set()
        self.blocks_out_of_order = 0
        self.ended = False
        # stream offset where the recording's closing events begin (first SHUTDOWN, or END)
        self.closing_at: int | None = None
        self.counts = [0] * 40
        # When a list, every inbound network frame (ASYNC_NET payload) is appended to it:
        # the agent matches them to the frames it gave QEMU to measure log staleness.
        self.net_frames: list[bytes] | None = None
        self._buf = b""

    @property
    def pending(self) -> int:
        """Bytes received past the last complete event."""
        return len(self._buf)

    def feed(self, data: bytes) -> int:
        """Consume data; return how many bytes of complete events it (with earlier input) ends."""
        if self.ended and data:
            raise LogFormatError(f"data after the END event at offset {self.offset}")
        buf = self._buf + data if self._buf else data
        pos, n, icount, fixed, counts = 0, len(buf), self.icount, _FIXED, self.counts
        clock = self.host_clock_ns
        unpack = struct.unpack_from
        while pos < n:
            kind = buf[pos]
            if kind >= 40:
                raise LogFormatError(f"unknown replay event kind {kind} at offset {self.offset + pos}")
            size = fixed[kind]
            if size is not None:
                end = pos + 1 + size
                if end > n:
                    break
                if kind == INSTRUCTION:
                    icount += unpack(">I", buf, pos + 1)[0]
                elif kind == CLOCK_HOST:
                    clock = unpack(">q", buf, pos + 1)[0]
                elif kind == ASYNC_BLOCK:
                    self._completed(unpack(">Q", buf, pos + 1)[0], self.offset + pos)
            else:
                try:
                    end = _variable_end(kind, buf, pos + 1)
                except LogFormatError as e:
                    raise LogFormatError(f"{e} (stream offset base {self.offset})") from None
                if end is None:
                    break
                if kind == ASYNC_NET and self.net_frames is not None:
                    self.net_frames.append(bytes(buf[pos + 10:end]))
            counts[kind] += 1
            if self.closing_at is None and (SHUTDOWN_FIRST <= kind <= SHUTDOWN_LAST or kind == END):
                self.closing_at = self.offset + pos
            pos = end
            if kind == END:
                self.ended = True
                if pos < n:
                    raise LogFormatError(f"data after the END event at offset {self.offset + pos}")
        self._buf = buf[pos:]
        self.offset += pos
        self.icount = icount
        self.host_clock_ns = clock
        return pos

    def _completed(self, block: int, at: int) -> None:
        if block > self.next_block + MAX_BLOCK_JUMP:
            raise LogFormatError(f"disk completion {block} at offset {at} is {block - self.next_block} "
                                 f"past the next request ({self.next_block}): corrupt log")
        if block >= self.next_block:
            if block > self.next_block:
                self.blocks_out_of_order += 1
                self.open_blocks.update(range(self.next_block, block))
            self.next_block = block + 1
        else:
            self.open_blocks.discard(block)

    @property
    def first_open_block(self) -> int:
        """Lowest disk request number that may still be in flight."""
        return min(self.open_blocks) if self.open_blocks else self.next_block

    def boundary(self) -> Boundary:
        return Boundary(self.offset, self.icount)


def block_completions(first: int, count: int) -> bytes:
    """ASYNC_BLOCK events completing disk requests first, first+1, ...: at a failover they end
    the backup's stream so that the requests the guest had in flight when the primary died
    complete (the backup did the I/O; the dead primary never logged the completion) and QEMU
    will snapshot (it refuses while a replay event is queued). QEMU takes them in order and
    stops at the first id that is not in flight, so extra ids are harmless."""
    return b"".join(struct.pack(">BQ", ASYNC_BLOCK, first + i) for i in range(count))


def scan_file(path: str) -> LogParser:
    """Parse a whole recorded log file (header checked); return the finished parser."""
    with open(path, "rb") as f:
        check_header(f.read(HEADER_SIZE))
        parser = LogParser()
        while chunk := f.read(1 << 20):
            parser.feed(chunk)
    if parser.pending:
        raise LogFormatError(f"{path}: log ends inside an event at offset {parser.offset} "
                             f"({parser.pending} bytes of a partial event)")
    if not parser.ended:
        raise LogFormatError(f"{path}: log has no END event at offset {parser.offset}: "
                             "truncated, or the recorder was killed")
    return parser
