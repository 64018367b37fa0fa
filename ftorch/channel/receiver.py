"""Backup side of the logging channel: accept the primary, check frames, feed the pipe, ack.

Frames must arrive in order with valid checksums; anything else (a corrupt frame, a gap) drops
the connection before a byte of it reaches QEMU, and the primary resumes from the last ack.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ftorch.channel.feeder import Feeder
from ftorch.channel.framing import Frame, FrameDecoder, Kind, encode, now_us
from ftorch.errors import ChannelError, FrameError
from ftorch.worker import Worker

log = logging.getLogger("ftorch.receiver")


@dataclass
class ReceiverStats:
    state: str = "listening"
    received_bytes: int = 0
    corrupt_frames: int = 0
    connects: int = 0
    primary_offset: int = 0        # what the primary has recorded (from its heartbeats/frames)
    primary_icount: int = 0
    last_heard: float = 0.0
    ended: bool = False
    last_error: str = ""
    partial_dropped: int = 0       # bytes of frames cut off by a broken connection (never fed)


class Receiver(Worker):
    thread_name = "receiver"

    def __init__(self, bind: tuple[str, int], pair: str, feeder: Feeder, timeout_s: float,
                 backup_icount: Callable[[], int], on_data: Callable[[Frame], None]) -> None:
        self.bind = bind
        self.pair = pair
        self.feeder = feeder
        self.timeout_s = timeout_s
        self.backup_icount = backup_icount
        self.on_data = on_data
        self.stats = ReceiverStats()
        self.hold_acks = threading.Event()   # fault injection: receive and spool, but stay silent
        self._srv = socket.create_server(bind, reuse_port=False)
        self._srv.settimeout(0.2)
        super().__init__()

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        self._srv.close()

    def _run(self) -> None:
        while not self._stop.is_set() and not self.stats.ended:
            try:
                conn, addr = self._srv.accept()
            except TimeoutError:
                continue
            except OSError as e:
                log.error("logging channel listener failed: %s", e)
                return
            self.stats.last_heard = time.monotonic()   # silence counts from the connection
            self.stats.connects += 1
            log.info("primary connected from %s:%d", *addr)
            try:
                self._session(conn)
            except (OSError, ChannelError, FrameError) as e:
                if isinstance(e, FrameError):
                    self.stats.corrupt_frames += 1
                self.stats.last_error = str(e)
                log.warning("logging channel: %s; dropping the connection, nothing of it fed", e)
            finally:
                conn.close()
                self.stats.state = "ended" if self.stats.ended else "listening"

    def _send(self, conn: socket.socket, kind: Kind, payload: bytes = b"") -> None:
        conn.sendall(encode(Frame(kind, self.feeder.received, self.backup_icount(), payload,
                                  stamp=now_us())))

    def _session(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(0.2)
        hello = Frame(Kind.HELLO, self.feeder.received, self.feeder.received_icount, self.pair.encode(),
                      stamp=now_us())
        conn.sendall(encode(hello))
        self.stats.state = "streaming"
        self.stats.last_heard = time.monotonic()
        dec = FrameDecoder()
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(1 << 20)
                except TimeoutError:
                    data = None
                if data == b"":
                    raise ChannelError("primary closed the connection")
                if data is None:
                    if time.monotonic() - self.stats.last_heard > self.timeout_s:
                        raise ChannelError(f"primary silent for {self.timeout_s:.1f} s")
                    self._send(conn, Kind.BEAT)
                    continue
                self.stats.last_heard = time.monotonic()
                for frame in dec.feed(data):
                    if self._handle(conn, frame):
                        return
        finally:
            if dec.pending:
                self.stats.partial_dropped += dec.pending
                log.warning("dropped %d bytes of a frame the connection cut off (after offset %d)",
                            dec.pending, self.feeder.received)

    def _handle(self, conn: socket.socket, frame: Frame) -> bool:
        """Act on one frame; True when the stream has ended."""
        if frame.kind == Kind.DATA:
            if frame.offset != self.feeder.received:
                raise ChannelError(f"gap in the log stream: frame at {frame.offset}, "
                                   f"expected {self.feeder.received}")
            self.feeder.append(frame.offset, frame.payload, frame.icount, frame.block)
            self.stats.received_bytes += len(frame.payload)
            self.on_data(frame)
            if not self.hold_acks.is_set():
                self._send(conn, Kind.ACK)
        elif frame.kind == Kind.BEAT:
            self.stats.primary_offset, self.stats.primary_icount = frame.offset, frame.icount
        elif frame.kind == Kind.END:
            if frame.offset != self.feeder.received:
                raise ChannelError(f"END at {frame.offset} but only {self.feeder.received} received")
            self.stats.ended = True
            self.feeder.inject_end()  # the primary's own SHUTDOWN and END are never streamed
            log.info("primary's log ended at offset %d, icount %d", frame.offset, frame.icount)
            return True
        if frame.kind in (Kind.DATA, Kind.END):
            self.stats.primary_offset = max(self.stats.primary_offset, frame.end)
            self.stats.primary_icount = max(self.stats.primary_icount, frame.icount)
        return False
