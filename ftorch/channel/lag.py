"""End-to-end replication lag: how much later than the primary recorded a point of the log the
backup replayed it. One meter on each side: the backup's from its own replay position, the
primary's from the positions the backup's acknowledgements report.
"""
from __future__ import annotations

import threading
import time
from collections import deque


class LagMeter:
    def __init__(self) -> None:
        # (icount at a chunk's end, when the primary recorded that end: the log's own clock),
        # appended as chunks pass; trimmed as the backup passes them, so it holds only the log
        # between the backup's position and the newest chunk
        self._stamps: deque[tuple[int, float]] = deque()
        self._lock = threading.Lock()
        self.icount = 0
        self.reached_at = 0.0      # wall clock when the backup reached self.icount

    def recorded(self, icount: int, at: float) -> None:
        """A chunk ending at icount, recorded at wall-clock time `at`, is on its way."""
        with self._lock:
            if not self._stamps or icount > self._stamps[-1][0]:   # a resend is known already
                self._stamps.append((icount, at))

    def replayed(self, icount: int, at: float | None = None) -> None:
        """The backup is at icount (seen at wall-clock time `at`, default now). Only a move
        counts: a backup waiting at its break while the primary idles does not fall behind."""
        if icount == self.icount:
            return
        with self._lock:
            self.icount, self.reached_at = icount, at if at is not None else time.time()
            while len(self._stamps) > 1 and self._stamps[1][0] <= icount:
                self._stamps.popleft()

    def seconds(self) -> float | None:
        """The lag when the backup reached its position: None before any log has passed."""
        with self._lock:
            if not self._stamps or not self.reached_at:
                return None
            # the first chunk ending at or past the backup's position: replayed() trims the
            # stamps so that only the first one can end before it (O(1): the bridge asks for
            # every inbound frame, gate/holder.py)
            first = self._stamps[0]
            if first[0] < self.icount and len(self._stamps) > 1:
                first = self._stamps[1]
            return max(0.0, self.reached_at - first[1])

    def behind(self, slack: int, now: float | None = None) -> float | None:
        """How long ago the oldest log the backup has not replayed was recorded: 0 when it
        has replayed all but `slack` instructions of what was sent (it is held a margin short
        of what it holds); None before any log has passed. Unlike seconds() this grows while
        the backup stands still, and falls to 0 once it has caught up with a recorder that
        stopped recording (the lag bound's throttle acts on it, agent/throttle.py)."""
        with self._lock:
            if not self._stamps or not self.reached_at:
                return None
            for icount, at in self._stamps:
                if icount > self.icount + slack:
                    return max(0.0, (time.time() if now is None else now) - at)
            return 0.0

    def __len__(self) -> int:
        return len(self._stamps)
