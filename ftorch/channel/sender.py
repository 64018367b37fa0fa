"""Primary side of the logging channel: send complete log events to the backup over TCP.

The backup says where to resume (HELLO); the sender streams chunks from there, heartbeats every
heartbeat_s, tracks the acknowledged offset, and reconnects after any failure, resuming from what
the backup last acknowledged. Each heartbeat carries this side's monotonic clock; the backup
echoes the latest one in its ACKs and BEATs, and an echo of a heartbeat sent at s is the lease
under which output may leave until s + timeout_s (gate/outputgate.py). Once the backup has
acknowledged everything up to the stream's end (the recording's closing events, or the cut of a
planned switch) it sends END and finishes.
"""
from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ftorch import stallwatch
from ftorch.channel.framing import DataEncoder, Frame, FrameDecoder, Kind, encode, now_us
from ftorch.channel.lag import LagMeter
from ftorch.channel.liveness import Liveness, held_up, note_heard
from ftorch.channel.logtail import LogTail
from ftorch.channel.sockio import readable
from ftorch.errors import ChannelError, FrameError, LogFormatError
from ftorch.worker import Worker

log = logging.getLogger("ftorch.sender")
WINDOW_BYTES = 8 << 20
PIECE = 16384          # one TLS record: a send that selected writable seldom blocks
RETRY_MAX_S = 1.0


@dataclass
class SenderStats:
    state: str = "connecting"
    sent_bytes: int = 0          # log bytes sent, resends included
    wire_bytes: int = 0          # the same as DATA frames on the wire (deflated, with headers)
    sent_offset: int = 0
    acked_offset: int = 0
    refused_acks: int = 0        # ACKs past what was sent: a confused or hostile peer
    refused_peers: int = 0       # a listener at the backup's address without the pair's credential
    last_refused: str = ""
    backup_icount: int = 0
    connects: int = 0
    last_error: str = ""         # why the last session ended
    live: Liveness = field(default_factory=Liveness)   # the backup's ACKs and BEATs
    finished: bool = False
    lease_until: float = 0.0     # monotonic: output may leave until then (gate/outputgate.py)
    staleness: deque[float] = field(default_factory=lambda: deque(maxlen=20000))


class Sender(Worker):
    thread_name = "sender"

    def __init__(self, tail: LogTail, peer: tuple[str, int], pair: str, heartbeat_s: float,
                 timeout_s: float, tls: ssl.SSLContext | None, source: str | None = None,
                 inbound_times: dict[bytes, float] | None = None,
                 on_ack: Callable[[int, float], None] | None = None) -> None:
        """tls: the pair's client context; None (plain TCP) only in benchmarks and tests.
        source: this host's address on the LAN (the backup admits only it)."""
        self.tail = tail
        self.tls = tls
        self.source = source
        self.peer = peer
        self.pair = pair
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s
        self.stats = SenderStats()
        self.stats.live.timeout_s = timeout_s
        self.lag = LagMeter()   # from the positions the backup's ACKs report
        self.inbound_times = inbound_times if inbound_times is not None else {}
        self.on_ack = on_ack
        self.corrupt_next = threading.Event()
        # fault injection: send half of the next DATA frame, then nothing more (a host dying
        # mid-send); `truncated` then says which frame
        self.truncate_next = threading.Event()
        self.truncated: dict[str, int] | None = None
        self._data = DataEncoder()
        super().__init__()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set() and not self.stats.finished:
            try:
                self._session()
            except (OSError, ChannelError, FrameError, LogFormatError) as e:
                if not isinstance(e, LogFormatError):   # the backup did not answer as it should
                    self.stats.live.nothing(time.monotonic())
                # back off while the backup keeps failing (a full disk, a refusing port): no
                # tight loop, and never so long that a link back within the timeout is missed
                failures = 0 if self.stats.state == "streaming" else failures + 1
                self.stats.state, self.stats.last_error = "disconnected", str(e)
                delay = min(RETRY_MAX_S, 0.2 * 2 ** max(0, failures - 1))
                log.warning("logging channel to %s:%d: %s; reconnecting in %.1f s",
                            *self.peer, e, delay)
                self._stop.wait(delay)

    def _connect(self) -> socket.socket:
        self.stats.state = "connecting"
        sock = socket.create_connection(self.peer, timeout=self.timeout_s,
                                        source_address=(self.source, 0) if self.source else None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # a send blocked this long ends the session; longer than the timeout, so that a host
        # held up for a moment does not fail a send (silence is liveness.py's to judge)
        sock.settimeout(2 * self.timeout_s)
        # Before the backup ever spoke, silence counts from the first connection (a backup that
        # accepts and then never answers is silent). After that only frames count: a frozen
        # host's kernel still accepts connections, and they must not keep it looking alive.
        if not self.stats.live.last_heard:
            self.stats.live.heard(time.monotonic())
        self.stats.connects += 1
        if self.tls is not None:
            try:
                sock = self.tls.wrap_socket(sock, server_side=False)
            except OSError as e:   # ssl.SSLError is one
                sock.close()
                self.stats.refused_peers += 1
                self.stats.last_refused = f"{self.peer[0]}:{self.peer[1]}: {e}"
                raise ChannelError(f"the listener at {self.peer[0]}:{self.peer[1]} did not prove "
                                   f"the pair's credential ({e}): not this pair's backup") from None
        return sock

    def _session(self) -> None:
        started = time.monotonic()   # a HELLO after this proves the backup follows us now
        sock = self._connect()
        try:
            dec = FrameDecoder()
            hello = self._await_hello(sock, dec)
            offset = hello.offset
            if hello.payload.decode(errors="replace") != self.pair:
                raise ChannelError(f"peer serves pair {hello.payload!r}, not {self.pair!r}")
            if self.tail.icount_at(offset) != hello.icount:
                raise ChannelError(f"backup resumes at offset {offset} with icount {hello.icount}, "
                                   "which does not match this log: it replays another recording")
            self._lease(started)
            self._acked(offset)  # what the backup holds is acknowledged, whoever sent it
            self.stats.state = "streaming"
            log.info("logging channel up to %s:%d, resuming at offset %d", *self.peer, offset)
            self._data = DataEncoder()   # a new connection, a new deflate stream
            self._stream(sock, dec, offset)
        finally:
            stallwatch.rest()
            sock.close()

    def _await_hello(self, sock: socket.socket, dec: FrameDecoder) -> Frame:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                raise ChannelError("backup closed the connection before HELLO")
            for f in dec.feed(data):
                if f.kind == Kind.HELLO:
                    self.stats.live.heard(time.monotonic())
                    return f
        raise ChannelError("no HELLO from the backup")

    def _stream(self, sock: socket.socket, dec: FrameDecoder, offset: int) -> None:
        last_beat = looked = time.monotonic()
        while not self._stop.is_set():
            looked = held_up(looked, self.stats.live, "sender")
            self._read_acks(sock, dec, offset)
            if time.monotonic() - last_beat >= self.heartbeat_s:   # also while data flows:
                last_beat = time.monotonic()                       # its echo renews the lease
                off, ic = self.tail.head()
                self._send(sock, dec, encode(Frame(Kind.BEAT, off, ic, stamp=now_us(),
                                                   block=int(last_beat * 1e6))), offset)
            if self.stats.live.silent():
                raise ChannelError(f"backup silent for {self.timeout_s:g} s")
            if self.tail.error:
                raise LogFormatError(self.tail.error)
            if offset - self.stats.acked_offset < WINDOW_BYTES:
                chunk = self.tail.chunk_at(offset, timeout=0.002)
                if chunk is not None:
                    self._send_chunk(sock, dec, chunk)
                    offset = chunk.end
                    continue
            stream_end = self.tail.stream_end
            if stream_end is not None and self.stats.acked_offset >= stream_end:
                off, ic = stream_end, self.tail.icount_at(stream_end)
                self._send(sock, dec, encode(Frame(Kind.END, off, ic, stamp=now_us())), offset)
                self.stats.finished = True
                self.stats.state = "finished"
                log.info("log ended at offset %d, icount %d; backup has all of it", off, ic)
                return

    def _send(self, sock: socket.socket, dec: FrameDecoder, data: bytes, sent: int) -> None:
        """sendall that keeps listening: while the backup takes nothing (a full send buffer:
        a dead or cut-off backup), read its acks and judge its silence, so that this side finds
        it silent within the timeout, as the backup would find this side. `sent`: as for
        _read_acks."""
        view, looked = memoryview(data), time.monotonic()
        while view:
            if select.select([], [sock], [], self.heartbeat_s)[1]:
                view = view[sock.send(view[:PIECE]):]
                continue
            looked = held_up(looked, self.stats.live, "sender")
            self._read_acks(sock, dec, sent)
            if self.stats.live.silent():
                raise ChannelError(f"backup silent for {self.timeout_s:g} s "
                                   "(it takes no data)")

    def _send_chunk(self, sock: socket.socket, dec: FrameDecoder, chunk) -> None:
        data = self._data.encode(Frame(Kind.DATA, chunk.offset, chunk.icount,
                                       self.tail.read(chunk), stamp=int(chunk.recorded_at * 1e6),
                                       block=chunk.block), private=bool(chunk.net_keys))
        if self.corrupt_next.is_set():
            self.corrupt_next.clear()
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
            log.warning("fault injection: corrupted the DATA frame at offset %d", chunk.offset)
        if self.truncate_next.is_set():
            sock.sendall(data[:len(data) // 2])
            self.truncated = {"offset": chunk.offset, "icount": self.tail.icount_at(chunk.offset),
                              "sent": len(data) // 2, "length": len(data)}
            log.warning("fault injection: sent half of the DATA frame at offset %d; mute from now",
                        chunk.offset)
            self._stop.wait()
            raise ChannelError("muted by fault injection")
        self._send(sock, dec, data, chunk.offset)
        sent = time.time()
        for key in chunk.net_keys:
            t0 = self.inbound_times.pop(key, None)
            if t0 is not None:
                self.stats.staleness.append(sent - t0)
        self.lag.recorded(chunk.icount, chunk.recorded_at)
        self.stats.sent_bytes += chunk.length
        self.stats.wire_bytes += len(data)
        self.stats.sent_offset = chunk.end

    def _read_acks(self, sock: socket.socket, dec: FrameDecoder, sent: int) -> None:
        """Take the backup's ACKs and heartbeats; `sent` is the end of what this session sent
        (or the HELLO's offset): an ACK past it is not the backup's, and would release output
        for log the backup never had."""
        while True:
            t = time.monotonic()
            if not readable(sock, 0):
                self.stats.live.nothing(t)
                return
            data = sock.recv(65536)
            if not data:
                raise ChannelError("backup closed the connection")
            for f in dec.feed(data):
                if f.kind == Kind.ACK and f.offset > sent:
                    self.stats.refused_acks += 1
                    raise ChannelError(f"ACK of offset {f.offset} beyond what was sent ({sent}): "
                                       "protocol error, dropping the connection")
                note_heard(self.stats.live, time.monotonic(), "backup")
                if f.block:
                    self._lease(f.block / 1e6)
                if f.kind == Kind.ACK:
                    self._acked(f.offset)
                    self.stats.backup_icount = f.icount
                    self.lag.replayed(f.icount)
                elif f.block:
                    self._tell_gate()   # a renewed lease may release output

    def _lease(self, sent: float) -> None:
        """The backup heard this side at or after `sent` (monotonic): output may leave until
        sent + timeout_s. An echo from the future (a confused peer) renews nothing."""
        if sent <= time.monotonic():
            self.stats.lease_until = max(self.stats.lease_until, sent + self.timeout_s)

    def _acked(self, offset: int) -> None:
        self.stats.acked_offset = max(self.stats.acked_offset, offset)
        self.tail.forget_before(self.stats.acked_offset)
        self._tell_gate()

    def _tell_gate(self) -> None:
        if self.on_ack is not None:
            self.on_ack(self.stats.acked_offset, self.stats.lease_until)
