"""Bounded lag: while the backup trails past the bound, the guest's inbound frames wait (pure
rules; gate/holder.py applies them to the bridge).

VMware FT (Scales et al. 2010, section 3.2) slows the primary when its backup falls behind, so a
failover never has a long log to replay. Slowing the recorder's vCPU itself (a CFS quota, or
stop/cont) made recordings that the backup could not replay (docs/qemu-notes.md), so ftorch
slows what drives a busy guest instead: its network input. A frame's delivery time is an input
like any other, recorded in the log, so holding it changes nothing the replay depends on.

Hysteresis: holding starts past `bound_s` and ends under `release_s`. No frame waits longer
than `max_hold_s`: a backup that stopped moving must not cut the guest off its clients (the
failure detector, not the bound, deals with a dead backup).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ftorch.errors import FtorchError


@dataclass(frozen=True)
class HoldPolicy:
    bound_s: float           # past this lag inbound frames start to wait
    release_s: float         # under this they flow again
    max_hold_s: float        # the longest one frame waits


class Zone(Enum):
    OVER = "over"            # lag above bound_s
    BAND = "band"            # between release_s and bound_s
    UNDER = "under"          # below release_s
    UNKNOWN = "unknown"      # no lag known: no backup, or no log has passed yet


class Hold(Enum):
    OPEN = "open"
    HOLDING = "holding"


# (state now, zone of the lag) -> next state. Complete: every combination is here.
RULES: dict[tuple[Hold, Zone], Hold] = {
    (Hold.OPEN, Zone.OVER): Hold.HOLDING,
    (Hold.OPEN, Zone.BAND): Hold.OPEN,
    (Hold.OPEN, Zone.UNDER): Hold.OPEN,
    (Hold.OPEN, Zone.UNKNOWN): Hold.OPEN,
    (Hold.HOLDING, Zone.OVER): Hold.HOLDING,
    (Hold.HOLDING, Zone.BAND): Hold.HOLDING,
    (Hold.HOLDING, Zone.UNDER): Hold.OPEN,
    (Hold.HOLDING, Zone.UNKNOWN): Hold.OPEN,   # the backup is gone: nothing to wait for
}


def policy(bound_s: float, max_hold_s: float) -> HoldPolicy:
    return HoldPolicy(bound_s=bound_s, release_s=bound_s / 2, max_hold_s=max_hold_s)


def zone(p: HoldPolicy, lag: float | None) -> Zone:
    if lag is None:
        return Zone.UNKNOWN
    if lag > p.bound_s:
        return Zone.OVER
    return Zone.UNDER if lag < p.release_s else Zone.BAND


def step(p: HoldPolicy, state: Hold, lag: float | None) -> Hold:
    key = (state, zone(p, lag))
    if key not in RULES:
        raise FtorchError(f"lag bound: no rule for {key}")
    return RULES[key]


def admit(p: HoldPolicy, state: Hold, lag: float | None, waited_s: float) -> tuple[Hold, bool]:
    """The next state, and whether the frame that has waited `waited_s` goes in now."""
    nxt = step(p, state, lag)
    return nxt, nxt is Hold.OPEN or waited_s >= p.max_hold_s
