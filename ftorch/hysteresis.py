"""A switch on a measure, with hysteresis: on past `on_above`, off again only under `off_below`;
an unknown measure switches it off at once. One table for every such switch (the lag bound's
inbound hold, gate/lagbound.py, and its recorder throttle, rr/throttle.py)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ftorch.errors import FtorchError


@dataclass(frozen=True)
class Band:
    on_above: float
    off_below: float


class Zone(Enum):
    OVER = "over"          # past on_above
    BAND = "band"          # between the two
    UNDER = "under"        # under off_below
    UNKNOWN = "unknown"    # no measure (for the lag: no backup, or no log has passed yet)


class Switch(Enum):
    OFF = "off"
    ON = "on"


# (state now, zone of the measure) -> next state. Complete: every combination is here.
RULES: dict[tuple[Switch, Zone], Switch] = {
    (Switch.OFF, Zone.OVER): Switch.ON,
    (Switch.OFF, Zone.BAND): Switch.OFF,
    (Switch.OFF, Zone.UNDER): Switch.OFF,
    (Switch.OFF, Zone.UNKNOWN): Switch.OFF,
    (Switch.ON, Zone.OVER): Switch.ON,
    (Switch.ON, Zone.BAND): Switch.ON,
    (Switch.ON, Zone.UNDER): Switch.OFF,
    (Switch.ON, Zone.UNKNOWN): Switch.OFF,   # the backup is gone: nothing to wait for
}


def zone(band: Band, value: float | None) -> Zone:
    if value is None:
        return Zone.UNKNOWN
    if value > band.on_above:
        return Zone.OVER
    return Zone.UNDER if value < band.off_below else Zone.BAND


def step(band: Band, state: Switch, value: float | None) -> Switch:
    key = (state, zone(band, value))
    if key not in RULES:
        raise FtorchError(f"hysteresis: no rule for {key}")
    return RULES[key]
