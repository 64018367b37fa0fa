"""Bounded lag, the recorder's side: how much of each period the recording QEMU is frozen while
its backup trails (pure rules; agent/throttle.py applies them).

VMware FT (Scales et al. 2010, section 3.2) slows the primary when its backup falls behind, so a
failover never has a long log to replay. Holding the guest's inbound frames (gate/lagbound.py)
slows a guest its clients drive; a guest that makes its own work (a batch job, a boot) must be
slowed itself. The lever is a duty cycle of SIGSTOP/SIGCONT of the whole recording QEMU: to the
recorder a freeze is a host that does not schedule it, so nothing is logged that its replay could
read otherwise. A CFS quota on the vCPU thread alone, and QMP stop/cont, made logs that did not
replay (docs/qemu-notes.md).

Hysteresis (ftorch/hysteresis.py): slowing starts when the lag passes `engage_s` and ends when
it falls under `release_s`; in between the frozen share grows with the lag, from `min_share` at
`release_s` to `max_share` at `engage_s`, so the backup is held in that band, under the bound,
whenever it can replay at least 1 - `max_share` of the recorder's speed. `max_share` < 1: a
backup that stopped moving must not stop the guest (the failure detector deals with a dead
backup).
"""
from __future__ import annotations

from dataclasses import dataclass

from ftorch.errors import FtorchError
from ftorch.hysteresis import Band, Switch, step


@dataclass(frozen=True)
class ThrottlePolicy:
    bound_s: float        # the lag to keep the backup under
    engage_s: float       # past this the recorder is slowed
    release_s: float      # under this it runs freely again
    min_share: float      # the least share of a period it is frozen while slowed
    max_share: float      # the most

    @property
    def band(self) -> Band:
        return Band(on_above=self.engage_s, off_below=self.release_s)


def policy(bound_s: float, max_share: float) -> ThrottlePolicy:
    if not 0 < max_share < 1:
        raise FtorchError(f"lag.max_slowdown must be above 0 and below 1, not {max_share}")
    return ThrottlePolicy(bound_s=bound_s, engage_s=bound_s / 2, release_s=bound_s / 4,
                          min_share=min(0.1, max_share), max_share=max_share)


def share(p: ThrottlePolicy, lag: float) -> float:
    """The share of a period to freeze the recorder at this lag, once slowed."""
    span = (lag - p.release_s) / (p.engage_s - p.release_s)
    return min(p.max_share, max(p.min_share, p.min_share + span * (p.max_share - p.min_share)))


def pace(p: ThrottlePolicy, state: Switch, lag: float | None) -> tuple[Switch, float]:
    """The next state (ON: slowed) and the share of the next period the recorder is frozen."""
    nxt = step(p.band, state, lag)
    return nxt, (share(p, lag) if nxt is Switch.ON and lag is not None else 0.0)
