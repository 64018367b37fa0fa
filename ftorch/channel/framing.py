"""Logging-channel framing between the agents: sans-I/O encode/decode with CRC32.

Every frame: magic b"FT", version, type, u64 offset, u64 icount, u64 stamp (sender's wall clock,
microseconds), u64 block, u32 length, u32 CRC32 (of the header before it and the payload), then
the payload. Big-endian throughout. A DATA frame's stamp is when the primary recorded its end
(the log's own host-clock reads); its block is the lowest disk-request number not completed
at its end (see go-live).
  HELLO  receiver -> sender: resume at `offset` (icount there); payload: pair name
  DATA   sender -> receiver: complete log events starting at `offset`; `icount` at their end
  ACK    receiver -> sender: every byte before `offset` is in the backup's pipe; `icount`: the
         backup's replay position
  BEAT   either way: heartbeat; sender's: `offset`/`icount` of what is recorded so far
  END    sender -> receiver: the log ended cleanly at `offset` with `icount`
  ZDATA  sender -> receiver: a DATA frame whose payload is deflated (see DataEncoder); the
         decoder hands it on as DATA, so nothing past this module sees the difference
"""
from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass
from enum import IntEnum

from ftorch.errors import FrameError

MAGIC = b"FT"
VERSION = 4          # 3: ZDATA; 4: BEAT's block is the primary's clock, echoed (lease)
_HEAD = struct.Struct(">2sBBQQQQI")
_CRC = struct.Struct(">I")
HEADER_SIZE = _HEAD.size + _CRC.size
MAX_PAYLOAD = 1 << 20


def now_us() -> int:
    """Wall clock in microseconds, the unit of frame stamps."""
    return int(time.time() * 1e6)


class Kind(IntEnum):
    HELLO = 1
    DATA = 2
    ACK = 3
    BEAT = 4
    END = 5
    ZDATA = 6


@dataclass(frozen=True)
class Frame:
    kind: Kind
    offset: int
    icount: int
    payload: bytes = b""
    stamp: int = 0
    block: int = 0

    @property
    def end(self) -> int:
        """Stream offset just past this frame's payload (DATA frames)."""
        return self.offset + len(self.payload)


def encode(frame: Frame) -> bytes:
    """Serialise one frame."""
    if len(frame.payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    head = _HEAD.pack(MAGIC, VERSION, frame.kind, frame.offset, frame.icount, frame.stamp,
                      frame.block, len(frame.payload))
    crc = zlib.crc32(frame.payload, zlib.crc32(head))
    return head + _CRC.pack(crc) + frame.payload


class DataEncoder:
    """One session's DATA frames. Log without network input is deflated in one stream per
    connection, flushed at every frame: an idle guest's log is clock reads and instruction
    counts, which the stream's window makes several times smaller. A chunk that carries the
    guest's network input goes raw and never enters the stream: a stranger who can both send
    the guest frames and see the channel's record sizes could otherwise learn other clients'
    frames from how well they compress with his (the CRIME attack on compressed TLS)."""

    def __init__(self, level: int = 6) -> None:
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)

    def encode(self, frame: Frame, private: bool) -> bytes:
        """The wire bytes of DATA `frame`; `private`: its payload holds network input."""
        if private:
            return encode(frame)
        packed = self._deflate.compress(frame.payload) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        return encode(Frame(Kind.ZDATA, frame.offset, frame.icount, packed, frame.stamp,
                            frame.block))


class FrameDecoder:
    """Incremental decoder: `feed` bytes, get whole frames; any damage raises FrameError."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)

    def _inflated(self, frame: Frame) -> Frame:
        """A ZDATA frame as the DATA frame it stands for, never more than MAX_PAYLOAD."""
        try:
            payload = self._inflate.decompress(frame.payload, MAX_PAYLOAD + 1)
        except zlib.error as e:
            raise FrameError(f"compressed frame at stream offset {frame.offset} does not "
                             f"inflate ({e}): corrupt or not this session's stream") from None
        if len(payload) > MAX_PAYLOAD or self._inflate.unconsumed_tail:
            raise FrameError(f"compressed frame at stream offset {frame.offset} inflates past "
                             f"{MAX_PAYLOAD} bytes: refused")
        if self._inflate.eof:
            raise FrameError(f"compressed frame at stream offset {frame.offset} ends the "
                             "session's deflate stream: the peer's encoder is broken")
        return Frame(Kind.DATA, frame.offset, frame.icount, payload, frame.stamp, frame.block)

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet (dropped if the connection ends here)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while len(self._buf) >= HEADER_SIZE:
            magic, version, kind, offset, icount, stamp, block, length = _HEAD.unpack_from(
                self._buf)
            if magic != MAGIC:
                raise FrameError(f"bad frame magic {bytes(magic)!r}: stream is not an ftorch channel "
                                 "or lost sync")
            if version != VERSION:
                raise FrameError(f"peer speaks channel version {version}, this agent {VERSION}")
            if length > MAX_PAYLOAD:
                raise FrameError(f"frame length {length} exceeds {MAX_PAYLOAD}: corrupt header")
            if len(self._buf) < HEADER_SIZE + length:
                break
            (crc,) = _CRC.unpack_from(self._buf, _HEAD.size)
            payload = bytes(self._buf[HEADER_SIZE:HEADER_SIZE + length])
            if zlib.crc32(payload, zlib.crc32(self._buf[:_HEAD.size])) != crc:
                raise FrameError(f"checksum mismatch in frame at stream offset {offset} "
                                 f"({length} bytes): corrupted in transit")
            try:
                kind = Kind(kind)
            except ValueError:
                raise FrameError(f"unknown frame type {kind}") from None
            frame = Frame(kind, offset, icount, payload, stamp, block)
            del self._buf[:HEADER_SIZE + length]
            frames.append(self._inflated(frame) if kind == Kind.ZDATA else frame)
        return frames
