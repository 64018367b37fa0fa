"""The backup role: receive the log, feed a replaying QEMU, hold it inside what it has."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from .config import PairConfig
from .domain import Mode, render
from .feeder import Feeder
from .framing import Frame
from .layout import domain_name, guest_spec, paths
from .prepare import qemu_ids
from .receiver import Receiver
from .replayer import ReplayController
from .virt import Guest, Host

log = logging.getLogger("ftorch.backup")


class Backup:
    def __init__(self, cfg: PairConfig, key: str, host: Host) -> None:
        self.cfg, self.key, self.host = cfg, key, host
        self.paths = paths(cfg, key)
        self.guest: Guest | None = None
        self.controller: ReplayController | None = None
        self.stamps: deque[tuple[int, float]] = deque()   # for lag: see ReplayController
        self.feeder = Feeder(self.paths.fifo, self.paths.spool, *qemu_ids())
        me = cfg.host(key)
        self.receiver = Receiver((me.address, cfg.channel.port), cfg.pair, self.feeder,
                                 cfg.channel.timeout_s, self._icount, self._on_data)
        self._started = threading.Event()
        self._starter = threading.Thread(target=self._start_when_fed, name="starter", daemon=True)

    def start(self) -> None:
        log.info("backup for %s (QEMU %s), waiting for the log", self.cfg.pair, self.host.check_qemu())
        self.receiver.start()
        self._starter.start()

    def _icount(self) -> int:
        return self.controller.icount if self.controller else 0

    def _on_data(self, frame: Frame) -> None:
        self.stamps.append((frame.icount, frame.stamp / 1e6))

    def _start_when_fed(self) -> None:
        """QEMU reads the first event while starting: start it only once there is enough."""
        margin = self.cfg.replay.margin_instructions
        with self.feeder.changed:
            self.feeder.changed.wait_for(lambda: self.feeder.icount > 2 * margin or self.feeder.final)
        spec = guest_spec(self.cfg, self.key, Mode.REPLAY)
        self.guest = self.host.start(render(spec), paused=True)
        self.controller = ReplayController(self.guest, self.feeder, margin,
                                           self.cfg.replay.break_interval_ms / 1000, self.stamps)
        self.controller.start()
        self._started.set()
        log.info("replaying %s from the stream", spec.name)

    def wait_finished(self, timeout: float) -> dict[str, Any]:
        """Wait until the backup has replayed the whole (ended) log."""
        deadline = time.monotonic() + timeout
        self._started.wait(timeout)
        c = self.controller
        while c is not None and not c.finished and c.error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return {"finished": bool(c and c.finished), "icount": c.icount if c else 0,
                "error": c.error if c else None}

    def close(self) -> None:
        if self.controller:
            self.controller.stop()
        self.receiver.stop()
        self.host.destroy(domain_name(self.cfg, self.key))
        self.feeder.close()

    def status(self) -> dict[str, Any]:
        r, c = self.receiver.stats, self.controller
        icount = c.icount if c else 0
        return {
            "role": "backup",
            "guest": (c.status if c and not c.error else ("exited" if c else "waiting for log")),
            "icount": icount, "fed_offset": self.feeder.offset, "fed_icount": self.feeder.icount,
            "received_offset": self.feeder.received,
            "received_icount": self.feeder.received_icount,
            "log_ended": self.feeder.ended, "feed_error": self.feeder.error,
            "replay_finished": bool(c and c.finished),
            "replay_error": c.error if c else None,
            "channel": {"state": r.state, "received_bytes": r.received_bytes,
                        "acked_offset": self.feeder.received, "connects": r.connects,
                        "corrupt_frames": r.corrupt_frames, "last_error": r.last_error,
                        "partial_dropped": r.partial_dropped},
            "primary_icount": r.primary_icount,
            "lag_instructions": max(0, r.primary_icount - icount),
            "lag_seconds": c.lag_seconds() if c else None,
            "break_hits": c.break_hits if c else 0,
        }
