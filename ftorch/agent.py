"""The per-host daemon: runs one role for one pair and answers on its control socket."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any

from .backup import Backup
from .config import load
from .control import ControlServer
from .errors import FtorchError
from .failover import FailoverWatch
from .layout import paths
from .primary import Primary
from .roles import Role
from .virt import Host

log = logging.getLogger("ftorch.agent")
ROLES = {"primary": Primary, "backup": Backup}


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class Agent:
    def __init__(self, config_path: str, key: str, role: str, mode: str = "protected") -> None:
        self.cfg = load(config_path)
        self.key = key
        self.paths = paths(self.cfg, key)
        self.role = (Primary(self.cfg, key, Host(), mode) if role == "primary"
                     else ROLES[role](self.cfg, key, Host()))
        self.watch: FailoverWatch | None = None
        self.done = threading.Event()

    def _went_live(self, live: Primary) -> None:
        self.role = live

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd == "status":
            st = {"host": self.key, "pair": self.cfg.pair, "pid": os.getpid(), **self.role.status()}
            if self.watch is not None:
                st["failover"] = self.watch.status()
                if self.watch.role in (Role.LIVE_ALONE, Role.FENCED, Role.HANDED_OVER):
                    st["role"] = str(self.watch.role)
            return st
        if cmd == "stop-guest" and isinstance(self.role, Primary):
            return self.role.stop_guest()
        if cmd == "wait-finished" and isinstance(self.role, Backup):
            return self.role.wait_finished(float(req.get("timeout_", 60)))
        if cmd == "inject" and isinstance(self.role, Primary) and req.get("what") == "corrupt-frame":
            self.role.sender.corrupt_next.set()
            return {"injected": "corrupt-frame"}
        if cmd == "inject" and isinstance(self.role, Primary) and req.get("what") == "truncate-frame":
            sender = self.role.sender
            sender.truncate_next.set()
            deadline = time.monotonic() + 30
            while sender.truncated is None and time.monotonic() < deadline:
                time.sleep(0.01)
            if sender.truncated is None:
                raise FtorchError("truncate-frame: no DATA frame was sent within 30 s")
            return {"injected": "truncate-frame", **sender.truncated}
        if cmd == "hold-acks" and isinstance(self.role, Backup):
            (self.role.receiver.hold_acks.set if req.get("on") else self.role.receiver.hold_acks.clear)()
            return {"hold_acks": bool(req.get("on"))}
        if cmd in ("handover", "take-over", "resume"):
            if self.watch is None:
                raise FtorchError(f"{cmd}: failover is disabled for pair {self.cfg.pair} "
                                  "(failover.enabled in the config)")
            timeout = float(req.get("timeout_", 60))
            if cmd == "handover":
                return self.watch.handover(timeout)
            return self.watch.take_over(timeout) if cmd == "take-over" else self.watch.resume()
        if cmd == "quit":
            if self.watch is not None:
                self.watch.halt()  # an operator stop never fails over
            self.done.set()
            return {"quitting": True}
        raise FtorchError(f"unknown command {cmd!r} for a {type(self.role).__name__.lower()} agent")

    def run(self) -> int:
        server = ControlServer(self.paths.control, self.handle)
        signal.signal(signal.SIGTERM, lambda *_: self.done.set())
        try:
            self.role.start()
            if self.cfg.failover.enabled and (isinstance(self.role, Backup)
                                              or self.role.mode == "protected"):
                self.watch = FailoverWatch(self.role, self._went_live)
                self.watch.start()
            self.paths.pid.write_text(f"{os.getpid()}\n")
            log.info("agent for %s on host %s is up as %s", self.cfg.pair, self.key,
                     type(self.role).__name__.lower())
            self.done.wait()
            return 0
        except FtorchError as e:
            log.error("%s", e)
            return e.exit_code
        finally:
            if self.watch is not None:
                self.watch.stop(timeout=1)
            self.role.close()
            server.close()
            log.info("agent for %s on host %s stopped", self.cfg.pair, self.key)


def main(config_path: str, key: str, role: str, mode: str = "protected") -> int:
    setup_logging()
    return Agent(config_path, key, role, mode).run()
