"""The primary role: record the guest, bridge its NIC to the LAN, stream its log to the backup."""
from __future__ import annotations

import logging
import time
from typing import Any

from ftorch.agent.standby import SPARE_WAIT_S, Spare, recorder_spec
from ftorch.agent.throttle import DISK, LAG, Freezer, Throttle
from ftorch.channel import trust
from ftorch.channel.logtail import LogTail
from ftorch.channel.sender import Sender
from ftorch.config import PairConfig
from ftorch.errors import FtorchError
from ftorch.gate import lagbound
from ftorch.gate.holder import InboundHold
from ftorch.gate.netbridge import LanPort, NetBridge
from ftorch.host.layout import domain_name, guest_spec, net_socket, paths, ram_file, rr_log
from ftorch.host.virt import Guest, Host, check_emulator
from ftorch.rr import throttle
from ftorch.rr.domain import Mode, render
from ftorch.stats import summary, wall_clock
from ftorch.status import ChannelStatus, GateStatus, NetStatus, PrimaryStatus, Summary

log = logging.getLogger("ftorch.primary")
EXIT_READ_S = 1.0   # for the log tail to read a dead QEMU's last bytes (is there an END?)
# A backup that has not moved for this long with log to replay is stuck, not slow (an idle
# stretch replays in at most ~1 s): slowing the guest for it would only stop the guest.
STUCK_S = 5.0


class Primary:
    def __init__(self, cfg: PairConfig, key: str, host: Host, mode: str = "protected",
                 loadvm: str | None = None, base_icount: int = 0, lan: LanPort | None = None,
                 standby: bool = False) -> None:
        """mode: protected (record + stream to the backup), unprotected (record only),
        plain (no record/replay: the benchmarks' baseline). loadvm: start from this snapshot
        (a clone's restart) instead of booting; base_icount: the snapshot's instruction count.
        lan: this host's tap, already open (inbound frames waiting in it are delivered).
        standby: the guest runs in the `-standby` slot (a recorder that was waiting for a state,
        adopted at a go-live or a clone: adopt())."""
        self.cfg, self.key, self.host = cfg, key, host
        self.mode = mode
        self.loadvm = loadvm
        self.standby = standby
        self.domain = domain_name(cfg, key, standby)
        self.paths = paths(cfg, key)
        self.log_path = rr_log(cfg, key, standby)
        self.guest: Guest | None = None
        self.spare: Spare | None = None   # a recorder waiting for the next clone's state
        self.halted = False
        self.stopping = False   # an operator stop: QEMU's exit is expected
        self.withdrawn: str | None = None
        self.tail = LogTail(str(self.log_path), cfg.channel.frame_max_bytes, base_icount,
                            keep=cfg.limits.log_keep_mib << 20)
        self.hold = (InboundHold(self._backup_lag, lagbound.policy(cfg.lag.bound_s,
                                                                   cfg.lag.max_hold_s))
                     if mode != "plain" and cfg.lag.hold_inbound else None)
        self.freezer = Freezer(lambda: self.guest)
        if mode != "protected":
            self.freezer.bar(LAG)   # no backup to wait for; a clone's QMP needs QEMU running
        self.throttle = (Throttle(self._trailing, self.freezer,
                                  throttle.policy(cfg.lag.bound_s, cfg.lag.max_slowdown),
                                  cfg.lag.throttle_period_s)
                         if mode != "plain" and cfg.lag.throttle else None)
        if self.throttle is not None:
            log.warning("lag.throttle is on: experimental, its recordings may not replay "
                        "(docs/qemu-notes.md)")
        self.net = NetBridge(str(net_socket(cfg, key, standby)), cfg.host(key).tap,
                             self._log_size if mode != "plain" else None, gated=mode == "protected",
                             max_held=cfg.limits.gate_frames, port=lan, hold=self.hold)
        self.sender = self._new_sender()

    def _new_sender(self) -> Sender:
        peer = self.cfg.host(self.cfg.peer(self.key))
        ch = self.cfg.channel
        tls = trust.context(self.paths.root, server=False) if self.mode != "plain" else None
        return Sender(self.tail, (peer.address, ch.port), self.cfg.pair, ch.heartbeat_s,
                      ch.timeout_s, tls, self.cfg.host(self.key).address, self.net.inbound_times,
                      on_ack=self._on_ack)

    def _backup_lag(self) -> float | None:
        """How far behind the backup replays; None when there is none to wait for."""
        return self.sender.lag.seconds() if self.mode == "protected" else None

    @property
    def disk_paused(self) -> bool:
        return self.freezer.holds(DISK)

    def _trailing(self) -> float | None:
        """How far behind the backup is now, for the throttle; None: no backup to wait for,
        or one that is stuck."""
        if self.mode != "protected":
            return None
        meter = self.sender.lag
        behind = meter.behind(slack=2 * self.cfg.replay.margin_instructions)
        if behind and time.time() - meter.reached_at > STUCK_S:
            return None
        return behind

    def _log_size(self) -> int:
        return self.log_path.stat().st_size

    def _on_ack(self, offset: int, lease_until: float) -> None:
        if self.net.gated is not None:
            self.net.gated.ack(offset, lease_until)

    def start(self, paused: bool = False) -> None:
        version = check_emulator(self.cfg.host(self.key).emulator, self.key,
                                 self.cfg.replay.inbound_kick)
        if self.mode == "plain":
            spec = guest_spec(self.cfg, self.key, Mode.PLAIN)
        else:
            spec = recorder_spec(self.cfg, self.key, self.loadvm, self.standby)
            if self.loadvm is None:   # a guest boots on zeroed RAM, as its replay will
                ram_file(self.cfg, self.key).unlink(missing_ok=True)
            self.tail.start()
        self.guest = self.host.start(render(spec), paused=paused)
        log.info("running %s %s (QEMU %s)", spec.name, self.mode, version)
        self._run_io()
        if self.mode == "unprotected" and self.loadvm is None:
            self.want_spare()

    def adopt(self, guest: Guest) -> None:
        """Take over a recorder that is already there (a go-live's standby, its state loaded)."""
        self.tail.start()
        self.guest = guest
        log.info("running %s %s (adopted)", guest.name, self.mode)
        self._run_io()

    def _run_io(self) -> None:
        self.net.start()
        if self.throttle is not None:
            self.throttle.start()
        if self.mode == "protected":
            if self.net.gated is not None:
                self.net.gated.require_lease()
            self.sender.start()

    def handover(self, timeout: float) -> dict[str, Any]:
        """Planned switch, primary's half: pause the guest, end the stream after the last event
        it recorded, and wait until the backup has acknowledged all of it.

        Output the guest sent before the pause leaves as the backup acknowledges it; anything
        recorded after the cut is never acknowledged, so never released: the backup, going live
        at the cut, runs that part again. So the cut need not be exact, only complete events.
        """
        assert self.guest is not None
        if self.disk_paused:
            raise FtorchError(f"handover refused: host {self.key}'s disk is full and its guest "
                              f"is paused; free space in {self.paths.root} first")
        self.freezer.bar(LAG)   # QMP needs QEMU running; the backup catches up in the pause
        paused_at = time.time()
        self.guest.qmp("stop")
        # the shim writes QEMU's buffered log every flush_us: let it write what preceded the pause
        time.sleep(3 * self.cfg.replay.flush_us / 1e6 + 0.002)
        offset, icount = self.tail.cut_here(timeout)
        deadline = time.monotonic() + timeout
        while not self.sender.stats.finished:
            if time.monotonic() > deadline:
                raise FtorchError(f"handover: the backup acknowledged the log to offset "
                                  f"{self.sender.stats.acked_offset} of {offset} in {timeout:.0f} s")
            time.sleep(0.01)
        log.info("handed over at offset %d, icount %d", offset, icount)
        return {"paused_at": paused_at, "offset": offset, "icount": icount}

    def protect(self) -> None:
        """Stream the log to the (new) backup; output already waits for its acks (clone.py)."""
        self.sender.stop(timeout=1)
        self.sender = self._new_sender()
        self.mode = "protected"
        self.sender.start()
        self.freezer.unbar(LAG)

    def unprotect(self) -> None:
        """Back to recording alone: the backup is gone or never came up."""
        self.sender.stop(timeout=1)
        self.mode = "unprotected"
        self.freezer.bar(LAG)
        if self.net.gated is not None:
            self.net.gated.ungate()
        self.want_spare()

    def want_spare(self) -> None:
        """Running alone, the guest will be cloned: have a recorder wait for the clone's state
        in the other slot (agent/standby.py), so the clone's pause need not start one."""
        if self.spare is None and self.mode != "plain":
            self.spare = Spare(self.cfg, self.key, self.host, not self.standby)
            self.spare.start()

    def take_spare(self, timeout: float = SPARE_WAIT_S) -> Guest | None:
        """The waiting recorder, now the caller's (None: there is none)."""
        spare, self.spare = self.spare, None
        return spare.take(timeout) if spare is not None else None

    def retire(self) -> None:
        """A clone moved the guest into the waiting recorder: this one's QEMU is dead. Stop
        the rest, keep the RAM file (the guest runs on from it) and the tap (handed on)."""
        self._stop_throttle()
        self.sender.stop()
        self.tail.stop()
        self.log_path.unlink(missing_ok=True)   # nothing needs it: the guest ran unprotected

    def drop_snapshots(self) -> None:
        """Delete ftorch's internal snapshots from the guest's image: each holds a full memory
        image, and every later savevm and clone copy would carry them.

        Only while the guest has not run since it started paused: `delvm` drains the disk, and
        in record mode a drain with a request in flight deadlocks QEMU 10.0 (its completion
        waits for the vCPU thread, which waits for the lock the monitor holds)."""
        assert self.guest is not None
        try:
            for name in self.guest.snapshots():
                if name.startswith("ftorch-"):
                    self.guest.delvm(name)
        except FtorchError as e:
            log.warning("old snapshots stay in %s: %s", self.paths.disk, e)

    def resume_guest(self) -> None:
        if self.guest is not None:
            self.guest.qmp("cont")
        if self.mode == "protected":   # a handover that failed: the bound applies again
            self.freezer.unbar(LAG)

    def announce(self) -> None:
        """Tell the LAN the guest's MAC is behind this host (QEMU's RARP rounds)."""
        if self.guest is not None:
            self.guest.qmp("announce-self", initial=50, max=550, rounds=5, step=50)

    def pause_for_disk(self) -> str:
        """The pair folder is nearly full: freeze QEMU before the log or the disk image fails
        a write (its output waits; its log stays whole). Frozen, not QMP-stopped: see
        Guest.freeze."""
        if not self.freezer.hold(DISK):
            return "nothing running to pause"
        return "guest paused (QEMU frozen) until there is room"

    def resume_for_disk(self) -> None:
        if not self.halted:
            self.freezer.release(DISK)

    def halt(self) -> None:
        """Fenced: the guest must not run again here (the gate is closed already)."""
        self.halted = True
        self._stop_throttle()
        if self.guest is not None:
            # a frozen QEMU cannot take `stop`: it runs a moment, its output held by the gate
            self.freezer.release_all()
            self.guest.qmp("stop")

    def backup_silent(self) -> bool:
        """The backup has been silent on the logging channel past its timeout."""
        s = self.sender.stats
        return self.mode == "protected" and s.connects > 0 and not s.finished and s.live.silent()

    def guest_exited(self) -> bool:
        """Its QEMU died: not stopped by an operator, nor closed by the guest powering off
        (QEMU then ends its log with END, which the backup gets: nobody races)."""
        if self.guest is None or self.stopping or self.withdrawn is not None \
                or not self.guest.exited():
            return False
        # the tail reads what QEMU wrote last within a few ms of its exit
        deadline = time.monotonic() + EXIT_READ_S
        while not self.tail.ended and not self._log_read() and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self.tail.ended

    def _log_read(self) -> bool:
        """Has the tail read all of the log file there is?"""
        try:
            return self.tail.read_to >= self._log_size()
        except OSError:
            return True

    def domain_now(self) -> str:
        return self.guest.name if self.guest is not None else self.domain

    def withdraw(self, why: str) -> None:
        """Step down (roles: GUEST_EXITED): its recorder is gone, so stop streaming without
        an END; the backup, hearing nothing, claims the pair and goes live. The gate is shut
        already. The agent stays up to say why."""
        self.withdrawn = why
        log.error("stepping down as primary: %s", why)
        self._stop_throttle()
        self.sender.stop()
        self.net.stop()
        self.host.destroy(self.domain_now())   # libvirt's clean-up of what is left

    def stop_guest(self) -> dict[str, Any]:
        """Stop QEMU cleanly: it writes END and the header; the backup gets all of the log."""
        self.stopping = True
        self._stop_throttle()
        if self.guest is not None and self.guest.is_active():
            self.guest.stop_gracefully()
        return {"stopping": self.domain}

    def close(self) -> None:
        """Stop QEMU cleanly if it still runs (so its log is complete), then everything else;
        the RAM file's name goes (QEMU leaves it behind)."""
        if self.spare is not None:
            self.spare.close()
        self._stop_throttle()
        if self.guest is not None and self.guest.is_active():
            self.guest.stop_gracefully()
            self.host.wait_gone(self.domain, timeout=15)
        self.sender.stop()
        self.net.stop()
        self.tail.stop()
        self.host.destroy(self.domain)
        if self.mode != "plain":
            ram_file(self.cfg, self.key).unlink(missing_ok=True)

    def _stop_throttle(self) -> None:
        """The guest will not run on here (or not as this recorder): stop slowing it."""
        self.freezer.bar(LAG)
        if self.throttle is not None:
            self.throttle.stop()

    def status(self) -> PrimaryStatus:
        s = self.sender.stats
        offset, icount = self.tail.head()
        active = self.guest is not None and self.guest.is_active()
        if active and self.guest is not None and not self.guest.frozen:
            try:
                icount = max(icount, self.guest.replay().icount)
            except Exception:  # the guest may be exiting between the two calls
                pass
        g = self.net.gated
        delays = summary(g.delays) if g else {}
        return PrimaryStatus(
            mode=self.mode,
            guest="running" if active else ("ended" if self.tail.ended else "stopped"),
            icount=icount, log_offset=offset, log_ended=self.tail.ended, log_error=self.tail.error,
            channel=ChannelStatus(state=s.state, sent_bytes=s.sent_bytes,
                                  wire_bytes=s.wire_bytes,
                                  sent_offset=s.sent_offset, acked_offset=s.acked_offset,
                                  connects=s.connects, finished=s.finished,
                                  refused_acks=s.refused_acks, refused_peers=s.refused_peers,
                                  last_error=s.last_error or None,
                                  last_refused=s.last_refused,
                                  last_heard_at=wall_clock(s.live.last_heard),
                                  longest_silence_s=s.live.longest_gap_s,
                                  close_calls=s.live.close_calls),
            backup_icount=s.backup_icount, lag_instructions=max(0, icount - s.backup_icount),
            lag_seconds=self._backup_lag(),
            disk_paused=self.disk_paused,
            net=NetStatus(self.net.frames_in, self.net.frames_out),
            gate=None if g is None else GateStatus(g.gate.held, g.gate.released, g.gate.open,
                                                   delays["p50"], delays["p99"], g.gate.dropped,
                                                   g.gate.max_held, g.histogram,
                                                   g.gate.lease_waits),
            staleness_s=Summary(**summary(s.staleness)),
            hold=self.hold.status() if self.hold is not None else None,
            throttle=self.throttle.status() if self.throttle is not None else None)
