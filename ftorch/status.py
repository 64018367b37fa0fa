"""What each side of a pair reports: typed records, made by the agent's roles and read by the
CLI, the operations, the bench and the tests. Pure: no I/O.

On the wire (the control socket, `ftorch status --json`) a side is one JSON object: the host's
fields, then its role's fields at the same level (`to_json`); `SideStatus.from_json` reads it
back, ignoring fields it does not know (a newer agent) and defaulting the ones it lacks.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Summary:
    samples: int = 0
    p50: float | None = None
    p99: float | None = None
    max: float | None = None


DELAY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True)
class Histogram:
    """Cumulative counts of observations <= each bound (the last count is +Inf, all of them),
    and their sum: what a Prometheus histogram exposes."""

    bounds: tuple[float, ...] = DELAY_BUCKETS
    counts: tuple[int, ...] = (0,) * (len(DELAY_BUCKETS) + 1)
    sum: float = 0.0

    def observe(self, value: float) -> Histogram:
        counts = tuple(c + (1 if i == len(self.bounds) or value <= self.bounds[i] else 0)
                       for i, c in enumerate(self.counts))
        return Histogram(self.bounds, counts, self.sum + value)


@dataclass(frozen=True)
class ChannelStatus:
    state: str = ""
    acked_offset: int = 0
    connects: int = 0
    # the primary's sender
    sent_bytes: int = 0              # resends included
    wire_bytes: int = 0              # the same as frames on the wire (deflated, with headers)
    sent_offset: int = 0
    finished: bool = False           # the stream ended and the backup has all of it
    refused_acks: int = 0            # ACKs past what was sent: a confused or hostile peer
    refused_peers: int = 0           # connections without the pair's credential (trust.py)
    last_refused: str = ""
    last_heard_at: float | None = None   # wall clock of the peer's last frame
    longest_silence_s: float = 0.0   # the peer's longest silence so far (timeout: failover)
    close_calls: int = 0             # silences past half the timeout that ended in time
    # the backup's receiver
    received_bytes: int = 0
    corrupt_frames: int = 0
    last_error: str | None = None
    partial_dropped: int = 0         # bytes of a frame cut off by a dying primary


@dataclass(frozen=True)
class GateStatus:
    held: int = 0
    released: int = 0
    open: bool = False               # passing output without acks (no backup)
    delay_p50: float | None = None
    delay_p99: float | None = None
    dropped: int = 0                 # frames dropped at the limit (the guest's TCP resends)
    limit: int = 0
    delay: Histogram = field(default_factory=Histogram)   # added delay of released frames
    lease_waits: int = 0             # times acked frames waited for the backup's lease echo


@dataclass(frozen=True)
class HoldStatus:
    """The bound on the backup's lag (gate/lagbound.py): the guest's inbound frames held back."""

    bound_s: float = 0.0
    holding: bool = False            # frames wait now: the backup trails past the bound
    episodes: int = 0                # times holding began since the primary started
    frames_held: int = 0             # frames that waited
    held_s: float = 0.0              # their waits, summed
    longest_s: float = 0.0           # the longest wait of one frame
    timeouts: int = 0                # frames let in at max_hold_s, the backup still behind


@dataclass(frozen=True)
class ThrottleStatus:
    """The bound on the backup's lag, the recorder's side (rr/throttle.py): QEMU frozen for a
    share of every period while the backup trails."""

    bound_s: float = 0.0
    slowed: bool = False             # the recorder is slowed now
    share: float = 0.0               # of each period it is frozen now
    slowdown: float = 0.0            # of the last 10 s it was frozen (0.3: the guest ran 70 %)
    episodes: int = 0                # times slowing began since the primary started
    slowed_s: float = 0.0            # time spent slowed
    frozen_s: float = 0.0            # time spent frozen by the bound


@dataclass(frozen=True)
class NetStatus:
    frames_in: int = 0
    frames_out: int = 0


@dataclass(frozen=True)
class PrimaryStatus:
    """A recording side: protected (streaming to a backup), unprotected or plain."""

    mode: str = ""
    guest: str = ""                  # running, ended, stopped
    icount: int = 0
    log_offset: int = 0
    log_ended: bool = False
    log_error: str | None = None
    channel: ChannelStatus = field(default_factory=ChannelStatus)
    backup_icount: int = 0
    lag_instructions: int = 0
    lag_seconds: float | None = None  # from the positions the backup's ACKs report
    disk_paused: bool = False        # guest paused: the pair folder is below its reserve
    net: NetStatus = field(default_factory=NetStatus)
    gate: GateStatus | None = None
    staleness_s: Summary = field(default_factory=Summary)
    hold: HoldStatus | None = None   # None: the lag bound is off, or no backup
    throttle: ThrottleStatus | None = None   # None: the recorder is never slowed


@dataclass(frozen=True)
class BackupStatus:
    """A replaying side."""

    guest: str = ""                  # waiting for log, running, paused, exited
    icount: int = 0
    fed_offset: int = 0
    fed_icount: int = 0
    received_offset: int = 0
    received_icount: int = 0
    log_ended: bool = False
    feed_error: str | None = None
    replay_finished: bool = False
    replay_error: str | None = None
    channel: ChannelStatus = field(default_factory=ChannelStatus)
    primary_icount: int = 0
    lag_instructions: int = 0
    lag_seconds: float | None = None
    break_hits: int = 0
    start_icount: int = 0            # a clone's backup starts at its snapshot
    start_error: str | None = None
    withdrawn: str | None = None     # why it stepped down (a full disk)
    backlog_frames: int = 0          # received, not yet fed to QEMU
    backlog_limit: int = 0           # limits.backlog_frames: past it the backup steps down
    standby_ready: bool = False      # a recorder waits to take the state at a go-live


@dataclass(frozen=True)
class FailoverStatus:
    state: str = ""                  # the role machine's role (arbiter/roles.py)
    generation: int | None = None
    reason: str = ""
    error: str = ""
    stream: dict[str, Any] = field(default_factory=dict)   # what a backup had when it went live
    detected_at: float | None = None
    paused_at: float | None = None
    take_over_at: float | None = None
    live_at: float | None = None
    replay_s: float | None = None
    save_s: float | None = None
    start_s: float | None = None
    golive_via: str | None = None    # standby (state loaded into a waiting recorder) or restart
    golive_state_bytes: int | None = None   # the VM state it streamed (RAM left out: ~1 MB)
    final_icount: int | None = None
    failovers: int = 0               # times this agent went live or on alone
    offset: int | None = None        # where a handed-over primary cut its log
    icount: int | None = None


@dataclass(frozen=True)
class ReprotectStatus:
    """The last protection attempt (agent/protect.py)."""

    ok: bool = False
    error: str = ""
    at: float | None = None
    pause_s: float | None = None
    peer: str = ""
    tag: str = ""
    icount: int | None = None
    passed_s: float | None = None
    via: str = ""            # the recorder the guest moved into: standby (waiting) or restart


@dataclass(frozen=True)
class GuardStatus:
    """This side's resources against their limits (agent/guard.py)."""

    free_bytes: int | None = None    # in the pair folder's filesystem
    reserve_bytes: int = 0
    low: bool = False                # below the reserve (until twice the reserve)
    tripped: str = ""                # why the agent acted (a full disk, a backlog), while it lasts
    since: float | None = None
    action: str = ""                 # what the agent did about it


ROLE_RECORDS = ("primary", "backup")


@dataclass(frozen=True)
class SideStatus:
    """One host's answer: `role` as the operator sees it (primary, backup, standby, live-alone,
    fenced, handed-over, withdrawn, or unreachable with `error` saying why)."""

    host: str
    role: str
    pair: str = ""
    pid: int | None = None
    error: str = ""
    primary: PrimaryStatus | None = None    # while this side records
    backup: BackupStatus | None = None      # while it replays
    failover: FailoverStatus | None = None
    reprotect: ReprotectStatus | None = None
    guard: GuardStatus | None = None

    # what any side has, whichever its role
    @property
    def reachable(self) -> bool:
        return self.role != "unreachable"

    @property
    def guest(self) -> str:
        rec = self.primary or self.backup
        return rec.guest if rec else ""

    @property
    def icount(self) -> int:
        rec = self.primary or self.backup
        return rec.icount if rec else 0

    @property
    def lag_instructions(self) -> int | None:
        rec = self.primary or self.backup
        return rec.lag_instructions if rec else None

    @property
    def lag_seconds(self) -> float | None:
        """The backup's own measure where it has one; the primary's from the backup's acks."""
        rec = self.backup or self.primary
        return rec.lag_seconds if rec else None

    @property
    def channel(self) -> ChannelStatus | None:
        rec = self.primary or self.backup
        return rec.channel if rec else None

    @property
    def mode(self) -> str:
        return self.primary.mode if self.primary else ""

    def to_json(self) -> dict[str, Any]:
        """The wire form: the role's record flattened into the host's object."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ROLE_RECORDS}
        for name in ROLE_RECORDS:
            rec = getattr(self, name)
            if rec is not None:
                out.update(dataclasses.asdict(rec))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SideStatus:
        role_of = "primary" if "mode" in data else "backup" if "fed_offset" in data else None
        side = decode(cls, {k: v for k, v in data.items() if k not in ROLE_RECORDS})
        if role_of == "primary":
            return dataclasses.replace(side, primary=decode(PrimaryStatus, data))
        if role_of == "backup":
            return dataclasses.replace(side, backup=decode(BackupStatus, data))
        return side


def unreachable(host: str, why: str) -> SideStatus:
    return SideStatus(host=host, role="unreachable", error=why)


def decode(cls: type, data: Any) -> Any:
    """A (nested) record from JSON data: unknown keys ignored, missing ones defaulted."""
    if not isinstance(data, dict):
        return data
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = _value(hints[f.name], data[f.name])
    return cls(**kwargs)


def _value(hint: Any, value: Any) -> Any:
    """Decode value for a field annotated `hint` (a record, `record | None`, or plain)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    for t in options:
        if dataclasses.is_dataclass(t) and isinstance(value, dict):
            return decode(t, value)
        if typing.get_origin(t) is tuple and isinstance(value, list):
            return tuple(value)     # JSON has no tuples
    return value
