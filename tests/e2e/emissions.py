"""Who emits the guest's frames, seen on each host apart from ftorch's own status and from the
LAN: the frames a host's agent writes into its tap (the tap's receive counter in the host's
namespace), sampled every few milliseconds. A host cut off from the LAN still counts what it
tries to send, so a second live copy shows from either side of a partition."""
from __future__ import annotations

import subprocess
import threading
import time
from bisect import bisect_right

from ftorch.host import lab

EVERY_S = 0.002


def tap_frames(net_dev: str) -> int:
    """Frames the tap has taken from its owner (/proc/net/dev's receive packets)."""
    for line in net_dev.splitlines():
        name, _, counters = line.partition(":")
        if name.strip() == lab.TAP:
            return int(counters.split()[1])
    raise AssertionError(f"no {lab.TAP} in this namespace")


class Emissions:
    """`with Emissions() as seen:` samples both hosts' taps until the block ends."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {h.key: [] for h in lab.HOSTS}   # when a count rose
        self.rises: dict[str, list[int]] = {h.key: [] for h in lab.HOSTS}     # ... by how much
        self.rounds = 0
        self._anchors: dict[str, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emissions", daemon=True)

    def __enter__(self) -> Emissions:
        for h in lab.HOSTS:   # a process in each host's namespace, whose /proc/PID/net we read
            self._anchors[h.key] = subprocess.Popen(["ip", "netns", "exec", h.netns,
                                                     "sleep", "infinity"])
        for key in self._anchors:
            deadline = time.monotonic() + 10
            while True:   # until `ip` has entered the namespace (the tap shows)
                try:
                    tap_frames(self._read(key))
                    break
                except AssertionError:
                    assert time.monotonic() < deadline, f"host {key}'s namespace has no tap"
                    time.sleep(0.01)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for p in self._anchors.values():
            p.kill()
            p.wait()

    def _read(self, key: str) -> str:
        with open(f"/proc/{self._anchors[key].pid}/net/dev") as f:
            return f.read()

    def _run(self) -> None:
        last = {k: tap_frames(self._read(k)) for k in self._anchors}
        while not self._stop.wait(EVERY_S):
            for key in self._anchors:
                n = tap_frames(self._read(key))
                if n > last[key]:
                    self.rises[key].append(n - last[key])
                    self.times[key].append(time.time())
                last[key] = n
            self.rounds += 1

    def sync(self) -> None:
        """Return once a whole sampling round has begun after this call."""
        start = self.rounds
        while self.rounds < start + 2:
            time.sleep(EVERY_S)

    def first(self, key: str, after: float) -> float | None:
        """When host `key` first emitted after `after` (wall clock), or None."""
        t = self.times[key]
        i = bisect_right(t, after)
        return t[i] if i < len(t) else None

    def count(self, key: str, after: float = 0.0) -> int:
        """Frames host `key` emitted after `after` (wall clock)."""
        return sum(self.rises[key][bisect_right(self.times[key], after):])

    def since(self, key: str, after: float) -> list[float]:
        t = self.times[key]
        return t[bisect_right(t, after):]
