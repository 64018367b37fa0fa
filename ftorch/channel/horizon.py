"""Where to hold the backup: pure decisions for the replay-break control loop.

The backup must never run into the end of what it has received (QEMU stalls or exits there),
so it is held by `replay-break` at `received - margin` instructions, the break moved forward as
data arrives. QEMU deletes a break when it is hit and pauses; the loop then sets the next one and
continues. After an END we wrote ourselves (the agents always end the backup's stream so, at a
failover or after a clean stop) there is no break at all: QEMU runs onto the END and processes
every event of the last count (savevm refuses otherwise). A stream ending in the primary's own
END would instead be held with a break at its very end.
"""
from __future__ import annotations

from dataclasses import dataclass

PAUSED_STATES = {"paused", "prelaunch"}


@dataclass(frozen=True)
class Decision:
    set_break: int | None   # issue replay-break at this count
    cont: bool              # issue cont
    delete_break: bool = False  # issue replay-delete-break


# A backup fewer instructions than this behind what it received has no backlog to speak of
# (it is held ~1k instructions behind, and a busy guest runs ~2M in 10 ms).
LEVEL_INSTRUCTIONS = 20_000_000


def target(received_icount: int, margin: int, final: bool) -> int:
    """The furthest count the backup may run to with what it has received."""
    return received_icount if final else received_icount - margin


def decide(received_icount: int, margin: int, final: bool, break_at: int | None, status: str,
           icount: int, injected: bool = False) -> Decision:
    """Next step given what is received, the break in force (None if none), the backup's state,
    and whether the stream's END is one we wrote ourselves."""
    paused = status in PAUSED_STATES
    if final and injected:
        return Decision(None, cont=paused, delete_break=break_at is not None or paused)
    if status == "paused":
        break_at = None  # QEMU deletes a break when it is hit
    goal = target(received_icount, margin, final)
    set_break = goal if goal > icount and (break_at is None or goal > break_at) else None
    in_force = set_break if set_break is not None else break_at
    cont = paused and in_force is not None and in_force > icount
    return Decision(set_break, cont)
