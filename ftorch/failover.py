"""Failure detection and the arbiter race for one agent: drives roles.step with real events.

Watches the logging channel; when the peer has been silent longer than the timeout (and the
stream did not end cleanly, which is an operator stop), races for the next generation on the
shared path. The backup that wins goes live (golive.py) and hands its new role to the agent.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from .arbiter import ArbiterError, claim_target
from .backup import Backup
from .golive import go_live
from .primary import Primary
from .roles import Action, Event, Role, step
from .sharedlock import SharedLock
from .worker import Worker

log = logging.getLogger("ftorch.failover")


class BackupWatch(Worker):
    thread_name = "failover"

    def __init__(self, backup: Backup, on_live: Callable[[Primary], None]) -> None:
        self.backup = backup
        self.cfg = backup.cfg
        self.on_live = on_live
        self.role = Role.BACKUP
        self.generation: int | None = None
        self.reason = ""
        self.times: dict[str, float] = {}
        self.lock = SharedLock(Path(self.cfg.shared_dir), self.cfg.pair)
        super().__init__()

    def _silent(self) -> bool:
        r = self.backup.receiver.stats
        return (r.connects > 0 and not r.ended
                and time.monotonic() - r.last_heard > self.cfg.channel.timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            if self.role == Role.BACKUP and self._silent():
                self.times["detected_at"] = time.time()
                self._apply(step(self.role, Event.CHANNEL_SILENT))
            if self.role in (Role.LIVE_ALONE, Role.FENCED, Role.STOPPED):
                return

    def _apply(self, s) -> None:
        prev, self.role, self.reason = self.role, s.role, s.reason
        log.warning("%s -> %s: %s", prev, s.role, s.reason)
        for action in s.actions:
            if action == Action.CLAIM:
                self._apply(step(self.role, self._claim(), was=prev))
            elif action == Action.GO_LIVE:
                try:
                    live, t = go_live(self.backup)
                except Exception as e:  # any failure here needs the operator, loudly
                    log.exception("go-live failed")
                    self.reason = f"go-live failed: {e}"
                    self._apply(step(self.role, Event.GO_LIVE_FAILED))
                    return
                self.times.update(replay_s=t.replay_s, save_s=t.save_s, start_s=t.start_s,
                                  live_at=time.time())
                self.on_live(live)
                self._apply(step(self.role, Event.LIVE))
            elif action == Action.ALERT:
                log.error("operator needed: %s", self.reason)

    def _claim(self) -> Event:
        peer = self.cfg.peer(self.backup.key)
        try:
            target = claim_target(self.lock.current(), peer)
            if target is None:
                self.reason = "the pair is owned by a third host"
                return Event.CLAIM_LOST
            won = self.lock.claim(target, self.backup.key, "primary silent")
        except ArbiterError as e:
            self.reason = str(e)
            return Event.ARBITER_UNREACHABLE
        if won is None:
            return Event.CLAIM_LOST
        self.generation = target
        return Event.CLAIM_WON

    def status(self) -> dict:
        return {"state": str(self.role), "generation": self.generation, "reason": self.reason,
                **self.times}
