"""The backup role: receive the log, feed a replaying QEMU, hold it inside what it has."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ftorch.agent.standby import load_state, start_standby
from ftorch.channel import trust
from ftorch.channel.feeder import Feeder, StreamStart
from ftorch.channel.framing import Frame
from ftorch.channel.lag import LagMeter
from ftorch.channel.receiver import Receiver
from ftorch.channel.replayer import ReplayController
from ftorch.config import PairConfig
from ftorch.errors import FtorchError
from ftorch.host.layout import domain_name, guest_spec, paths, ram_file
from ftorch.host.prepare import qemu_ids
from ftorch.host.virt import Guest, Host, check_emulator
from ftorch.rr.domain import Mode, render
from ftorch.rr.snapshot import read_section, repair, vmstate_chunks
from ftorch.stats import wall_clock
from ftorch.status import BackupStatus, ChannelStatus

log = logging.getLogger("ftorch.backup")


class Backup:
    def __init__(self, cfg: PairConfig, key: str, host: Host, start: StreamStart | None = None,
                 loadvm: str | None = None, ram: bool = False) -> None:
        """start/loadvm: a clone's backup, replaying from snapshot `loadvm` in its disk image
        with the stream beginning where the snapshot left the log (`ftorch protect`). ram: the
        snapshot leaves the RAM out, which comes as this host's RAM file (agent/clone.py)."""
        self.cfg, self.key, self.host = cfg, key, host
        self.paths = paths(cfg, key)
        self.guest: Guest | None = None
        self.standby: Guest | None = None   # a recorder waiting to be the live guest
        self.controller: ReplayController | None = None
        self.lag = LagMeter()
        self.loadvm = loadvm
        self.ram_shipped = ram
        self.disk_ready = threading.Event()     # a clone's image is in place
        if loadvm is None:
            self.disk_ready.set()
        self.start_error: str | None = None
        self._closing = False
        self.withdrawn: str | None = None
        self.feeder = Feeder(self.paths.fifo, self.paths.spool, *qemu_ids(), start=start,
                             keep=cfg.limits.log_keep_mib << 20)
        me = cfg.host(key)
        self.receiver = Receiver((me.address, cfg.channel.port), cfg.pair, self.feeder,
                                 cfg.channel.timeout_s, self._icount, self._on_data,
                                 trust.context(self.paths.root, server=True),
                                 cfg.host(cfg.peer(key)).address, cfg.channel.heartbeat_s)
        self._started = threading.Event()
        self._starter = threading.Thread(target=self._start_when_fed, name="starter", daemon=True)

    def start(self) -> None:
        log.info("backup for %s (QEMU %s), waiting for the log", self.cfg.pair, self._qemu())
        self.receiver.start()
        self._starter.start()

    def _icount(self) -> int:
        return self.controller.icount if self.controller else 0

    def _on_data(self, frame: Frame) -> None:
        self.lag.recorded(frame.icount, frame.stamp / 1e6)

    def _start_when_fed(self) -> None:
        """QEMU reads the first event while starting: start it only once there is enough."""
        margin, f = self.cfg.replay.margin_instructions, self.feeder
        self.disk_ready.wait()
        with f.changed:
            f.changed.wait_for(lambda: f.icount - f.start.icount > 2 * margin or f.final
                               or f.half_full() or self._closing)
        if self._closing:
            return
        # a snapshot without the RAM loads as a migration stream, after the capability is set
        spec = guest_spec(self.cfg, self.key, Mode.REPLAY,
                          loadvm=None if self.ram_shipped else self.loadvm,
                          incoming=self.ram_shipped)
        if not self.ram_shipped:   # the replay's RAM starts zeroed, as the recorder's did
            ram_file(self.cfg, self.key).unlink(missing_ok=True)
        try:
            self.guest = self.host.start(render(spec), paused=True)
            if self.ram_shipped:
                self._load_lean_clone()
        except FtorchError as e:
            self.start_error = str(e)
            log.error("cannot start the replay: %s", e)
            return
        if self.loadvm:
            self._drop_loaded_snapshot()
        self.controller = ReplayController(self.guest, self.feeder, margin,
                                           self.cfg.replay.break_interval_ms / 1000, self.lag)
        self.controller.start()
        self._started.set()
        log.info("replaying %s from the stream", spec.name)
        self._start_standby()

    def _load_lean_clone(self) -> None:
        """The clone's snapshot without the RAM, into the replay waiting for it; the RAM is
        in the file it maps, sent beside the image."""
        assert self.guest is not None and self.loadvm is not None
        load_state(self.guest, str(self.paths.golive_sock),
                   vmstate_chunks(str(self.paths.disk), self.loadvm), lean=True)

    def _drop_loaded_snapshot(self) -> None:
        """The clone's snapshot is loaded: delete it from the image before the replay runs
        (`delvm` is safe only then, as for a recorder). A go-live's `savevm` took 0.6 s in an
        image still holding it, 0.13 s without (docs/qemu-notes.md)."""
        assert self.guest is not None and self.loadvm is not None
        try:
            self.guest.delvm(self.loadvm)
        except FtorchError as e:
            log.warning("the clone's snapshot stays in %s (a go-live's savevm is slower): %s",
                        self.paths.disk, e)

    def _start_standby(self) -> None:
        """Start the recorder a go-live will load the replayed state into (`-incoming defer`,
        paused): libvirt's start of a recorder was half of a go-live (docs/failover.md). It
        opens the disk image inactive, so it takes no lock from the replay. Without it a
        go-live starts a recorder from a snapshot, as before."""
        t0 = time.monotonic()
        try:
            guest = start_standby(self.cfg, self.key, self.host, slot=True)
        except FtorchError as e:
            log.warning("no standby recorder (a go-live will start one, slower): %s", e)
            return
        if self._closing:
            guest.destroy()
            return
        self.standby = guest
        log.info("standby recorder %s waiting (started in %.2f s)", guest.name,
                 time.monotonic() - t0)

    def take_standby(self) -> Guest | None:
        """The standby recorder, now the go-live's to use or destroy (None: there is none)."""
        guest, self.standby = self.standby, None
        return guest if guest is not None and guest.is_active() else None

    def _qemu(self) -> str:
        return check_emulator(self.cfg.host(self.key).emulator, self.key,
                              self.cfg.replay.inbound_kick)

    def verify_clone(self) -> dict[str, Any]:
        """The clone's image is in place: check it holds the snapshot this stream starts at, and
        this host's QEMU, then let the replay start."""
        assert self.loadvm is not None
        version = self._qemu()
        rs = read_section(str(self.paths.disk), self.loadvm)
        start = self.feeder.start
        if rs.current_icount != start.icount or rs.file_offset != start.offset:
            raise FtorchError(f"clone image {self.paths.disk}: snapshot {self.loadvm} is at icount "
                              f"{rs.current_icount}, offset {rs.file_offset}; the stream starts at "
                              f"icount {start.icount}, offset {start.offset}: wrong image")
        if self.ram_shipped:
            self._check_ram()
        if rs != rs.fresh_recording():   # a reader state that would stall the replay
            repair(str(self.paths.disk), self.loadvm)
            log.warning("clone snapshot carried replay-reader state; repaired")
        self.disk_ready.set()
        return {"qemu": version, "snapshot": self.loadvm, "icount": rs.current_icount}

    def _check_ram(self) -> None:
        path, size = ram_file(self.cfg, self.key), self.cfg.guest.memory_mib << 20
        try:
            got = path.stat().st_size
        except OSError as e:
            raise FtorchError(f"the clone's RAM is not at {path}: {e.strerror}") from None
        if got != size:
            raise FtorchError(f"the clone's RAM at {path} has {got} bytes, the guest "
                              f"{size}: wrong file")

    def wait_finished(self, timeout: float) -> dict[str, Any]:
        """Wait until the backup has replayed the whole (ended) log."""
        deadline = time.monotonic() + timeout
        self._started.wait(timeout)
        c = self.controller
        while c is not None and not c.finished and c.error is None and time.monotonic() < deadline:
            time.sleep(0.01)   # a go-live waits on this: the client's stall
        return {"finished": bool(c and c.finished), "icount": c.icount if c else 0,
                "error": c.error if c else None}

    def guest_exited(self) -> bool:
        """Its replaying QEMU died: not at the stream's end (an operator stop), nor closed."""
        return (self.guest is not None and not self._closing and not self.feeder.ended
                and self.guest.exited())

    def domain_now(self) -> str:
        return domain_name(self.cfg, self.key)

    def withdraw(self, why: str) -> None:
        """Step down (roles: DISK_FULL): stop replaying and listening; the primary, hearing
        nothing, goes on alone. The agent stays up to say why."""
        self.withdrawn = why
        log.error("stepping down as backup: %s", why)
        self.close()

    def quiesce(self) -> None:
        """Stop watching the replay and listening (a go-live's replay is over)."""
        self.disk_ready.set()   # a starter still waiting for a clone's image ends
        if self.controller:
            self.controller.stop()
        self.receiver.stop()

    def close(self, keep_ram: bool = False) -> None:
        """keep_ram: the RAM file stays (a go-live's guest runs on from it, and its next
        clone's waiting recorder maps it by name)."""
        if self._closing:
            return
        self._closing = True
        self.quiesce()
        self.host.destroy(domain_name(self.cfg, self.key))
        if self.standby is not None:
            self.standby.destroy()
        if not keep_ram:
            ram_file(self.cfg, self.key).unlink(missing_ok=True)
        self.feeder.close()

    def status(self) -> BackupStatus:
        r, c = self.receiver.stats, self.controller
        icount = c.icount if c else 0
        return BackupStatus(
            guest=("stopped" if self.withdrawn else c.status if c and not c.error
                   else ("exited" if c else "waiting for log")),
            icount=icount, fed_offset=self.feeder.offset, fed_icount=self.feeder.icount,
            received_offset=self.feeder.received, received_icount=self.feeder.received_icount,
            log_ended=self.feeder.ended, feed_error=self.feeder.error,
            replay_finished=bool(c and c.finished), replay_error=c.error if c else None,
            channel=ChannelStatus(state=r.state, received_bytes=r.received_bytes,
                                  acked_offset=self.feeder.received, connects=r.connects,
                                  corrupt_frames=r.corrupt_frames, last_error=r.last_error,
                                  partial_dropped=r.partial_dropped,
                                  refused_peers=r.refused_peers, last_refused=r.last_refused,
                                  last_heard_at=wall_clock(r.live.last_heard),
                                  longest_silence_s=r.live.longest_gap_s,
                                  close_calls=r.live.close_calls),
            primary_icount=r.primary_icount, lag_instructions=max(0, r.primary_icount - icount),
            lag_seconds=self.lag.seconds(), break_hits=c.break_hits if c else 0,
            start_icount=self.feeder.start.icount, start_error=self.start_error,
            withdrawn=self.withdrawn, backlog_frames=self.feeder.backlog,
            backlog_limit=self.cfg.limits.backlog_frames,
            standby_ready=self.standby is not None and self.standby.is_active())


class AwaitingClone:
    """An agent waiting to become a clone's backup (`begin`): nothing runs yet."""

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def status(self) -> None:
        return None   # nothing runs yet
