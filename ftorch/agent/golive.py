"""Go-live: turn a backup's replaying QEMU into the live, recording guest on this host.

Replay exactly to the end of what was received (completions for the disk requests in flight and
an END close the stream: see Feeder.inject_end), stop, save the state as an internal snapshot,
and repair the snapshot's replay section (rr/snapshot.py says why) and its icount timers (the
replay's real-time clock brought up to the guest's clock: rr/timerstate.py). Then the state
goes into the backup's standby recorder, started long before with `-incoming defer` (it opened the disk
inactive, so the replay kept its lock): the snapshot's VM state is a migration stream, loaded
over a unix socket. The replay and the standby map one RAM file, so the state leaves the RAM
out (`x-ignore-shared` on both): ~1 MB instead of the guest's RAM, saved and loaded in a few
ms. Without a standby, a recorder starts for the state then (libvirt's start: 0.4-0.9 s).
A live migration from the replaying QEMU is not possible: QEMU 10.0's migration thread reads
the host clock outside the replay lock and aborts (docs/qemu-notes.md). Last, the guest's MAC
is announced so the LAN finds it here.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ftorch.agent.backup import Backup
from ftorch.agent.primary import Primary
from ftorch.agent.standby import leave_ram_out, load_anywhere
from ftorch.errors import VirtError
from ftorch.gate.netbridge import LanPort
from ftorch.host.imagecopy import check_image
from ftorch.rr.snapshot import repair, vmstate_chunks
from ftorch.rr.timerstate import settle_or_warn

log = logging.getLogger("ftorch.golive")
SNAPSHOT = "ftorch-golive"


@dataclass
class GoLiveTimes:
    replay_s: float = 0.0      # replaying what was left in the spool
    save_s: float = 0.0        # stop + savevm + quit + snapshot repair
    start_s: float = 0.0       # the recorder loading the state until running
    final_icount: int = 0
    via: str = ""              # standby (the state loaded into it) or restart (-loadvm)
    state_bytes: int = 0       # the VM state streamed into the recorder (0: -loadvm)


def go_live(backup: Backup, timeout_s: float = 300.0) -> tuple[Primary, GoLiveTimes]:
    """Run the go-live sequence; return the new live role and how long each part took."""
    t0 = time.monotonic()
    # This side owns the pair now: turn the LAN's traffic for the guest here at once, so the
    # clients' retransmissions wait in this host's tap for the new recorder, not at the old host.
    lan = LanPort.open(backup.cfg.host(backup.key).tap)
    try:
        lan.announce(backup.cfg.guest.mac)
        return _go_live(backup, timeout_s, lan, t0)
    except BaseException:
        lan.close()
        raise


def _go_live(backup: Backup, timeout_s: float, lan: LanPort, t0: float) -> tuple[Primary, GoLiveTimes]:
    t = GoLiveTimes()
    backup.receiver.stop()  # nothing more from the old primary: it lost the arbiter
    t.final_icount = backup.feeder.inject_end()
    done = backup.wait_finished(timeout_s)
    if not done["finished"]:
        raise VirtError(f"go-live: the backup did not reach the end of its log "
                        f"(icount {done['icount']} of {t.final_icount}): {done['error']}")
    t1 = time.monotonic()
    t.replay_s = t1 - t0
    guest = backup.guest
    assert guest is not None
    # savevm then writes ~1 MB of device state, not the guest's RAM (docs/qemu-notes.md)
    lean = leave_ram_out(guest, "go-live")
    standby = backup.take_standby()
    guest.savevm(SNAPSHOT)
    t_saved = time.monotonic()
    backup.quiesce()   # the replay is over: nothing more to feed or watch
    if not guest.kill_and_wait():
        raise VirtError(f"go-live: the replaying QEMU {guest.name} did not exit")
    _repaired(backup)
    t2 = time.monotonic()
    recorder, t.via = load_anywhere(
        backup.cfg, backup.key, backup.host, True, standby, str(backup.paths.golive_sock),
        lambda: _counted(vmstate_chunks(str(backup.paths.disk), SNAPSHOT), t), lean, "go-live")
    live = _live(backup, lan, t)
    live.adopt(recorder)
    t.save_s = t2 - t1
    live.drop_snapshots()   # loaded, so not needed; only safe before the guest runs
    live.resume_guest()
    live.net.inbound_open.set()
    live.announce()
    t.start_s = time.monotonic() - t2
    log.info("live on host %s at icount %d via %s: replay %.2f s, save %.2f s (savevm %.2f s), "
             "start %.2f s; state %.1f MB", backup.key, t.final_icount, t.via, t.replay_s,
             t.save_s, t_saved - t1, t.start_s, t.state_bytes / 1e6)
    # after the guest runs: libvirt's clean-up of the replay takes ~0.2 s
    backup.close(keep_ram=True)
    live.want_spare()   # for the clone that protects the guest again
    return live, t


def _repaired(backup: Backup) -> None:
    check_image(str(backup.paths.disk))   # killed, not shut down: make sure the image is sound
    before, _ = repair(str(backup.paths.disk), SNAPSHOT)
    log.info("go-live snapshot repaired: it held data_kind %d, unread %d, read_event_id %d, "
             "block_request_id %d", before.data_kind, before.has_unread_data,
             before.read_event_id, before.block_request_id)
    settle_or_warn(str(backup.paths.disk), SNAPSHOT, "go-live", "the guest's clock may stand "
                   "still for a while when it idles", catch_up=True)


def _counted(chunks: Iterator[bytes], t: GoLiveTimes) -> Iterator[bytes]:
    t.state_bytes = 0
    for chunk in chunks:
        t.state_bytes += len(chunk)
        yield chunk


def _live(backup: Backup, lan: LanPort, t: GoLiveTimes) -> Primary:
    """The live role on this host, recording alone from the go-live's instruction count, in
    the standby slot (the replay held the other)."""
    live = Primary(backup.cfg, backup.key, backup.host, mode="unprotected",
                   base_icount=t.final_icount, lan=lan, standby=True)
    live.net.inbound_open.clear()   # the frames waiting in the tap go in once the guest runs
    return live
