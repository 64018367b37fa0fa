"""Backup side of the logging channel: accept the primary, check frames, feed the pipe, ack.

Only a peer that proves it holds the pair's credential (trust.py) gets a session. A connection
from any address but the primary's is closed unheard (the primary binds its source address), so
strangers on the LAN cannot fill the handshake slots; the primary's connections authenticate in
threads of their own within HANDSHAKE_S, and the newest authenticated one replaces the session
(the primary reconnected). Frames must arrive in order with valid checksums; anything
else (a corrupt frame, a gap) drops the connection before a byte of it reaches QEMU, and the
primary resumes from the last ack.
"""
from __future__ import annotations

import logging
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ftorch import stallwatch
from ftorch.channel.feeder import Feeder
from ftorch.channel.framing import Frame, FrameDecoder, Kind, encode, now_us
from ftorch.channel.liveness import Liveness, held_up, note_heard
from ftorch.channel.sockio import readable
from ftorch.channel.trust import HANDSHAKE_S
from ftorch.errors import ChannelError, FrameError
from ftorch.worker import Worker

log = logging.getLogger("ftorch.receiver")
MAX_PENDING = 8      # connections authenticating at once; more are closed unheard


@dataclass
class ReceiverStats:
    state: str = "listening"
    received_bytes: int = 0
    corrupt_frames: int = 0
    connects: int = 0
    primary_offset: int = 0        # what the primary has recorded (from its heartbeats/frames)
    primary_icount: int = 0
    live: Liveness = field(default_factory=Liveness)   # the primary's frames
    ended: bool = False
    last_error: str = ""
    partial_dropped: int = 0       # bytes of frames cut off by a broken connection (never fed)
    refused_peers: int = 0         # connections that did not prove the pair's credential
    last_refused: str = ""


class Receiver(Worker):
    thread_name = "receiver"

    def __init__(self, bind: tuple[str, int], pair: str, feeder: Feeder, timeout_s: float,
                 backup_icount: Callable[[], int], on_data: Callable[[Frame], None],
                 tls: ssl.SSLContext | None, peer_address: str | None,
                 heartbeat_s: float = 0.05) -> None:
        """tls: the pair's server context; None (plain TCP) only in benchmarks and tests.
        peer_address: the only source address admitted (None: any, in tests). heartbeat_s: the
        backup speaks at least this often, acks or not."""
        self.bind = bind
        self.pair = pair
        self.feeder = feeder
        self.timeout_s = timeout_s
        self.backup_icount = backup_icount
        self.on_data = on_data
        self.heartbeat_s = heartbeat_s
        self.stats = ReceiverStats()
        self.stats.live.timeout_s = timeout_s
        self.hold_acks = threading.Event()   # fault injection: receive and spool, but stay silent
        self.tls = tls
        self._last_sent = 0.0
        self.peer_address = peer_address
        self._srv = socket.create_server(bind, reuse_port=False)
        self._srv.settimeout(0.2)
        self._ready: queue.Queue[tuple[socket.socket, tuple[str, int]]] = queue.Queue()
        self._pending = threading.BoundedSemaphore(MAX_PENDING)
        self._acceptor = threading.Thread(target=self._accept, name="acceptor", daemon=True)
        self._echo = 0   # the last heartbeat clock the primary sent, echoed back
        super().__init__()

    def start(self) -> None:
        self._acceptor.start()
        super().start()

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self._acceptor.ident is not None:
            self._acceptor.join(timeout=timeout)
        self._srv.close()
        while not self._ready.empty():
            self._ready.get_nowait()[0].close()

    def _accept(self) -> None:
        while not self._stop.is_set() and not self.stats.ended:
            try:
                conn, addr = self._srv.accept()
            except TimeoutError:
                continue
            except OSError as e:
                log.error("logging channel listener failed: %s", e)
                return
            if self.peer_address is not None and addr[0] != self.peer_address:
                self._refuse(conn, addr, f"not the primary's address {self.peer_address}")
                continue
            if not self._pending.acquire(blocking=False):
                self._refuse(conn, addr, f"more than {MAX_PENDING} connections authenticating")
                continue
            threading.Thread(target=self._authenticate, args=(conn, addr), name="handshake",
                             daemon=True).start()

    def _authenticate(self, conn: socket.socket, addr: tuple[str, int]) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(HANDSHAKE_S)
                conn = self.tls.wrap_socket(conn, server_side=True)
            if self._stop.is_set():
                conn.close()          # authenticated after the receiver stopped
                return
            self._ready.put((conn, addr))
        except OSError as e:   # ssl.SSLError is one
            self._refuse(conn, addr, f"no valid pair credential ({e})")
        finally:
            self._pending.release()

    def _refuse(self, conn: socket.socket, addr: tuple[str, int], why: str) -> None:
        conn.close()
        self.stats.refused_peers += 1
        self.stats.last_refused = f"{addr[0]}:{addr[1]}: {why}"
        log.warning("logging channel: refused %s:%d: %s", addr[0], addr[1], why)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.stats.ended:
            t = time.monotonic()
            try:
                conn, addr = self._ready.get(timeout=self.heartbeat_s / 2)
            except queue.Empty:
                # no connection from the primary from t on (not "until now": a freeze here,
                # after the wait, would count as looking)
                self.stats.live.nothing(t)
                continue
            self.stats.live.heard(time.monotonic())   # it proved the credential: it is alive
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
        self._last_sent = time.monotonic()
        conn.sendall(encode(Frame(kind, self.feeder.received, self.backup_icount(), payload,
                                  stamp=now_us(), block=self._echo)))

    def _session(self, conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # for sends and for the rest of a TLS record: a host held up for a moment must not
        # make a send fail (the waits for data are _recv's, a heartbeat apart)
        conn.settimeout(2 * self.timeout_s)
        self._echo = 0
        hello = Frame(Kind.HELLO, self.feeder.received, self.feeder.received_icount, self.pair.encode(),
                      stamp=now_us())
        conn.sendall(encode(hello))
        self.stats.state = "streaming"
        dec = FrameDecoder()
        looked = time.monotonic()
        try:
            while not self._stop.is_set():
                looked = held_up(looked, self.stats.live, "receiver")
                t = time.monotonic()
                data = self._recv(conn)
                if data is None:
                    self.stats.live.nothing(t)   # empty from t on
                if data == b"":
                    raise ChannelError("primary closed the connection")
                if not self._ready.empty():
                    raise ChannelError("the primary opened a new connection; dropping this one")
                now = time.monotonic()
                if now - self._last_sent >= self.heartbeat_s:
                    self._send(conn, Kind.BEAT)
                if data is None:
                    if self.stats.live.silent():
                        raise ChannelError(f"primary silent for {self.timeout_s:g} s")
                    continue
                note_heard(self.stats.live, now, "primary")
                for frame in dec.feed(data):
                    if self._handle(conn, frame):
                        return
        finally:
            stallwatch.rest()
            if dec.pending:
                self.stats.partial_dropped += dec.pending
                log.warning("dropped %d bytes of a frame the connection cut off (after offset %d)",
                            dec.pending, self.feeder.received)

    def _recv(self, conn: socket.socket) -> bytes | None:
        """What the primary sent, or None after half a heartbeat without anything."""
        return conn.recv(1 << 20) if readable(conn, self.heartbeat_s / 2) else None

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
            self._echo = frame.block   # the primary's clock: its lease (gate/outputgate.py)
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
