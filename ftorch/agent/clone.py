"""Clone a running recorder for a new backup: a snapshot both QEMUs load the same way.

A snapshot taken from a running recorder does not replay (docs/qemu-notes.md, clones): loading
a snapshot runs device `post_load` hooks that the recorder never ran, and e1000's arms a
mitigation timer 1 ns ahead, so the backup's timers (and with them the icount warp) differ from
the log's from the first instruction. The cure: the recorder loads the snapshot too. It cannot
load one in place (`loadvm` in record mode deadlocks QEMU 10.0), so the recorder restarts from
its snapshot, paused, and the clone is a second snapshot taken right there, before it runs an
instruction: recorder and backup then both run their post_load hooks from the same state.
Before the restart, the snapshot's icount timers are settled (timerstate.py says why).

Pause: savevm, SIGKILL, a recording QEMU started from the snapshot, savevm, a local image copy.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ftorch.agent.primary import Primary
from ftorch.errors import FtorchError, VirtError
from ftorch.host.imagecopy import check_image, copy_image
from ftorch.rr.snapshot import read_section
from ftorch.rr.timerstate import settle

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
    old.paths.rr_log.unlink(missing_ok=True)
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
    if lan is not None:
        lan.close()   # nothing will run here: let go of the tap for whoever starts the guest
    raise VirtError(f"clone: the guest is stopped: its recorder did not restart from snapshot "
                    f"{tag} in {old.paths.disk} ({err}); nothing is lost: start it from that "
                    "snapshot") from None


def _settle_timers(disk: str, tag: str) -> None:
    """timerstate.settle, never fatal: the guest must restart whatever the clone's fate (its
    replay is verified all the same)."""
    try:
        before, after = settle(disk, tag)
    except FtorchError as e:
        log.warning("clone: the icount timers of snapshot %s stay as they are (%s); the clone "
                    "may stall at its snapshot", tag, e)
        return
    if before != after:
        log.info("clone: settled the icount timers of snapshot %s (%s -> %s)", tag, before, after)


def clone(primary: Primary, tag: str, staging: Path, timeout: float,
          swap: Callable[[Primary], None]) -> CloneInfo:
    """Snapshot `primary`'s guest for a new backup, restarting its recorder (see above).

    `swap` receives the restarted recorder as soon as it exists, so the caller never holds a
    dead one. On any failure the guest is left running (unprotected) if it can run at all.
    """
    assert primary.guest is not None
    t0 = time.monotonic()
    base = f"{tag}-base"
    primary.net.inbound_open.clear()   # QEMU refuses savevm while inbound frames are queued
    try:
        primary.guest.savevm(base, tries=100)
        icount = primary.guest.replay().icount
    except FtorchError:
        primary.resume_guest()
        primary.net.inbound_open.set()
        raise
    steps = {"savevm_base": time.monotonic() - t0}
    new = restart_from(primary, base, icount, steps)
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
        new.guest.savevm(tag, tries=1)
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
    info = CloneInfo(tag, rs.file_offset, at, block, steps["total"], str(staging), steps)
    log.info("cloned at offset %d, icount %d; guest paused %.3f s (%s)", info.offset, info.icount,
             info.pause_s, ", ".join(f"{k} {v:.3f}" for k, v in steps.items()))
    return info
