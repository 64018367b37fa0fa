"""The agent's role machine, sans-I/O: what each side does when the logging channel goes quiet.

Both sides race for the next generation on the arbiter when the channel has been silent longer
than the timeout; exactly one wins (sharedlock.py). A primary that wins goes on alone (its gate
passes output without acks); a backup that wins goes live; the loser is fenced and never emits
output. Events in, actions out; the agent performs the actions and feeds back their results.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    PRIMARY = "primary"          # recording, output gated on the backup's acks
    BACKUP = "backup"            # replaying, no output
    CLAIMING = "claiming"        # channel silent: racing for the next generation
    GOING_LIVE = "going-live"    # backup won: replay to the end, save, start recording
    LIVE_ALONE = "live-alone"    # the only copy: recording, output ungated, awaiting protection
    FENCED = "fenced"            # lost the race (or cannot reach the arbiter): no output, ever
    STOPPED = "stopped"          # operator stop: nobody goes live
    HANDED_OVER = "handed-over"  # planned switch: guest paused, whole log with the backup


class Event(StrEnum):
    CHANNEL_SILENT = "channel-silent"    # no frame from the peer within the timeout
    CLAIM_WON = "claim-won"
    CLAIM_LOST = "claim-lost"
    ARBITER_UNREACHABLE = "arbiter-unreachable"
    LIVE = "live"                        # go-live finished: the new recorder runs
    GO_LIVE_FAILED = "go-live-failed"
    OPERATOR_STOP = "operator-stop"      # `ftorch down` or a guest power-off
    HANDOVER = "handover"                # `ftorch failover`, on the primary
    TAKE_OVER = "take-over"              # `ftorch failover`, on the backup, after the handover
    RESUME = "resume"                    # `ftorch failover` gave up before the backup claimed


class Action(StrEnum):
    CLOSE_GATE = "close-gate"            # hold all output
    CLAIM = "claim"                      # race for the next generation
    GO_LIVE = "go-live"                  # END into the pipe, stop at the end, savevm, record
    OPEN_GATE_UNGATED = "open-gate-ungated"  # release output without acks (no backup)
    STOP_GUEST = "stop-guest"
    HAND_OVER = "hand-over"              # pause the guest, end the stream, wait for its ack
    RESUME_GUEST = "resume-guest"
    ALERT = "alert"                      # tell the operator; nothing automatic is safe


@dataclass(frozen=True)
class Step:
    role: Role
    actions: tuple[Action, ...] = ()
    reason: str = ""


# (role, event) -> next step. Anything missing: stay as you are (events can arrive late).
_TABLE: dict[tuple[Role, Event], Step] = {
    (Role.PRIMARY, Event.CHANNEL_SILENT): Step(Role.CLAIMING, (Action.CLOSE_GATE, Action.CLAIM),
                                               "backup silent: claim the pair to go on alone"),
    (Role.BACKUP, Event.CHANNEL_SILENT): Step(Role.CLAIMING, (Action.CLAIM,),
                                              "primary silent: claim the pair to go live"),
    (Role.PRIMARY, Event.OPERATOR_STOP): Step(Role.STOPPED, (Action.STOP_GUEST,), "operator stop"),
    (Role.BACKUP, Event.OPERATOR_STOP): Step(Role.STOPPED, (Action.STOP_GUEST,),
                                             "operator stop: the backup does not go live"),
    (Role.CLAIMING, Event.OPERATOR_STOP): Step(Role.STOPPED, (Action.STOP_GUEST,), "operator stop"),
    (Role.CLAIMING, Event.CLAIM_LOST): Step(Role.FENCED, (Action.CLOSE_GATE, Action.ALERT),
                                            "the peer holds the newer generation"),
    (Role.CLAIMING, Event.ARBITER_UNREACHABLE): Step(
        Role.FENCED, (Action.CLOSE_GATE, Action.ALERT),
        "cannot reach the arbiter: going live could make two live copies"),
    (Role.GOING_LIVE, Event.LIVE): Step(Role.LIVE_ALONE, (Action.OPEN_GATE_UNGATED,),
                                        "live on this host"),
    (Role.GOING_LIVE, Event.GO_LIVE_FAILED): Step(Role.FENCED, (Action.ALERT,),
                                                  "go-live failed after winning: operator needed"),
    (Role.LIVE_ALONE, Event.OPERATOR_STOP): Step(Role.STOPPED, (Action.STOP_GUEST,), "operator stop"),
    (Role.PRIMARY, Event.HANDOVER): Step(Role.HANDED_OVER, (Action.HAND_OVER,),
                                         "planned switch: guest paused, log handed to the backup"),
    (Role.BACKUP, Event.TAKE_OVER): Step(Role.CLAIMING, (Action.CLAIM,),
                                         "planned switch: claim the pair to go live"),
    (Role.HANDED_OVER, Event.RESUME): Step(Role.CLAIMING, (Action.CLAIM,),
                                           "planned switch abandoned: claim the pair back"),
    (Role.HANDED_OVER, Event.OPERATOR_STOP): Step(Role.STOPPED, (Action.STOP_GUEST,),
                                                  "handed over: stop the paused guest"),
}


def step(role: Role, event: Event, was: Role | None = None) -> Step:
    """Next role and actions. `was` is the role before CLAIMING (decides what a win means)."""
    if role == Role.CLAIMING and event == Event.CLAIM_WON:
        if was == Role.PRIMARY:
            return Step(Role.LIVE_ALONE, (Action.OPEN_GATE_UNGATED,), "won: going on alone")
        if was == Role.HANDED_OVER:
            return Step(Role.LIVE_ALONE, (Action.OPEN_GATE_UNGATED, Action.RESUME_GUEST),
                        "won back: going on alone")
        return Step(Role.GOING_LIVE, (Action.GO_LIVE,), "won: going live")
    return _TABLE.get((role, event), Step(role, (), "no change"))
