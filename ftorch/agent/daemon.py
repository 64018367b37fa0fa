"""The per-host daemon: runs one role for one pair and answers on its control socket."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

from ftorch import stallwatch
from ftorch.agent import metrics
from ftorch.agent.backup import AwaitingClone, Backup
from ftorch.agent.control import ControlServer
from ftorch.agent.failover import FailoverWatch
from ftorch.agent.guard import ResourceGuard
from ftorch.agent.primary import Primary
from ftorch.agent.protect import FAULTS, peer_free, protect
from ftorch.arbiter.roles import Role
from ftorch.channel.feeder import StreamStart
from ftorch.config import load
from ftorch.errors import FtorchError
from ftorch.host.layout import paths
from ftorch.host.proc import prioritize_agent
from ftorch.host.virt import Host
from ftorch.status import BackupStatus, PrimaryStatus, ReprotectStatus, SideStatus
from ftorch.worker import Worker

log = logging.getLogger("ftorch.agent")
FAULT_COMMANDS = ("inject", "hold-acks")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


class Agent:
    def __init__(self, config_path: str, key: str, role: str, mode: str = "protected") -> None:
        self.cfg = load(config_path)
        self.key = key
        self.paths = paths(self.cfg, key)
        self.role: Primary | Backup | AwaitingClone = (
            Primary(self.cfg, key, Host(), mode) if role == "primary"
            else AwaitingClone() if role == "standby" else Backup(self.cfg, key, Host()))
        self.watch: FailoverWatch | None = None
        self.done = threading.Event()
        self.reprotect = Reprotector(self)
        self.clone_fault: str | None = None   # test hook: spoil the next clone's image
        self.guard = ResourceGuard(self.paths.root, self.cfg.limits.disk_reserve_mib,
                                   self._disk_low, self._disk_ok, self._overload)

    def _overload(self) -> str | None:
        """A backup whose backlog passed its limit steps down, as for a full disk."""
        if isinstance(self.role, Backup) and not self.role.withdrawn:
            n, limit = self.role.feeder.backlog, self.cfg.limits.backlog_frames
            if n > limit:
                return (f"backlog of {n} frames received and not replayed, over "
                        f"limits.backlog_frames ({limit}): this backup cannot keep up")
        return None

    def _disk_low(self, why: str) -> str:
        """Below the disk reserve, or over a limit: see guard.py for what each role does."""
        role = self.role
        try:
            if isinstance(role, Primary):
                return role.pause_for_disk()
            if isinstance(role, Backup) and self.watch is not None:
                self.watch.disk_full(why)
                return "backup stepped down; the primary goes on alone"
            if isinstance(role, Backup):
                role.withdraw(why)
                return "backup stepped down (failover off: the primary holds its output)"
        except FtorchError as e:
            log.error("disk full, and acting on it failed: %s", e)
            return f"nothing done: {e}"
        return "nothing running here"

    def _disk_ok(self) -> None:
        if isinstance(self.role, Primary):
            try:
                self.role.resume_for_disk()
            except FtorchError as e:
                log.error("disk space back, but resuming the guest failed: %s", e)

    def _went_live(self, live: Primary) -> None:
        self.role = live

    def replace_primary(self, new: Primary) -> None:
        """A clone restarted the recorder: the new one is the role (and what the watch sees)."""
        self.role = new
        if self.watch is not None:
            self.watch.subject = new

    def arm(self) -> None:
        """Start (again) watching the peer, if failover is on."""
        if self.cfg.failover.enabled:
            failovers = 0
            if self.watch is not None:
                self.watch.stop(timeout=1)
                failovers = self.watch.failovers   # a counter: it outlives each watch
            self.watch = FailoverWatch(self.role, self._went_live)
            self.watch.failovers = failovers
            self.watch.start()

    def _clone_command(self, cmd: str, req: dict[str, Any]) -> dict[str, Any] | None:
        """Commands of re-protection (protect.py); None if cmd is not one of them."""
        if cmd == "protect" and isinstance(self.role, Primary):
            return self.reprotect.run_once()
        if cmd == "begin" and isinstance(self.role, AwaitingClone):
            start = StreamStart(int(req["offset"]), int(req["icount"]), int(req["block"]))
            backup = Backup(self.cfg, self.key, Host(), start, loadvm=str(req["tag"]),
                            ram=bool(req.get("ram")))
            backup.start()
            self.role = backup
            return {"listening": True}
        if cmd == "disk-ready" and isinstance(self.role, Backup):
            return self.role.verify_clone()
        if cmd == "arm" and isinstance(self.role, Backup):
            self.arm()
            return {"armed": self.watch is not None}
        return None

    def status(self) -> SideStatus:
        """This side as the operator sees it: its role's record, and the watch's role once the
        watch has decided (live alone, fenced, handed over)."""
        rec = self.role.status()
        role = "standby" if rec is None else "primary" if isinstance(rec, PrimaryStatus) else "backup"
        if self.watch is not None and self.watch.role in (Role.LIVE_ALONE, Role.FENCED,
                                                          Role.HANDED_OVER, Role.WITHDRAWN):
            role = str(self.watch.role)
        if isinstance(self.role, Backup) and self.role.withdrawn:
            role = str(Role.WITHDRAWN)
        return SideStatus(
            host=self.key, role=role, pair=self.cfg.pair, pid=os.getpid(),
            primary=rec if isinstance(rec, PrimaryStatus) else None,
            backup=rec if isinstance(rec, BackupStatus) else None,
            failover=self.watch.status() if self.watch is not None else None,
            reprotect=self.reprotect.last, guard=self.guard.status())

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        cmd = req.get("cmd")
        if cmd in FAULT_COMMANDS and not self.cfg.debug.faults:
            raise FtorchError(f"{cmd}: fault injection is off for pair {self.cfg.pair} "
                              "(debug.faults in the config, for tests only)")
        if cmd == "status":
            return self.status().to_json()
        if cmd == "stop-guest" and isinstance(self.role, Primary):
            return self.role.stop_guest()
        if cmd == "wait-finished" and isinstance(self.role, Backup):
            return self.role.wait_finished(float(req.get("timeout_", 60)))
        if cmd == "inject" and req.get("what") == "clone-fault":
            if req.get("fault") not in FAULTS:
                raise FtorchError(f"unknown clone fault {req.get('fault')!r}; known: "
                                  f"{', '.join(FAULTS)}")
            self.clone_fault = str(req["fault"])
            return {"injected": self.clone_fault}
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
                return asdict(self.watch.handover(timeout))
            return asdict(self.watch.take_over(timeout) if cmd == "take-over"
                          else self.watch.resume())
        reply = self._clone_command(cmd, req)
        if reply is not None:
            return reply
        if cmd == "quit":
            if self.watch is not None:
                self.watch.halt()  # an operator stop never fails over
            self.done.set()
            return {"quitting": True}
        raise FtorchError(f"unknown command {cmd!r} for a {type(self.role).__name__.lower()} agent")

    def _serve_metrics(self) -> Any:
        m = self.cfg.metrics
        if not m.port:
            return None
        address = m.address or self.cfg.host(self.key).address
        try:
            return metrics.serve(address, m.port, self.status)
        except OSError as e:   # metrics are for watching: they never stop the agent
            log.error("cannot serve metrics on %s:%d: %s", address, m.port, e)
            return None

    def run(self) -> int:
        server = ControlServer(self.paths.control, self.handle)
        metrics_server = None
        signal.signal(signal.SIGTERM, lambda *_: self.done.set())
        try:
            self.role.start()
            if isinstance(self.role, Backup) or (isinstance(self.role, Primary)
                                                 and self.role.mode == "protected"):
                self.arm()
            self.reprotect.start()
            self.guard.start()
            metrics_server = self._serve_metrics()
            self.paths.pid.write_text(f"{os.getpid()}\n")
            log.info("agent for %s on host %s is up as %s", self.cfg.pair, self.key,
                     type(self.role).__name__.lower())
            self.done.wait()
            return 0
        except FtorchError as e:
            log.error("%s", e)
            return e.exit_code
        finally:
            if metrics_server is not None:
                metrics_server.shutdown()
            self.guard.stop(timeout=1)
            self.reprotect.stop(timeout=1)
            if self.watch is not None:
                self.watch.stop(timeout=1)
            self.role.close()
            server.close()
            log.info("agent for %s on host %s stopped", self.cfg.pair, self.key)


class Reprotector(Worker):
    """Protect the guest again when it runs alone and the peer host can take a backup: after a
    failover (failover.reprotect on), and for `ftorch protect`."""

    thread_name = "reprotect"

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.last: ReprotectStatus | None = None
        self._lock = threading.Lock()
        super().__init__()

    def _alone(self) -> bool:
        a = self.agent
        if not isinstance(a.role, Primary) or a.role.mode != "unprotected":
            return False
        return a.watch is None or a.watch.role == Role.LIVE_ALONE

    def run_once(self) -> dict[str, Any]:
        a = self.agent
        if not self._lock.acquire(blocking=False):
            raise FtorchError("protect: a protection attempt is already running")
        try:
            if not self._alone():
                raise FtorchError(f"protect: host {a.key} is not running the guest alone")
            assert isinstance(a.role, Primary)
            gen = a.watch.generation if a.watch else None
            fault, a.clone_fault = a.clone_fault, None
            res = protect(a.cfg, a.key, a.role, gen, swap=a.replace_primary, fault=fault)
            a.arm()
            self.last = ReprotectStatus(ok=True, at=time.time(), pause_s=res.pause_s, peer=res.peer,
                                        tag=res.tag, icount=res.icount, passed_s=res.passed_s,
                                        via=res.clone_via)
            return asdict(res)
        except FtorchError as e:
            self.last = ReprotectStatus(ok=False, error=str(e), at=time.time(),
                                        pause_s=getattr(e, "pause_s", None))
            raise
        finally:
            self._lock.release()

    def _run(self) -> None:
        cfg, a = self.agent.cfg, self.agent
        while not self._stop.wait(cfg.failover.reprotect_interval_s):
            # only after a failover: a guest started unprotected on purpose stays so
            after_failover = a.watch is not None and a.watch.role == Role.LIVE_ALONE
            if not cfg.failover.reprotect or not after_failover or not self._alone():
                continue
            if not peer_free(cfg, self.agent.key):
                continue
            try:
                self.run_once()
            except FtorchError as e:
                log.error("re-protection failed (retrying in %.0f s): %s",
                          cfg.failover.reprotect_interval_s, e)


def main(config_path: str, key: str, role: str, mode: str = "protected") -> int:
    setup_logging()
    stallwatch.watch_gc()
    if why := prioritize_agent():
        log.warning("%s: heartbeats may be late on a busy host", why)
    return Agent(config_path, key, role, mode).run()
