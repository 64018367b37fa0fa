"""The bridge's side of the lag bound: an inbound frame waits here while gate/lagbound.py's
rules say the backup trails too far."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ftorch.gate.lagbound import HoldPolicy, admit
from ftorch.hysteresis import Switch
from ftorch.status import HoldStatus

log = logging.getLogger("ftorch.lagbound")

# How often a waiting frame looks at the lag again: the backup reports its position about
# every 100 ms, so a finer step only costs CPU.
POLL_S = 0.01


class InboundHold:
    def __init__(self, lag: Callable[[], float | None], p: HoldPolicy) -> None:
        self.lag, self.policy = lag, p
        self.state = Switch.OFF
        self.episodes = 0
        self.frames_held = 0
        self.held_s = 0.0            # frame-seconds of waiting, all episodes
        self.longest_s = 0.0
        self.timeouts = 0            # frames let in at max_hold_s while still over the bound
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event, since: float | None = None) -> None:
        """Return when the next inbound frame may go to the guest (or the bridge stops).
        since: when the frame arrived (time.monotonic()); max_hold_s counts from there, so
        frames queued behind a held one do not each wait max_hold_s again."""
        start = time.monotonic() if since is None else since
        held = False
        while True:
            lag = self.lag()
            nxt, go = admit(self.policy, self.state, lag, time.monotonic() - start)
            self._moved(nxt, lag)
            if go or stop.is_set():
                break
            held = True
            stop.wait(POLL_S)
        if held and not stop.is_set():   # a stopping bridge does not deliver the frame
            self._count(time.monotonic() - start, timed_out=self.state is Switch.ON)

    def _moved(self, nxt: Switch, lag: float | None) -> None:
        if nxt is self.state:
            return
        if nxt is Switch.ON:
            self.episodes += 1
            log.info("backup %.2f s behind (bound %.2f s): the guest's inbound frames wait",
                     lag or 0.0, self.policy.bound_s)
        else:
            log.info("backup back within %.2f s: inbound frames flow", self.policy.release_s)
        self.state = nxt

    def _count(self, waited: float, timed_out: bool) -> None:
        with self._lock:
            self.frames_held += 1
            self.held_s += waited
            self.longest_s = max(self.longest_s, waited)
            self.timeouts += timed_out

    def status(self) -> HoldStatus:
        with self._lock:
            return HoldStatus(bound_s=self.policy.bound_s, holding=self.state is Switch.ON,
                              episodes=self.episodes, frames_held=self.frames_held,
                              held_s=round(self.held_s, 3), longest_s=round(self.longest_s, 3),
                              timeouts=self.timeouts)
