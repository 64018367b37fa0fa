"""The guest NIC's frames between QEMU's stream netdev (a unix socket) and a tap on the LAN.

QEMU's stream netdev frames each packet with a big-endian u32 length. The agent connects to
QEMU's socket and copies frames both ways; inbound frames are timestamped so the log's
staleness can be measured when they show up in the log.

The tap (LanPort) outlives a bridge: a clone restarts the recorder, and a go-live opens the tap
before its recorder exists. While the port is open and nobody reads it, inbound frames wait in
the tap's queue (its txqueuelen, 1000 frames); a tap that nobody holds drops them, and each
frame a client's TCP loses doubles its next wait.
"""
from __future__ import annotations

import fcntl
import logging
import os
import select
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

from ftorch.channel.logtail import frame_key
from ftorch.gate.announce import rarp_announce
from ftorch.gate.holder import InboundHold
from ftorch.gate.outputgate import OutputGate
from ftorch.status import Histogram

log = logging.getLogger("ftorch.netbridge")
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_TRACKED = 10000
# Frames read ahead from the tap while the first waits (the lag bound): their arrival times
# bound their wait. Beyond this they stay in the tap's own queue.
MAX_READ_AHEAD = 1000


def open_tap(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


class LanPort:
    """This host's tap on the LAN, handed from one bridge to the next (see above)."""

    def __init__(self, fd: int) -> None:
        self.fd: int | None = fd
        # read from the tap, not yet given to a guest, each with when it arrived (monotonic)
        self.held: deque[tuple[bytes, float]] = deque()

    @classmethod
    def open(cls, tap: str) -> LanPort:
        return cls(open_tap(tap))

    def announce(self, mac: str) -> None:
        """Turn the LAN's traffic for `mac` towards this port (before the guest runs here)."""
        if self.fd is not None:
            os.write(self.fd, rarp_announce(mac))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise ConnectionError("QEMU closed the netdev socket")
        buf += part
    return bytes(buf)


class GatedOutput:
    """The output gate on a real port: frames leave through `write` as acks allow, in order."""

    def __init__(self, write: Callable[[bytes], object], max_held: int) -> None:
        """Times are monotonic: the gate compares them with the channel's leases."""
        self.gate = OutputGate(max_held)
        self.write = write
        self.delays: deque[float] = deque(maxlen=20000)
        self.histogram = Histogram()
        self.ungated = False
        self._lock = threading.Lock()

    def submit(self, frame: bytes, required: int) -> None:
        with self._lock:
            if self.ungated:
                self.write(frame)
                self.gate.released += 1
                return
            self._emit(self.gate.submit(frame, required, time.monotonic()))

    def close(self) -> None:
        """Fence: nothing more leaves."""
        with self._lock:
            self.gate.open = False

    def ungate(self) -> None:
        """Alone and owner of the pair: release what is held and stop gating."""
        with self._lock:
            self.gate.open = True
            self._emit(self.gate.release_all(time.monotonic()))
            self.ungated = True

    def regate(self, acked: int) -> None:
        """A new backup holds the guest's state up to log offset `acked` (a clone): from now on
        every frame waits for the backup's acknowledgement again."""
        with self._lock:
            self.gate.open = True
            self.gate.acked = acked
            self.gate.require_lease()
            self.ungated = False

    def ack(self, offset: int, lease_until: float | None = None) -> None:
        """The backup acknowledged the log to offset; lease_until: see OutputGate."""
        with self._lock:
            self._emit(self.gate.ack(offset, time.monotonic(), lease_until))

    def require_lease(self) -> None:
        with self._lock:
            self.gate.require_lease()

    def _emit(self, frames: list[tuple[bytes, float]]) -> None:
        for frame, delay in frames:
            self.write(frame)
            self.delays.append(delay)
            self.histogram = self.histogram.observe(delay)


class NetBridge:
    def __init__(self, qemu_socket: str, tap: str,
                 log_size: Callable[[], int] | None = None, gated: bool = True,
                 max_held: int = 4096, port: LanPort | None = None,
                 hold: InboundHold | None = None) -> None:
        """log_size given: outbound frames go through the output gate, each needing the log
        acknowledged up to the log's size when the frame came out of QEMU; gated False: the gate
        starts open (unprotected) until `gated.regate`. port: the tap, already open (handed
        over by the previous bridge, or opened early by a go-live); None: open `tap`. hold:
        the lag bound, which makes inbound frames wait while the backup trails."""
        self.qemu_socket = qemu_socket
        self.tap = tap
        self.log_size = log_size
        self.start_gated = gated
        self.max_held = max_held              # the output gate's limit (limits.gate_frames)
        self.hold = hold
        self.gated: GatedOutput | None = None
        self.inbound_times: dict[bytes, float] = {}
        self.frames_in = 0
        self.frames_out = 0
        # cleared: inbound frames wait in the agent (a snapshot needs QEMU's event queue empty)
        self.inbound_open = threading.Event()
        self.inbound_open.set()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self.port = port
        self._tap_fd: int | None = None
        self._wake_r, self._wake_w = os.pipe()   # ends the LAN reader's wait on stop
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(self.qemu_socket)
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._sock = sock
        if self.port is None or self.port.fd is None:
            self.port = LanPort.open(self.tap)
        self._tap_fd = self.port.fd
        if self.log_size is not None:
            self.gated = GatedOutput(self._write_lan, self.max_held)
            self.gated.ungated = not self.start_gated
        for fn, name in ((self._to_lan, "net-out"), (self._to_guest, "net-in")):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _write_lan(self, frame: bytes) -> None:
        if self._tap_fd is not None:   # None: stopped; the frame is dropped like on a dead host
            os.write(self._tap_fd, frame)

    def stop(self, keep_port: bool = False) -> LanPort | None:
        """Stop both directions. keep_port: return the tap, still open, with any frame read
        and not delivered, for the next bridge on this host; otherwise let go of it, so that a
        new bridge can attach (a tap takes one reader)."""
        if self._stop.is_set():
            return None
        self._stop.set()
        self.inbound_open.set()
        os.write(self._wake_w, b"x")
        if self._sock:
            try:   # wakes a thread blocked in recv on it (close alone does not)
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass   # QEMU is gone already
            self._sock.close()
        for t in self._threads:
            t.join(timeout=5)
        port, self._tap_fd = self.port, None
        if not any(t.is_alive() for t in self._threads):
            for fd in (self._wake_r, self._wake_w):
                os.close(fd)
            if port is not None and not keep_port:
                port.close()
        return port if keep_port else None

    def _to_lan(self) -> None:
        assert self._sock and self._tap_fd is not None
        try:
            while not self._stop.is_set():
                (n,) = struct.unpack(">I", _recv_exact(self._sock, 4))
                frame = _recv_exact(self._sock, n)
                if self.gated is not None and self.log_size is not None:
                    self.gated.submit(frame, self.log_size())
                else:
                    os.write(self._tap_fd, frame)
                self.frames_out += 1
        except OSError as e:
            if not self._stop.is_set():
                log.warning("guest -> LAN stopped: %s", e)

    def _to_guest(self) -> None:
        assert self._sock and self.port is not None and self._tap_fd is not None
        held = self.port.held
        try:
            while not self._stop.is_set():
                if not held:
                    ready, _, _ = select.select([self._tap_fd, self._wake_r], [], [])
                    if self._wake_r in ready:
                        break
                self._read_ahead(held)
                self.inbound_open.wait()
                if self.hold is not None:
                    self.hold.wait(self._stop, since=held[0][1])
                if self._stop.is_set():
                    break            # the frame stays held for the next bridge on this port
                frame, arrived = held.popleft()
                if len(self.inbound_times) > MAX_TRACKED:
                    self.inbound_times.clear()
                self.inbound_times[frame_key(frame)] = time.time()
                try:
                    self._sock.sendall(struct.pack(">I", len(frame)) + frame)
                except OSError:
                    held.appendleft((frame, arrived))
                    raise
                self.frames_in += 1
        except OSError as e:
            if not self._stop.is_set():
                log.warning("LAN -> guest stopped: %s", e)

    def _read_ahead(self, held: deque[tuple[bytes, float]]) -> None:
        """Take every frame the tap has ready (up to MAX_READ_AHEAD held), stamped with now."""
        assert self._tap_fd is not None
        while len(held) < MAX_READ_AHEAD:
            ready, _, _ = select.select([self._tap_fd], [], [], 0)
            if not ready:
                return
            held.append((os.read(self._tap_fd, 65536), time.monotonic()))
