"""Failure detection and the arbiter race for one agent: drives roles.step with real events.

Watches the logging channel; when the peer has been silent longer than the timeout (and the
stream did not end cleanly, which is an operator stop), both sides race for the next generation
on the shared path and exactly one wins. A backup that wins goes live (golive.py) and hands its
new role to the agent; a primary that wins goes on alone, its held output released; the loser
is fenced: a fenced primary's gate stays shut and its guest is paused, a fenced backup stops
listening and never goes live.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ftorch.agent.backup import Backup
from ftorch.agent.golive import go_live
from ftorch.agent.primary import Primary
from ftorch.arbiter.roles import Action, Event, Role, step
from ftorch.arbiter.rules import ArbiterError, claim_target
from ftorch.arbiter.sharedlock import SharedLock
from ftorch.errors import FtorchError
from ftorch.status import FailoverStatus
from ftorch.worker import Worker

log = logging.getLogger("ftorch.failover")


class FailoverWatch(Worker):
    thread_name = "failover"

    def __init__(self, agent_role: Primary | Backup, on_live: Callable[[Primary], None]) -> None:
        self.subject = agent_role
        self.cfg = agent_role.cfg
        self.key = agent_role.key
        self.on_live = on_live
        self.role = Role.PRIMARY if isinstance(agent_role, Primary) else Role.BACKUP
        self.generation: int | None = None   # the pair's generation this side operates under
        self.reason = ""
        self.error = ""                      # what went wrong, kept when the role moves on
        self.times: dict[str, float | str] = {}
        self._timeout = 60.0                 # for a handover
        self.stream: dict = {}               # what the backup had received when it went live
        self.failovers = 0                   # went live or on alone (a metric)
        self.lock = SharedLock(self.cfg.shared_dir, self.cfg.pair)
        # events from the control socket, applied by the watch's own thread (one at a time)
        self._events: queue.Queue[tuple[Event, str, threading.Event, list[Any]]] = queue.Queue()
        self._handlers: dict[Action, Callable[[], None]] = {
            Action.CLAIM: self._claim_and_apply, Action.CLOSE_GATE: self._close_gate,
            Action.OPEN_GATE_UNGATED: self._go_on_alone, Action.GO_LIVE: self._go_live,
            Action.HAND_OVER: self._hand_over, Action.RESUME_GUEST: self._resume_guest,
            Action.ALERT: self._alert, Action.WITHDRAW: self._withdraw}
        super().__init__()

    def _silent(self) -> bool:
        if isinstance(self.subject, Primary):
            return self.subject.backup_silent()
        r = self.subject.receiver.stats
        return r.connects > 0 and not r.ended and r.live.silent()

    def _run(self) -> None:
        try:
            cur = self.lock.current()
            self.generation = cur.generation if cur else None
        except ArbiterError as e:
            log.error("cannot read the pair's generation at start: %s", e)
        while True:
            self._drain()
            if self._stop.is_set():
                return
            if self.role in (Role.PRIMARY, Role.BACKUP) and not self._stop.is_set():
                self._look()   # an operator stop comes first
            # a few looks a heartbeat: detection is the timeout plus at most half a beat
            self._stop.wait(self.cfg.channel.heartbeat_s / 2)

    def _look(self) -> None:
        """Act on this side's QEMU dying, or on the peer falling silent."""
        if self.subject.guest_exited():
            self.times["detected_at"] = time.time()
            self._apply(Event.GUEST_EXITED, f"{self.subject.domain_now()} is gone")
        elif self._silent():
            self.times["detected_at"] = time.time()
            self._apply(Event.CHANNEL_SILENT)

    def _drain(self) -> None:
        """Apply the events the control socket submitted, in order, on this thread."""
        while True:
            try:
                event, detail, done, box = self._events.get_nowait()
            except queue.Empty:
                return
            try:
                self._apply(event, detail)
            except Exception as e:  # noqa: BLE001 - handed to the submitter, who reports it
                box.append(e)
            finally:
                done.set()

    def submit(self, event: Event, timeout: float, detail: str = "") -> None:
        """Have the watch's thread apply `event` (`detail`: why, for status); wait for it, and
        raise what it raised."""
        done, box = threading.Event(), []
        self._events.put((event, detail, done, box))
        if not done.wait(timeout):
            raise FtorchError(f"{event}: host {self.key} did not finish it within {timeout:.0f} s "
                              f"(it is {self.role})")
        if box:
            raise box[0]

    def _apply(self, event: Event, detail: str = "") -> None:
        s = step(self.role, event)
        reason = f"{s.reason} ({detail})" if detail else s.reason
        prev, self.role, self.reason = self.role, s.role, reason
        log.warning("%s -> %s on %s: %s", prev, s.role, event, s.reason)
        for action in s.actions:
            self._handlers[action]()

    def _claim_and_apply(self) -> None:
        self._apply(self._claim())

    def _hand_over(self) -> None:
        assert isinstance(self.subject, Primary)
        self.times.update(self.subject.handover(self._timeout))

    def _resume_guest(self) -> None:
        assert isinstance(self.subject, Primary)
        self.subject.resume_guest()
        # the backup may have turned the LAN's traffic towards its host before its go-live
        # failed (golive.py announces at once): turn it back here
        self.subject.announce()

    def _withdraw(self) -> None:
        self.subject.withdraw(self.reason)

    def disk_full(self, why: str) -> None:
        """A backup steps down (roles: DISK_FULL); in any other role this raises RoleError and
        the caller leaves the role as it is (a go-live under way finishes or fails)."""
        self.submit(Event.DISK_FULL, 30, detail=why)

    def _alert(self) -> None:
        log.error("operator needed: %s", self.reason)
        self._fence()

    def _claim(self) -> Event:
        if self.generation is None:
            self.error = "arbiter: this side never knew the pair's generation"
            return Event.ARBITER_UNREACHABLE
        try:
            current = self.lock.current()
            target = claim_target(current, self.generation, self.key, self.cfg.peer(self.key))
            if target is None:
                self.reason = (f"generation {current.generation} belongs to {current.host}"
                               if current else "the ownership record is gone")
                return Event.CLAIM_LOST
            won = self.lock.claim(target, self.key, self.reason)
        except ArbiterError as e:
            self.error = f"arbiter: {e}"
            log.error("%s", self.error)
            return Event.ARBITER_UNREACHABLE
        if won is None:
            return Event.CLAIM_LOST
        self.generation = target
        return Event.CLAIM_WON

    def _close_gate(self) -> None:
        if isinstance(self.subject, Primary) and self.subject.net.gated is not None:
            self.subject.net.gated.close()

    def _go_on_alone(self) -> None:
        if isinstance(self.subject, Primary):
            self.subject.unprotect()   # recording alone: the re-protector may clone it again
            self.times["live_at"] = time.time()
            self.failovers += 1        # a backup that went live, or a primary alone

    def _go_live(self) -> None:
        assert isinstance(self.subject, Backup)
        r, f = self.subject.receiver.stats, self.subject.feeder
        self.stream = {"received_offset": f.received, "received_icount": f.received_icount,
                       "partial_dropped": r.partial_dropped, "last_error": r.last_error}
        try:
            live, t = go_live(self.subject)
        except Exception as e:  # any failure after winning needs the operator, loudly
            log.exception("go-live failed")
            self.error = f"go-live failed: {e}"
            self._apply(Event.GO_LIVE_FAILED)
            return
        self.times.update(replay_s=t.replay_s, save_s=t.save_s, start_s=t.start_s,
                          final_icount=t.final_icount, live_at=time.time(), golive_via=t.via,
                          golive_state_bytes=t.state_bytes)
        self.subject = live
        self.on_live(live)
        self._apply(Event.LIVE)     # its OPEN_GATE_UNGATED counts the failover

    def _fence(self) -> None:
        """Lost (or unsure): this copy must never emit output again."""
        if isinstance(self.subject, Primary):
            self._close_gate()
            try:
                self.subject.halt()
            except FtorchError as e:
                log.error("fenced, but pausing the guest failed: %s", e)
        else:
            self.subject.receiver.stop(timeout=1)

    # --- planned switch (`ftorch failover`): called from the agent's control socket ---------

    def _require(self, role: Role, what: str) -> None:
        if self.role != role:
            raise FtorchError(f"{what}: host {self.key} is {self.role}, not {role}")

    def handover(self, timeout: float) -> FailoverStatus:
        """Primary: pause, end the stream, wait until the backup holds all of it."""
        self._require(Role.PRIMARY, "handover")
        self._timeout = timeout
        self.submit(Event.HANDOVER, timeout + 30)
        return self.status()

    def take_over(self, timeout: float) -> FailoverStatus:
        """Backup, after the handover: claim the next generation and go live."""
        self._require(Role.BACKUP, "take-over")
        r = self.subject.receiver.stats
        deadline = time.monotonic() + timeout
        while not r.ended:
            if time.monotonic() > deadline:
                raise FtorchError(f"take-over: the primary did not hand over its log within {timeout:.0f} s")
            time.sleep(0.05)
        self.times["take_over_at"] = time.time()
        self.submit(Event.TAKE_OVER, timeout + 300)   # a go-live replays what it has first
        return self.status()

    def resume(self) -> FailoverStatus:
        """Handed-over primary whose backup did not take over: claim the pair back, go on alone."""
        self._require(Role.HANDED_OVER, "resume")
        self.submit(Event.RESUME, 60)
        return self.status()

    def halt(self) -> None:
        """Operator stop: whatever the channel does from now on, this side does not act. Does
        not wait: the watch applies it next (after a go-live under way, which it cannot undo)."""
        self._events.put((Event.OPERATOR_STOP, "", threading.Event(), []))
        self._stop.set()

    def status(self) -> FailoverStatus:
        return FailoverStatus(state=str(self.role), generation=self.generation, reason=self.reason,
                              error=self.error, stream=dict(self.stream), failovers=self.failovers,
                              **self.times)
