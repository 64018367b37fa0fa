"""Freezing the recorder: one QEMU frozen for several reasons at once, and the lag bound's duty
cycle (rr/throttle.py's rules) that is one of them."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from ftorch.errors import FtorchError, VirtError
from ftorch.host.virt import Guest
from ftorch.hysteresis import Switch
from ftorch.rr.throttle import ThrottlePolicy, pace
from ftorch.status import ThrottleStatus

log = logging.getLogger("ftorch.throttle")

DISK, LAG = "disk", "lag"      # why a recorder is frozen
WINDOW_S = 10.0                # the slowdown in status is over this much recent time


class Freezer:
    """The recorder runs only while no reason holds it (a full disk, the lag bound). A barred
    reason cannot hold it: QMP needs a running QEMU (a handover's `stop`, a clone's `savevm`),
    so those bar the lag bound first."""

    def __init__(self, guest: Callable[[], Guest | None]) -> None:
        self._guest = guest
        self._held: dict[str, float] = {}        # reason -> since (monotonic)
        self._barred: set[str] = set()
        self.total_s: dict[str, float] = {}      # frozen time by reason, ended holds only
        self._lock = threading.Lock()

    def hold(self, reason: str) -> bool:
        """Freeze for `reason`; False when it may not (barred, or no QEMU runs)."""
        with self._lock:
            if reason in self._barred:
                return False
            if reason in self._held:
                return True
            g = self._guest()
            if g is None:
                return False
            if not self._held:
                try:
                    g.freeze()
                except VirtError:   # its QEMU is gone: nothing to hold
                    return False
            self._held[reason] = time.monotonic()
            return True

    def release(self, reason: str) -> float:
        """Stop holding for `reason`: the seconds it held (0 if it did not)."""
        with self._lock:
            return self._release(reason)

    def _release(self, reason: str) -> float:
        since = self._held.pop(reason, None)
        if since is None:
            return 0.0
        if not self._held:
            g = self._guest()
            if g is not None:
                g.thaw()
        held = time.monotonic() - since
        self.total_s[reason] = self.total_s.get(reason, 0.0) + held
        return held

    def bar(self, reason: str) -> None:
        with self._lock:
            self._barred.add(reason)
            self._release(reason)

    def unbar(self, reason: str) -> None:
        with self._lock:
            self._barred.discard(reason)

    def holds(self, reason: str) -> bool:
        return reason in self._held

    def release_all(self) -> None:
        with self._lock:
            for reason in list(self._held):
                self._release(reason)


class Throttle:
    """Every period: read the backup's lag, and freeze the recorder for the rules' share of it."""

    def __init__(self, lag: Callable[[], float | None], freezer: Freezer, p: ThrottlePolicy,
                 period_s: float) -> None:
        self.lag, self.freezer, self.policy, self.period_s = lag, freezer, p, period_s
        self.state = Switch.OFF
        self.share = 0.0
        self.episodes = 0
        self.slowed_s = 0.0            # time spent slowed, ended episodes
        self._slowed_since = 0.0
        self._recent: deque[tuple[float, float]] = deque()   # (end of a freeze, its length)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="throttle", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.freezer.release(LAG)
        self._moved(Switch.OFF, None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._cycle()
            except FtorchError as e:   # the guest went away under us: the next cycle sees it
                log.warning("throttle: %s", e)
                self.freezer.release(LAG)
                self._stop.wait(self.period_s)

    def _cycle(self) -> None:
        lag = self.lag()
        nxt, share = pace(self.policy, self.state, lag)
        self._moved(nxt, lag)
        self.share = share
        if share > 0 and self.freezer.hold(LAG):
            self._stop.wait(share * self.period_s)
            held = self.freezer.release(LAG)
            with self._lock:
                self._recent.append((time.monotonic(), held))
            self._stop.wait((1 - share) * self.period_s)
        else:
            self._stop.wait(self.period_s)

    def _moved(self, nxt: Switch, lag: float | None) -> None:
        if nxt is self.state:
            return
        now = time.monotonic()
        if nxt is Switch.ON:
            self.episodes += 1
            self._slowed_since = now
            log.info("backup %.2f s behind: slowing the guest to keep it under %.2f s",
                     lag or 0.0, self.policy.bound_s)
        else:
            self.slowed_s += now - self._slowed_since
            log.info("backup back within %.2f s: the guest runs at full speed",
                     self.policy.release_s)
        self.state = nxt

    def slowdown(self) -> float:
        """The share of the last WINDOW_S the recorder was frozen by the bound."""
        now = time.monotonic()
        with self._lock:
            while self._recent and self._recent[0][0] < now - WINDOW_S:
                self._recent.popleft()
            return min(1.0, sum(held for _, held in self._recent) / WINDOW_S)

    def status(self) -> ThrottleStatus:
        slowed = self.state is Switch.ON
        now = time.monotonic()
        return ThrottleStatus(
            bound_s=self.policy.bound_s, slowed=slowed, share=round(self.share, 3),
            slowdown=round(self.slowdown(), 3), episodes=self.episodes,
            slowed_s=round(self.slowed_s + (now - self._slowed_since if slowed else 0.0), 3),
            frozen_s=round(self.freezer.total_s.get(LAG, 0.0), 3))
