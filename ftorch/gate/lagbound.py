"""Bounded lag: while the backup trails past the bound, the guest's inbound frames wait (pure
rules; gate/holder.py applies them to the bridge).

VMware FT (Scales et al. 2010, section 3.2) slows the primary when its backup falls behind, so a
failover never has a long log to replay. Slowing the recorder's vCPU itself (a CFS quota, or
stop/cont, or SIGSTOP duty cycles) made recordings that the backup could not replay
(docs/qemu-notes.md), so ftorch slows what drives a busy guest instead: its network input. A
frame's delivery time is an input like any other, recorded in the log, so holding it changes
nothing the replay depends on.

Hysteresis (ftorch/hysteresis.py): holding starts past `bound_s` and ends under `release_s`.
No frame waits longer than `max_hold_s`: a backup that stopped moving must not cut the guest
off its clients (the failure detector, not the bound, deals with a dead backup).
"""
from __future__ import annotations

from dataclasses import dataclass

from ftorch.hysteresis import Band, Switch, step


@dataclass(frozen=True)
class HoldPolicy:
    bound_s: float           # past this lag inbound frames start to wait
    release_s: float         # under this they flow again
    max_hold_s: float        # the longest one frame waits

    @property
    def band(self) -> Band:
        return Band(on_above=self.bound_s, off_below=self.release_s)


def policy(bound_s: float, max_hold_s: float) -> HoldPolicy:
    return HoldPolicy(bound_s=bound_s, release_s=bound_s / 2, max_hold_s=max_hold_s)


def admit(p: HoldPolicy, state: Switch, lag: float | None,
          waited_s: float) -> tuple[Switch, bool]:
    """The next state (ON: holding), and whether the frame that has waited `waited_s` goes
    in now."""
    nxt = step(p.band, state, lag)
    return nxt, nxt is Switch.OFF or waited_s >= p.max_hold_s
