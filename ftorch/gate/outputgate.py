"""The output rule, sans-I/O: an outbound frame leaves only once the backup has acknowledged
every log byte recorded before the guest sent it.

`required` for a frame is the log file's size when the frame came out of QEMU: the flush shim
flushes the log inside QEMU's sendmsg() on the netdev socket, before the frame is written, so
that size covers every event up to the output (and possibly a little more, which only delays).
Frames leave in the order the guest sent them.

A lease bounds when they may leave, too: the backup takes the primary for dead only after
hearing nothing for the channel's timeout, counted from a moment after the primary sent its
last heartbeat; so an acknowledgement that echoes a heartbeat sent at s lets output leave until
s + timeout on the primary's own clock, and never later. A primary frozen (SIGSTOP, a stalled
host) past that time may be dead to its backup, which may be live by now: the acks waiting in
its socket when it wakes echo old heartbeats and release nothing (channel/sender.py).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    frame: bytes
    required: int      # log offset the backup must have acknowledged
    arrived: float     # when the frame came out of QEMU


class OutputGate:
    def __init__(self, max_held: int = 4096) -> None:
        """max_held: frames held at most; more are dropped, as a full NIC queue would (the
        guest's TCP sends them again), never let out early."""
        self._q: deque[Held] = deque()
        self.max_held = max_held
        self.acked = 0
        self.released = 0
        self.dropped = 0
        self.open = True   # False: fenced, nothing leaves (issue 4's arbiter decides)
        self.lease_until: float | None = None   # None: no lease needed (tests, no backup)
        self.lease_waits = 0   # times acked frames waited for a lease to be renewed

    @property
    def held(self) -> int:
        return len(self._q)

    def submit(self, frame: bytes, required: int, now: float) -> list[tuple[bytes, float]]:
        """Queue a frame from the guest; return what may leave now, with each one's delay."""
        if len(self._q) >= self.max_held:
            self.dropped += 1
        else:
            self._q.append(Held(frame, required, now))
        return self._drain(now)

    def ack(self, offset: int, now: float,
            lease_until: float | None = None) -> list[tuple[bytes, float]]:
        """The backup acknowledged the log up to offset (and, with lease_until, renewed the
        lease until then); return what may leave now."""
        self.acked = max(self.acked, offset)
        if lease_until is not None:
            self.lease_until = max(self.lease_until or 0.0, lease_until)
        return self._drain(now)

    def require_lease(self) -> None:
        """From now on nothing leaves without a lease that is still running."""
        self.lease_until = self.lease_until or 0.0

    def leased(self, now: float) -> bool:
        return self.lease_until is None or now < self.lease_until

    def release_all(self, now: float) -> list[tuple[bytes, float]]:
        """This copy won the pair with no backup left: the output rule no longer binds it."""
        out = [(h.frame, now - h.arrived) for h in self._q]
        self._q.clear()
        self.released += len(out)
        return out

    def _drain(self, now: float) -> list[tuple[bytes, float]]:
        out = []
        while self.open and self._q and self._q[0].required <= self.acked:
            if not self.leased(now):
                self.lease_waits += 1
                break
            h = self._q.popleft()
            out.append((h.frame, now - h.arrived))
        self.released += len(out)
        return out
