"""Re-protection: clone the running guest into a new backup on the peer host.

Run by the live side's agent (for `ftorch protect`, and by itself after a failover):
  1. the peer gets a fresh folder and a standby agent;
  2. the guest pauses while its recorder restarts from a snapshot and a clone snapshot is taken
     there with a local copy of the image (clone.py says why); output is gated from the clone's
     log position on; the guest resumes (the only pause);
  3. the standby becomes a backup whose stream starts at that position; the primary streams;
  4. the image copy goes to the peer while the guest runs, after a free-space check;
  5. the backup checks the snapshot (tag, instruction count) and its QEMU, and replays from it;
  6. protection counts only once the backup has replayed past the snapshot and is level with
     what it has received; then
     both sides arm their failover watch.
Any failure before 6 puts the primary back to running alone and stops the peer: the running
guest is never harmed.
"""
from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

from ftorch.agent.clone import clone
from ftorch.agent.primary import Primary
from ftorch.arbiter.sharedlock import SharedLock
from ftorch.channel import trust
from ftorch.channel.horizon import LEVEL_INSTRUCTIONS
from ftorch.config import PairConfig
from ftorch.errors import FtorchError
from ftorch.host.layout import clone_ram_file, domain_names, paths, ram_file
from ftorch.host.prepare import BOOT_FILES
from ftorch.host.proc import plain
from ftorch.rpc.hosts import Hosts, pair_dir
from ftorch.rr.snapshot import write_section
from ftorch.status import BackupStatus
from ftorch.wait import wait_for

log = logging.getLogger("ftorch.protect")
PASS_TIMEOUT_S = 180.0
# Protection counts once the backup is this far past the snapshot (a clone that does not replay
# stalls at its first events) and level with what it has received: an idle guest runs ~1M
# instructions a second, so a margin of 50M kept a pair unprotected for a minute after a failover.
PASS_MARGIN = 5_000_000
STALL_S = 20.0               # no progress this long while the log grows: the clone is stuck
PEER_GONE_S = 10.0           # the clone's backup unanswered this long: its host or agent died


class ProtectError(FtorchError):
    """Protection could not be (re)established; the guest runs on unprotected."""

    pause_s: float | None = None   # how long the clone paused the guest, if it got that far


@dataclass
class ProtectResult:
    peer: str
    tag: str
    offset: int
    icount: int
    pause_s: float
    pause_steps: dict[str, float]   # the pause by step (clone.py)
    copy_s: float
    passed_s: float          # from the clone until the backup passed the snapshot's count
    image_bytes: int         # data sent to the peer (the image's holes are not sent)
    image_sha256: str        # of the image's data, checked on the peer after the copy
    ram_bytes: int = 0       # the guest's RAM sent beside the image (0: it is in the image)
    clone_via: str = ""      # the recorder the guest moved into: standby or restart


# Roles of a peer's agent that will never act for the pair again: it stepped down (a full disk,
# its QEMU died) or lost the arbiter race; either way this side holds the pair's generation.
STEPPED_DOWN = ("withdrawn", "fenced")


def peer_free(cfg: PairConfig, me: str) -> bool:
    """Can the peer host take a backup: it answers over SSH and no agent of this pair runs
    there, or only one that stepped down (or was fenced) and is back within its limits (it
    keeps saying why until then); a host we cannot reach is not free: it may still run the
    pair."""
    peer = cfg.peer(me)
    hosts = Hosts(cfg, me)
    try:
        if not hosts(peer).probe(pair_dir(cfg, peer)).agent:
            return True
        st = hosts.status(peer)
        return st.role in STEPPED_DOWN and not (st.guard and st.guard.tripped)
    except FtorchError:
        return False


def _dismiss_stepped_down(hosts: Hosts, peer: str) -> None:
    """An agent that stepped down on the peer has said why; it goes before a new backup."""
    role = hosts.status(peer).role
    if role in STEPPED_DOWN:
        log.info("dismissing the %s agent on host %s", role, peer)
        hosts.agent(peer, "quit", timeout=10)
        wait_for(lambda: not hosts.status(peer).reachable, 60,
                 f"the {role} agent on host {peer} to quit")


def _clear_orphans(cfg: PairConfig, hosts: Hosts, peer: str) -> None:
    """A QEMU of the pair still running on the peer with no agent there was left by an agent
    that died: it emits nothing (its NIC went through that agent) and this side holds the
    pair's generation, so it goes before a new backup takes its domain names."""
    for name in domain_names(cfg, peer):
        if hosts(peer).destroy_domain(name, str(ram_file(cfg, peer))):
            log.warning("destroyed domain %s on host %s, left running by an agent that is gone",
                        name, peer)


def protect(cfg: PairConfig, me: str, primary: Primary, generation: int | None,
            swap: Callable[[Primary], None],
            progress: Callable[[int, int], None] | None = None,
            fault: str | None = None) -> ProtectResult:
    """Clone the running guest of `primary` (on host `me`) into a backup on the peer host.

    The clone restarts the recorder: `swap` receives the new `Primary` (also on failure)."""
    peer = cfg.peer(me)
    hosts = Hosts(cfg, me)
    there = pair_dir(cfg, peer)
    if not peer_free(cfg, me):
        raise ProtectError(f"host {peer} cannot take a backup: it runs an agent for pair "
                           f"{cfg.pair} or does not answer over SSH")
    try:
        mine = SharedLock(cfg.shared_dir, cfg.pair).current()
        hosts.sees_record(peer, mine.text() if mine else "")
    except FtorchError as e:   # ArbiterError is one
        raise ProtectError(f"host {peer} cannot take a backup: {e}") from None
    tag = f"ftorch-clone-{generation or 0}-{int(time.time())}"
    here = paths(cfg, me)
    staging = here.root / "clone.qcow2"
    ram_staging = clone_ram_file(cfg, me)
    info = None
    current = [primary]

    def swapped(new: Primary) -> None:
        current[0] = new
        swap(new)

    try:
        _dismiss_stepped_down(hosts, peer)
        _clear_orphans(cfg, hosts, peer)
        # room for the clone (its memory, at least) above the reserve, checked before the
        # guest pauses for it; send_image checks the exact size after the clone
        hosts(peer).prepare_pair(there, {n: here.root / n for n in BOOT_FILES},
                                 (here.root / "pair.yaml").read_text(),
                                 trust.read_credential(here.root),
                                 room=(cfg.limits.disk_reserve_mib + cfg.guest.memory_mib) << 20,
                                 what="the clone")
        hosts(peer).start_agent(there, peer, "standby")
        wait_for(lambda: hosts.status(peer).role == "standby", 60,
                 f"the standby agent on host {peer} (see {there}/agent.log there)")
        if fault == "no-standby":   # the clone restarts the recorder instead
            spare = current[0].take_spare()
            if spare is not None:
                spare.destroy()
        info = clone(current[0], tag, staging, ram_staging, timeout=30, swap=swapped)
        t0 = time.monotonic()
        hosts.agent(peer, "begin", timeout=30, offset=info.offset, icount=info.icount,
                    block=info.block, tag=tag, ram=info.ram is not None)
        current[0].protect()
        if fault:
            spoil(str(staging), info.ram, tag, fault)
        sent = hosts(peer).send_image(str(staging), f"{there}/{paths(cfg, peer).disk.name}",
                                      progress, what="the clone",
                                      reserve=cfg.limits.disk_reserve_mib << 20)
        owned = [f"{there}/{paths(cfg, peer).disk.name}"]
        ram_bytes = 0
        if info.ram is not None:   # into the file the backup's replay will map
            owned.append(str(ram_file(cfg, peer)))
            # room for the pages the replay touches later too: the whole of the guest's RAM
            ram_bytes = hosts(peer).send_image(info.ram, owned[-1], what="the clone's RAM",
                                               reserve=cfg.guest.memory_mib << 20).data_bytes
        hosts(peer).request("own", paths=owned)
        copy_s = time.monotonic() - t0
        hosts.agent(peer, "disk-ready", timeout=30)
        _wait_passed(hosts, peer, info.icount, current[0].backup_silent)
        hosts.agent(peer, "arm", timeout=10)
    except (FtorchError, OSError) as e:
        _roll_back(hosts, peer, current[0])
        err = e if isinstance(e, ProtectError) else ProtectError(
            f"protecting pair {cfg.pair} on host {peer} failed: {e}; the guest runs on unprotected")
        err.pause_s = info.pause_s if info else None
        raise err from None
    finally:
        staging.unlink(missing_ok=True)
        ram_staging.unlink(missing_ok=True)
    res = ProtectResult(peer, tag, info.offset, info.icount, info.pause_s, info.steps, copy_s,
                        time.monotonic() - t0 + info.pause_s, sent.data_bytes, sent.sha256,
                        ram_bytes, info.via)
    log.info("protected by host %s: %s", peer, asdict(res))
    return res


FAULTS = ("missing-snapshot", "mismatched-snapshot", "short-ram", "no-standby")


def spoil(image: str, ram: str | None, tag: str, fault: str) -> None:
    """Test hook (`ftorch debug clone-fault`): make the shipped image or RAM a wrong one, as a
    stale or mixed-up copy would be."""
    if fault == "no-standby":
        return   # not a spoiled copy: the clone went without a waiting recorder (protect())
    if fault == "short-ram":
        if ram is None:
            raise ProtectError("clone fault short-ram: this clone's snapshot holds the RAM")
        os.truncate(ram, os.stat(ram).st_size // 2)
    elif fault == "missing-snapshot":
        subprocess.run(plain(["qemu-img", "snapshot", "-d", tag, image]), check=True, capture_output=True)
    elif fault == "mismatched-snapshot":   # the same tag, taken a million instructions later
        write_section(image, tag, lambda rs: replace(rs, current_icount=rs.current_icount + 10**6))
    else:
        raise ProtectError(f"unknown clone fault {fault!r}; known: {', '.join(FAULTS)}")


def _wait_passed(hosts: Hosts, peer: str, icount: int,
                 silent: Callable[[], bool] = lambda: False) -> None:
    """Wait until the clone's backup has replayed past the snapshot by a margin and is level
    with what it has received; fail fast if it sits at one count while its log grows (a clone
    that does not replay), or if it is gone: silent on the logging channel past its timeout
    (the guest's output waits for its acks meanwhile), or not answering over SSH."""
    deadline = time.monotonic() + PASS_TIMEOUT_S
    goal = icount + PASS_MARGIN
    last, since = -1, time.monotonic()
    heard = time.monotonic()
    while True:
        if silent():
            raise ProtectError(f"the backup on host {peer} fell silent on the logging channel "
                               "(its host or agent died in mid-clone)")
        side = hosts.status(peer)
        if side.reachable:
            heard = time.monotonic()
        elif time.monotonic() - heard > PEER_GONE_S:   # one unanswered call is no death
            raise ProtectError(f"the backup on host {peer} stopped answering "
                               f"{PEER_GONE_S:.0f} s ago: {side.error}")
        st = side.backup or BackupStatus()
        error = st.start_error or st.replay_error
        if error:
            raise ProtectError(f"the backup on host {peer} failed: {error}")
        now_icount, received = st.icount, st.received_icount
        if now_icount > goal and received - now_icount < LEVEL_INSTRUCTIONS:
            return
        if now_icount != last:
            last, since = now_icount, time.monotonic()
        grew = received > goal
        if grew and time.monotonic() - since > STALL_S and not now_icount:
            raise ProtectError(f"the backup on host {peer} did not start its replay in "
                               f"{STALL_S:.0f} s with {received} instructions "
                               f"of log received (see its agent.log)")
        if grew and time.monotonic() - since > STALL_S:
            raise ProtectError(f"the clone's replay on host {peer} is stuck at icount {now_icount} "
                               f"(snapshot at {icount}, {received} received): "
                               "it does not follow the log (see docs/qemu-notes.md, clones)")
        if time.monotonic() > deadline:
            raise ProtectError(f"the backup on host {peer} did not replay past the snapshot "
                               f"(icount {icount}) and catch up with its log in "
                               f"{PASS_TIMEOUT_S:.0f} s (at {now_icount}, {received} received)")
        time.sleep(0.25)


def _roll_back(hosts: Hosts, peer: str, primary: Primary) -> None:
    primary.unprotect()
    try:
        hosts.agent(peer, "quit", timeout=10)
        wait_for(lambda: not hosts.status(peer).reachable, 60,
                 f"the agent on host {peer} to quit")
    except FtorchError as e:
        log.warning("stopping the agent on host %s: %s", peer, e)
