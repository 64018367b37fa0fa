"""Clone a running recorder for a new backup: a snapshot both QEMUs load the same way.

A snapshot taken from a running recorder does not replay (docs/qemu-notes.md, clones): loading
a snapshot runs device `post_load` hooks that the recorder never ran, and e1000's arms a
mitigation timer 1 ns ahead, so the backup's timers (and with them the icount warp) differ from
the log's from the first instruction. The cure: the recorder loads the snapshot too. It cannot
load one in place (`loadvm` in record mode deadlocks QEMU 10.0), so the recorder restarts from
its snapshot, paused, and the clone is a second snapshot taken right there, before it runs an
instruction: recorder and backup then both run their post_load hooks from the same state.
Before the restart, the snapshot's icount timers are settled (timerstate.py says why).

The restart is into the recorder waiting beside the guest (agent/standby.py): the two map one
RAM file, so the first snapshot leaves the RAM out and loads in milliseconds. The clone's
snapshot leaves it out too, and a copy of the RAM file goes to the backup beside the image
(its replay maps it and loads the snapshot as a migration stream). Without a waiting recorder
one is started with `-loadvm` (libvirt's start: 0.4-0.9 s more).

Pause: savevm, SIGKILL, the state loaded into the waiting recorder, savevm, a copy of the RAM
file and of the image (e2e: 0.15 s, against 1.7 s with a recorder started from the snapshot).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftorch.agent.primary import Primary
from ftorch.agent.standby import leave_ram_out, load_anywhere
from ftorch.errors import FtorchError, VirtError
from ftorch.gate.netbridge import LanPort
from ftorch.host.imagecopy import check_image, copy_image
from ftorch.host.layout import ram_file
from ftorch.host.virt import Guest
from ftorch.rr.snapshot import read_section, vmstate_chunks
from ftorch.rr.timerstate import settle_or_warn

log = logging.getLogger("ftorch.clone")


@dataclass(frozen=True)
class CloneInfo:
    tag: str
    offset: int        # log position the backup replays from
    icount: int        # instruction count there
    block: int         # lowest disk request not completed there
    pause_s: float     # how long the guest was paused
    staging: str       # local copy of the image holding the snapshot
    steps: dict[str, float]   # the pause by step, seconds (kill + start: the restart)
    ram: str | None = None    # local copy of the guest's RAM, which the snapshot leaves out
    via: str = "standby"      # the recorder the guest moved into: standby (waiting) or restart


def restart_from(old: Primary, tag: str, icount: int, steps: dict[str, float]) -> Primary:
    """Stop old's QEMU (its state is in snapshot tag) and start a paused recorder from tag."""
    assert old.guest is not None
    t0 = time.monotonic()
    old.guest.kill_now()   # the snapshot is on disk; a clean exit only costs time
    # the tap stays open: inbound frames wait in it for the new recorder instead of being lost
    lan = old.net.stop(keep_port=True)
    old.close()
    name = old.domain
    if not old.host.wait_gone(name, timeout=30):
        raise VirtError(f"clone: the recording QEMU {name} did not go away")
    check_image(str(old.paths.disk))
    _settle_timers(str(old.paths.disk), tag)
    # The new recorder writes a new log at the same path; nothing needs the old one (the guest
    # ran unprotected), and the new log tail must not read it before QEMU truncates it.
    old.log_path.unlink(missing_ok=True)
    t1 = time.monotonic()
    steps["kill"] = t1 - t0
    for attempt in (1, 2):
        new = Primary(old.cfg, old.key, old.host, mode="unprotected", loadvm=tag,
                      base_icount=icount, lan=lan)
        new.net.inbound_open.clear()   # a frame queued in QEMU would make it refuse savevm
        try:
            new.start(paused=True)
            steps["start"] = time.monotonic() - t1
            return new
        except FtorchError as e:
            lan = new.net.stop(keep_port=True)
            new.close()
            log.error("clone: restarting the recorder from %s failed (attempt %d): %s",
                      tag, attempt, e)
            err = e
    raise _stopped(old, tag, lan, err)


def _stopped(old: Primary, tag: str, lan: LanPort | None, err: Exception,
             lean: bool = False) -> VirtError:
    if lan is not None:
        lan.close()   # nothing will run here: let go of the tap for whoever starts the guest
    ram = f" and its RAM in {ram_file(old.cfg, old.key)}" if lean else ""
    return VirtError(f"clone: the guest is stopped: its recorder did not restart from snapshot "
                     f"{tag} in {old.paths.disk}{ram} ({err}); nothing is lost: start it from "
                     "there")


def move_into(old: Primary, spare: Guest, tag: str, icount: int, lean: bool,
              steps: dict[str, float]) -> tuple[Primary, str]:
    """Stop old's QEMU (its state is in snapshot tag; without the RAM if lean) and load that
    state into spare, the recorder waiting in the other slot: the guest's new recorder,
    paused. The old domain's clean-up by libvirt (~0.2 s) is left for after the pause. Also
    returns which recorder took the state (load_anywhere)."""
    assert old.guest is not None
    t0 = time.monotonic()
    if not old.guest.kill_and_wait():
        spare.destroy()
        raise VirtError(f"clone: the recording QEMU {old.domain} did not exit")
    lan = old.net.stop(keep_port=True)   # inbound frames wait in the tap for the new recorder
    old.retire()
    disk = str(old.paths.disk)
    check_image(disk)
    _settle_timers(disk, tag)
    t1 = time.monotonic()
    steps["kill"] = t1 - t0
    new = Primary(old.cfg, old.key, old.host, mode="unprotected", base_icount=icount, lan=lan,
                  standby=not old.standby)
    new.net.inbound_open.clear()   # a frame queued in QEMU would make it refuse savevm
    try:
        recorder, via = load_anywhere(old.cfg, old.key, old.host, new.standby, spare,
                                      str(old.paths.golive_sock),
                                      lambda: vmstate_chunks(disk, tag), lean, "clone")
    except FtorchError as e:
        new.net.stop()
        raise _stopped(old, tag, lan, e, lean) from None
    new.adopt(recorder)
    steps["start"] = time.monotonic() - t1
    return new, via


def _lean_snapshot(new: Primary, tag: str, ram_staging: Path) -> str | None:
    """savevm tag without the RAM, and a copy of the RAM file beside it; if QEMU refuses to
    leave the RAM out, a whole snapshot. Returns the RAM's copy, if any."""
    assert new.guest is not None
    lean = leave_ram_out(new.guest, "clone")
    try:
        new.guest.savevm(tag, tries=1)
    finally:
        if lean:   # its own later states (a go-live's is another QEMU's) carry the RAM
            new.guest.share_ram(False)
    if not lean:
        return None
    copy_image(str(ram_file(new.cfg, new.key)), str(ram_staging), what="the clone's RAM",
               durable=False)
    return str(ram_staging)


def _settle_timers(disk: str, tag: str) -> None:
    settle_or_warn(disk, tag, "clone", "the clone may stall at its snapshot")


def clone(primary: Primary, tag: str, staging: Path, ram_staging: Path, timeout: float,
          swap: Callable[[Primary], None]) -> CloneInfo:
    """Snapshot `primary`'s guest for a new backup, restarting its recorder (see above). The
    snapshot goes to a copy of the image at `staging`; it leaves the RAM out if it can, and a
    copy of the RAM file goes to `ram_staging` (CloneInfo.ram): writing the RAM into the image
    took 0.15 s of the pause, copying the file ~0.04 s.

    `swap` receives the restarted recorder as soon as it exists, so the caller never holds a
    dead one. On any failure the guest is left running (unprotected) if it can run at all.
    """
    assert primary.guest is not None
    spare = primary.take_spare()
    t0 = time.monotonic()
    base = f"{tag}-base"
    lean = spare is not None and leave_ram_out(primary.guest, "clone")
    primary.net.inbound_open.clear()   # QEMU refuses savevm while inbound frames are queued
    try:
        primary.guest.savevm(base, tries=100)
        icount = primary.guest.replay().icount
    except FtorchError:
        if spare is not None:
            spare.destroy()
        if lean:
            primary.guest.share_ram(False)
        primary.resume_guest()
        primary.net.inbound_open.set()
        raise
    steps = {"savevm_base": time.monotonic() - t0}
    if spare is not None:
        new, via = move_into(primary, spare, base, icount, lean, steps)
    else:
        log.warning("clone: no recorder waits beside the guest: restarting it (a longer pause)")
        new, via = restart_from(primary, base, icount, steps), "restart"
    swap(new)
    assert new.guest is not None and new.net.gated is not None
    try:
        # Taken before the restarted recorder runs an instruction: nothing can be pending, so
        # no retry (a retry would run the guest, and the two sides' timers would part again).
        # The base and older snapshots go first: a smaller copy, and the first savevm of an
        # image that still holds the base took 0.43 s instead of 0.07 s (docs/qemu-notes.md).
        t1 = time.monotonic()
        new.drop_snapshots()
        t2 = time.monotonic()
        ram = _lean_snapshot(new, tag, ram_staging)
        t3 = time.monotonic()
        copy_image(str(new.paths.disk), str(staging), what="the clone's local copy",
                   durable=False)
        t4 = time.monotonic()
        new.drop_snapshots()           # the backup has its copy of the clone
        rs = read_section(str(staging), tag)
        t5 = time.monotonic()
        at, block = new.tail.boundary_at(rs.file_offset, timeout)
        if at != rs.current_icount:
            raise FtorchError(f"clone: snapshot {tag} is at icount {rs.current_icount} but the "
                              f"log has {at} at its offset {rs.file_offset}")
        steps.update(savevm_clone=t3 - t2, drop=t2 - t1 + t5 - t4, copy=t4 - t3,
                     log_boundary=time.monotonic() - t5)
        new.net.gated.regate(rs.file_offset)
    finally:
        new.resume_guest()   # whatever failed, the guest runs on
        new.net.inbound_open.set()
        steps["total"] = time.monotonic() - t0
        if new.domain != primary.domain:   # libvirt's clean-up of the old recorder (a restart
            primary.host.destroy(primary.domain)   # took its name and cleaned up already)
    info = CloneInfo(tag, rs.file_offset, at, block, steps["total"], str(staging), steps, ram,
                     via)
    log.info("cloned at offset %d, icount %d; guest paused %.3f s (%s)", info.offset, info.icount,
             info.pause_s, ", ".join(f"{k} {v:.3f}" for k, v in steps.items()))
    return info
