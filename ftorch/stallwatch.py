"""Catch a channel loop in the act of being held up, and log where it is stuck.

A loop that does not come round for over half the failover timeout is a near false failover
(liveness.held_up logs it once the loop resumes, when the cause is gone). A watcher thread
samples the stuck loop's stack while it is stuck: a blocking call (a write, a lock, a syscall)
shows up there; a host that stalls every thread shows up as the watcher's own lateness, logged
with the stack it finally sees. A loop is watched from its first tick until it rests.
"""
from __future__ import annotations

import gc
import logging
import sys
import threading
import time
import traceback
from dataclasses import dataclass

log = logging.getLogger("ftorch.stallwatch")
LOOK_S = 0.05          # how often the watcher looks
FRAMES = 6             # innermost frames named in a report
GC_SLOW_S = 0.1        # garbage collections longer than this are logged


@dataclass
class _Loop:
    name: str
    limit_s: float         # rounds further apart than this are reported
    last: float            # monotonic time of the last round
    reported: bool = False


_loops: dict[int, _Loop] = {}
_lock = threading.Lock()
_watcher: threading.Thread | None = None


def tick(name: str, limit_s: float) -> None:
    """The calling thread's loop went round once; report it if the next round is late."""
    global _watcher
    ident = threading.get_ident()
    with _lock:
        _loops[ident] = _Loop(name, limit_s, time.monotonic())
        if _watcher is None:
            _watcher = threading.Thread(target=_watch, name="stallwatch", daemon=True)
            _watcher.start()


def rest() -> None:
    """The calling thread's loop is over (or waits on purpose): stop watching it."""
    with _lock:
        _loops.pop(threading.get_ident(), None)


def _watch() -> None:
    looked = time.monotonic()
    while True:
        time.sleep(LOOK_S)
        now = time.monotonic()
        late, looked = now - looked - LOOK_S, now
        for ident, loop in _stuck(now):
            frame = sys._current_frames().get(ident)
            where = " <- ".join(_frames(frame)) if frame is not None else "(gone)"
            log.warning("%s thread stuck for %.2f s (the watcher itself %.2f s late), in %s",
                        loop.name, now - loop.last, late, where)


def _stuck(now: float) -> list[tuple[int, _Loop]]:
    alive = {t.ident for t in threading.enumerate()}
    out = []
    with _lock:
        for ident in [i for i in _loops if i not in alive]:
            del _loops[ident]
        for ident, loop in _loops.items():
            if not loop.reported and now - loop.last > loop.limit_s:
                loop.reported = True
                out.append((ident, loop))
    return out


def _frames(frame) -> list[str]:
    stack = traceback.extract_stack(frame)[-FRAMES:]
    return [f"{'/'.join(f.filename.split('/')[-2:])}:{f.lineno} {f.name}"
            for f in reversed(stack)]


_gc_began = 0.0


def watch_gc() -> None:
    """Log every garbage collection that holds the process (all its threads) for long."""
    if _gc_pause not in gc.callbacks:
        gc.callbacks.append(_gc_pause)


def _gc_pause(phase: str, info: dict) -> None:
    global _gc_began
    if phase == "start":
        _gc_began = time.monotonic()
    elif (took := time.monotonic() - _gc_began) > GC_SLOW_S:
        log.warning("garbage collection of generation %d held every thread for %.2f s "
                    "(%d objects tracked, %d collected)", info["generation"], took,
                    len(gc.get_objects(info["generation"])), info["collected"])
