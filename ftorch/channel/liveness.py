"""How long a channel peer has been silent, and how close a healthy peer came to the timeout.

Liveness is pure: the callers pass `time.monotonic()` readings. Both ends keep one: the primary's
sender hears the backup's ACKs and BEATs, the backup's receiver the primary's DATA and BEATs.
Silence counts from the last frame received (or from a proven connection, before the first
frame), so a peer frozen after a TCP connect (its kernel still accepts) is not taken for a live
one; and it counts only up to the last time this side looked and found nothing (an empty
socket, no connection). A side whose own threads were held up (a starved or frozen host: seen
here for 0.3-0.55 s on the 2-core lab machine, both agents at once) has not looked meanwhile:
the frames its peer sent are waiting in its socket, and it must read them before it can call
the peer silent. When both hosts stall at once (the lab's two hosts are one machine) the peer
sent nothing meanwhile either: so after this side's own loop was held up, silence counts again
only from when it resumed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ftorch import stallwatch

log = logging.getLogger("ftorch.channel")


@dataclass
class Liveness:
    last_heard: float = 0.0      # monotonic time of the last proof of life; 0: never heard
    looked: float = 0.0          # the last time this side looked for the peer and found nothing
    resumed: float = 0.0         # when this side's listening loop last resumed after a hold-up
    longest_gap_s: float = 0.0   # longest silence between two proofs of life so far
    close_calls: int = 0         # silences past half the timeout that ended (a near failover)
    timeout_s: float = 0.0       # the failover timeout the close calls are counted against

    def heard(self, now: float) -> float:
        """A frame arrived at `now`; returns the silence it ended if that was a close call
        (past half the timeout, within it), else 0, so the caller can log it."""
        close = 0.0
        if self.last_heard:
            gap = now - self.last_heard
            self.longest_gap_s = max(self.longest_gap_s, gap)
            if self.timeout_s and self.timeout_s / 2 < gap <= self.timeout_s:
                self.close_calls += 1
                close = gap
        self.last_heard = now
        return close

    def nothing(self, now: float) -> None:
        """This side looked at `now` (an empty socket, a failed connection) and heard nothing."""
        self.looked = max(self.looked, now)

    def held_up(self, now: float) -> None:
        """This side's listening loop did not come round for a while and resumes at `now`."""
        self.resumed = now

    def silent_for(self) -> float:
        """The silence this side has seen for itself: from the last proof of life (or its own
        resumption, if later) to the last look that found nothing; 0 if never heard."""
        if not self.last_heard:
            return 0.0
        return max(0.0, self.looked - max(self.last_heard, self.resumed))

    def silent(self) -> bool:
        """The peer was heard once and has been silent longer than the timeout since."""
        return self.silent_for() > self.timeout_s


def held_up(last: float, live: Liveness, who: str) -> float:
    """Once a round of a channel loop: a round that did not come for over half the timeout
    means this side was held up (a starved or frozen host), so its silence restarts (see
    above); return now, the next `last`."""
    now = time.monotonic()
    stallwatch.tick(who, live.timeout_s / 2)
    if now - last > live.timeout_s / 2:
        live.held_up(now)
        log.warning("%s thread held up for %.3f s (timeout %g s): silence counts from now",
                    who, now - last, live.timeout_s)
    return now


def note_heard(live: Liveness, now: float, peer: str) -> None:
    """live.heard, and a log line when the silence it ended was a close call."""
    if gap := live.heard(now):
        log.warning("the %s was silent for %.3f s (timeout %g s)", peer, gap, live.timeout_s)
