"""The icount timers of an internal snapshot, and settling them before a recorder restarts from it.

A replaying QEMU follows its log everywhere except where QEMU's own code asks whether the VM
runs. `icount_warp_rt()` is one such place: when the warp timer fires (on QEMU_CLOCK_VIRTUAL_RT)
in a running VM it moves the virtual clock on by the time the idle vCPU slept; in a stopped VM it
forgets the warp. A clone's backup sits stopped (libvirt starts it with -S) while it reads the
clock events its recorder logged between the snapshot and `cont`; if the recorder's snapshot held
a pending warp that expired in the first main-loop rounds after `cont`, the stopped backup reads
those rounds too, forgets the warp the recorder applied, and never reaches the timers that fired
in the recorder: the clone stalls at its snapshot (docs/qemu-notes.md, "pending warp").

The cure: the recorder restarts from its base snapshot with no warp pending and the adaptive-shift
timer (also runstate-dependent, `icount_adjust()`) at least SETTLE_NS ahead, so nothing the
stopped backup can read before its `cont` depends on whether it runs. The guest's virtual clock
misses at most the few milliseconds the warp would have added, as in any pause.

A go-live's snapshot comes from the backup's replaying QEMU, whose QEMU_CLOCK_VIRTUAL_RT counted
only the time that QEMU ran (it sits stopped at its breaks), so it is behind the guest's virtual
clock. Under `shift=auto` an idle vCPU's warp is capped at (VIRTUAL_RT - virtual): the new
recorder's guest clock then stands still whenever it idles, until real time has made up the
difference, and every guest timer (a TCP retransmission, a delayed ACK) waits with it; clients
stalled 0.5-1.4 s after go-lives that way. `caught_up` moves the snapshot's VIRTUAL_RT to the
guest's virtual clock (nothing replays the go-live's recording from that snapshot).

Pure part: the `timer` section's layout (QEMU 10.0 system/cpu-timers.c, version 2, icount
subsections). I/O part: reading and rewriting it in a qcow2 snapshot (snaprepair.Qcow2).
"""
from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, replace

from ftorch.errors import FtorchError
from ftorch.rr.snapshot import SECTION_FOOTER, SECTION_FULL, Qcow2, SnapshotRepairError, locate

log = logging.getLogger("ftorch.timerstate")
SETTLE_NS = 100_000_000     # the adaptive-shift timer fires no sooner than this after `cont`
NOT_ARMED = -1              # a timer's saved deadline when it is not pending
_SUBSECTION = 0x05
_NAME = b"\x05timer"
_HEAD = 1 + 4 + len(_NAME) + 4 + 4      # marker, section id, name, instance id, version
_MAIN = struct.Struct(">q8xq")           # cpu_ticks_offset, unused, cpu_clock_offset
_PAIR = struct.Struct(">qq")
# Field bytes of each subsection this reader knows (after its name and version).
_ICOUNT = struct.Struct(">qq")          # qemu_icount_bias, qemu_icount
_SHIFT = struct.Struct(">h")             # icount_time_shift (then last_delta)
_SUBSECTIONS = {b"timer/icount": 16, b"timer/icount/warp_timer": 16,
                b"timer/icount/timers": 16, b"timer/icount/shift": 10}


@dataclass(frozen=True)
class IcountTimers:
    """Where the icount timers stand in a snapshot (all on QEMU_CLOCK_VIRTUAL_RT, in ns)."""

    clock_rt: int        # the clock when the VM stopped for the snapshot (cpu_clock_offset)
    warp_start: int      # where a pending warp began; -1: none
    warp_expire: int     # the warp timer's deadline; -1: not armed
    adjust_expire: int   # the adaptive-shift timer's deadline (icount_rt_timer); -1: not armed
    virtual: int | None = None   # the guest's virtual clock (QEMU_CLOCK_VIRTUAL), if saved

    @property
    def settled(self) -> IcountTimers:
        """No warp pending, the shift adjustment at least SETTLE_NS after the clock."""
        adjust = self.adjust_expire
        if adjust != NOT_ARMED:
            adjust = max(adjust, self.clock_rt + SETTLE_NS)
        return replace(self, warp_start=NOT_ARMED, warp_expire=NOT_ARMED, adjust_expire=adjust)

    @property
    def caught_up(self) -> IcountTimers:
        """Settled, with VIRTUAL_RT at least at the guest's virtual clock (a go-live's)."""
        if self.virtual is None or self.virtual <= self.clock_rt:
            return self.settled
        return replace(self, clock_rt=self.virtual).settled


@dataclass(frozen=True)
class _Layout:
    """Offsets (from the section's start) of the fields settle() rewrites."""

    warp: int
    timers: int


def find_section(buf: bytes) -> int | None:
    """Offset of the last well-formed `timer` section in buf (the vmstate's JSON description
    at the end names it too, without the binary header)."""
    pos = len(buf)
    while (pos := buf.rfind(_NAME, 0, pos)) >= 5:
        start = pos - 5
        if (buf[start] == SECTION_FULL and start + _HEAD + _MAIN.size <= len(buf)
                and struct.unpack_from(">II", buf, pos + len(_NAME)) == (0, 2)):
            try:
                _parse(buf, start)
                return start
            except SnapshotRepairError:
                pass
    return None


def _parse(buf: bytes, start: int) -> tuple[IcountTimers, _Layout]:
    _, clock_rt = _MAIN.unpack_from(buf, start + _HEAD)
    pos, fields = start + _HEAD + _MAIN.size, {}
    while pos < len(buf) and buf[pos] == _SUBSECTION:
        n = buf[pos + 1]
        name = bytes(buf[pos + 2:pos + 2 + n])
        if name not in _SUBSECTIONS:
            raise SnapshotRepairError(f"unknown timer subsection {name!r}")
        fields[name] = pos + 2 + n + 4 - start
        pos += 2 + n + 4 + _SUBSECTIONS[name]
    if pos + 5 > len(buf) or buf[pos] != SECTION_FOOTER or buf[pos + 1:pos + 5] != buf[start + 1:start + 5]:
        raise SnapshotRepairError("timer section does not end where its layout says")
    missing = [k.decode() for k in (b"timer/icount/warp_timer", b"timer/icount/timers")
               if k not in fields]
    if missing:
        raise SnapshotRepairError(f"timer section has no {', '.join(missing)}: not an "
                                  "adaptive icount (shift=auto) snapshot")
    layout = _Layout(fields[b"timer/icount/warp_timer"], fields[b"timer/icount/timers"])
    warp_start, warp_expire = _PAIR.unpack_from(buf, start + layout.warp)
    adjust_expire, _ = _PAIR.unpack_from(buf, start + layout.timers)
    return IcountTimers(clock_rt, warp_start, warp_expire, adjust_expire,
                        _virtual(buf, start, fields)), layout


def _virtual(buf: bytes, start: int, fields: dict[bytes, int]) -> int | None:
    """bias + (icount << shift): QEMU's icount_get_locked() for a stopped VM."""
    if b"timer/icount" not in fields or b"timer/icount/shift" not in fields:
        return None
    bias, icount = _ICOUNT.unpack_from(buf, start + fields[b"timer/icount"])
    (shift,) = _SHIFT.unpack_from(buf, start + fields[b"timer/icount/shift"])
    return bias + (icount << shift)


def decode(buf: bytes, start: int) -> IcountTimers:
    return _parse(buf, start)[0]


def encode(buf: bytes, start: int, timers: IcountTimers) -> bytes:
    """buf's section at start, rewritten to hold `timers` (same length: patched in place)."""
    _, layout = _parse(buf, start)
    out = bytearray(buf)
    struct.pack_into(">q", out, start + _HEAD + _MAIN.size - 8, timers.clock_rt)
    struct.pack_into(">qq", out, start + layout.warp, timers.warp_start, timers.warp_expire)
    struct.pack_into(">q", out, start + layout.timers, timers.adjust_expire)
    return bytes(out)


# Generous: the section holds a few subsections and its footer.
_SPAN = _HEAD + _MAIN.size + sum(2 + len(k) + 4 + v for k, v in _SUBSECTIONS.items()) + 5


def settle(path: str, tag: str, catch_up: bool = False) -> tuple[IcountTimers, IcountTimers]:
    """Rewrite snapshot `tag`'s icount timers as `IcountTimers.settled` (catch_up:
    `IcountTimers.caught_up`); return (before, after). Only for an image no QEMU writes."""
    img = Qcow2(path)
    try:
        snap = img.vmstate_snapshot(tag)
        at = locate(img, snap, find_section, _SPAN, "timer")
        buf = img.read_vmstate(snap, at, min(_SPAN, snap.vm_state_size - at))
        before = decode(buf, 0)
        after = before.caught_up if catch_up else before.settled
        if after != before:
            img.write_vmstate(snap, at, encode(buf, 0, after))
        return before, after
    finally:
        img.close()


def settle_or_warn(path: str, tag: str, what: str, risk: str, catch_up: bool = False) -> None:
    """settle(), never fatal: the guest must run on whatever happens here. what: whose snapshot
    (for the log); risk: what an unsettled one may cause."""
    try:
        before, after = settle(path, tag, catch_up)
    except FtorchError as e:
        log.warning("%s: the icount timers of snapshot %s stay as they are (%s); %s", what, tag,
                    e, risk)
        return
    if before != after:
        log.info("%s: settled the icount timers of snapshot %s (%s -> %s)", what, tag, before,
                 after)
