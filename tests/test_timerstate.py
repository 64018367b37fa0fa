from pathlib import Path

import pytest

from ftorch.rr.snapshot import SnapshotRepairError
from ftorch.rr.timerstate import NOT_ARMED, SETTLE_NS, IcountTimers, decode, encode, find_section

# The `timer` section of a real clone snapshot that stalled (docs/qemu-notes.md, pending warp):
# a warp pending since 238990294139 ns, its timer 51.7 us past the stopped clock.
SECTION = (Path(__file__).parent / "fixtures" / "timer-section.bin").read_bytes()
# Its guest's virtual clock (bias + icount << shift) is 386 ms behind its VIRTUAL_RT clock.
STALLED = IcountTimers(clock_rt=238993572651, warp_start=238990294139, warp_expire=238993624347,
                       adjust_expire=239317000000, virtual=238607922947)


def test_reads_the_real_section_not_its_json_description():
    ram = b"\x00" * 64 + b"\x05timer" + b"\x07" * 40       # the name inside guest memory
    vmdesc = b'{"name": "timer", "instance_id": 0, "vmsd_name": "timer/icount/warp_timer"}'
    buf = ram + SECTION + b"\x04" + b"\x00" * 30 + vmdesc
    at = find_section(buf)
    assert at == len(ram)
    assert decode(buf, at) == STALLED


def test_settled_forgets_the_warp_and_pushes_the_shift_adjustment_only_when_close():
    assert STALLED.settled == IcountTimers(STALLED.clock_rt, NOT_ARMED, NOT_ARMED,
                                           STALLED.adjust_expire,   # 323 ms ahead: kept
                                           virtual=STALLED.virtual)
    soon = IcountTimers(1000, 900, 1100, 1000 + SETTLE_NS // 2)
    assert soon.settled.adjust_expire == 1000 + SETTLE_NS
    overdue = IcountTimers(1000, NOT_ARMED, NOT_ARMED, 10)
    assert overdue.settled.adjust_expire == 1000 + SETTLE_NS
    assert IcountTimers(1000, NOT_ARMED, NOT_ARMED, NOT_ARMED).settled.adjust_expire == NOT_ARMED
    assert STALLED.settled.settled == STALLED.settled


def test_encode_patches_only_the_timer_deadlines():
    settled = STALLED.settled
    out = encode(SECTION, 0, settled)
    assert len(out) == len(SECTION)
    assert decode(out, 0) == settled
    changed = [i for i, (a, b) in enumerate(zip(SECTION, out, strict=True)) if a != b]
    assert changed and max(changed) - min(changed) < 16   # warp_start and warp_expire only


def test_a_section_without_the_icount_subsections_is_refused():
    head_end = SECTION.index(b"\x05\x0ctimer/icount")
    plain = SECTION[:head_end] + SECTION[-5:]
    with pytest.raises(SnapshotRepairError, match="shift=auto"):
        decode(plain, 0)
    assert find_section(plain) is None


def test_caught_up_brings_the_real_time_clock_up_to_the_guest_clock_only_when_behind():
    # a go-live's snapshot: the replay's VIRTUAL_RT clock 1.2 s behind the guest's clock
    behind = IcountTimers(10_000_000_000, 9_000_000_000, 10_100_000_000, 10_500_000_000,
                          virtual=11_200_000_000)
    assert behind.caught_up == IcountTimers(11_200_000_000, NOT_ARMED, NOT_ARMED,
                                            11_200_000_000 + SETTLE_NS, virtual=11_200_000_000)
    assert STALLED.caught_up == STALLED.settled          # the guest's clock already behind
    assert IcountTimers(5, NOT_ARMED, NOT_ARMED, NOT_ARMED).caught_up.clock_rt == 5  # unknown


def test_encode_writes_the_clock_and_decode_reads_it_back():
    ahead = IcountTimers(STALLED.clock_rt, STALLED.warp_start, STALLED.warp_expire,
                         STALLED.adjust_expire, virtual=STALLED.clock_rt + 1_000_000_000)
    out = encode(SECTION, 0, ahead.caught_up)
    back = decode(out, 0)
    assert back.clock_rt == STALLED.clock_rt + 1_000_000_000
    assert back.virtual == STALLED.virtual      # the guest's clock itself is never rewritten
    assert (back.warp_start, back.warp_expire) == (NOT_ARMED, NOT_ARMED)
