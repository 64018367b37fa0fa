"""Go-live: turn a backup's replaying QEMU into the live, recording guest on this host.

Replay exactly to the end of what was received (completions for the disk requests in flight and
an END close the stream: see Feeder.inject_end), stop, save the state as an internal snapshot,
repair the snapshot's replay section, and start a recording QEMU from it with this host's NIC on
the LAN; then announce the guest's MAC so the LAN finds it here.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ftorch.agent.backup import Backup
from ftorch.agent.primary import Primary
from ftorch.errors import VirtError
from ftorch.gate.netbridge import LanPort
from ftorch.host.imagecopy import check_image
from ftorch.host.layout import domain_name
from ftorch.rr.snapshot import repair

log = logging.getLogger("ftorch.golive")
SNAPSHOT = "ftorch-golive"


@dataclass
class GoLiveTimes:
    replay_s: float = 0.0      # replaying what was left in the spool
    save_s: float = 0.0        # stop + savevm + quit + snapshot repair
    start_s: float = 0.0       # recording QEMU from the snapshot until running
    final_icount: int = 0


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
    guest.savevm(SNAPSHOT)
    t_saved = time.monotonic()
    guest.kill_now()   # the snapshot is flushed to the image; a clean exit only costs time
    backup.close()
    name = domain_name(backup.cfg, backup.key)
    if not backup.host.wait_gone(name, timeout=30):
        raise VirtError(f"go-live: the replaying QEMU {name} did not go away")
    t_gone = time.monotonic()
    check_image(str(backup.paths.disk))   # killed, not shut down: make sure the image is sound
    before, _ = repair(str(backup.paths.disk), SNAPSHOT)
    log.info("go-live snapshot repaired: it held data_kind %d, unread %d, read_event_id %d, "
             "block_request_id %d (stop+savevm %.2f s, backup closed %.2f s, repair %.2f s)",
             before.data_kind, before.has_unread_data, before.read_event_id,
             before.block_request_id, t_saved - t1, t_gone - t_saved, time.monotonic() - t_gone)
    t2 = time.monotonic()
    t.save_s = t2 - t1
    live = Primary(backup.cfg, backup.key, backup.host, mode="unprotected", loadvm=SNAPSHOT,
                   base_icount=t.final_icount, lan=lan)
    live.net.inbound_open.clear()   # the frames waiting in the tap go in once the guest runs
    live.start(paused=True)
    assert live.guest is not None
    live.drop_snapshots()   # loaded, so not needed; only safe before the guest runs
    live.resume_guest()
    live.net.inbound_open.set()
    live.announce()
    t.start_s = time.monotonic() - t2
    log.info("live on host %s at icount %d: replay %.2f s, save %.2f s, start %.2f s",
             backup.key, t.final_icount, t.replay_s, t.save_s, t.start_s)
    return live, t
