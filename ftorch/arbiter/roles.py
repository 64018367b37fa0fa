"""The agent's role machine, sans-I/O: what each side does when the logging channel goes quiet.

Both sides race for the next generation on the arbiter when the channel has been silent longer
than the timeout; exactly one wins (sharedlock.py). A primary that wins goes on alone (its gate
passes output without acks); a backup that wins goes live; the loser is fenced and never emits
output. Events in, actions out; the agent performs the actions and feeds back their results. The table
names every (role, event) pair: an event that cannot happen in a role raises.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ftorch.errors import FtorchError


class Role(StrEnum):
    PRIMARY = "primary"          # recording, output gated on the backup's acks
    BACKUP = "backup"            # replaying, no output
    CLAIMING = "claiming"        # backup, channel silent (or a planned switch): racing to go live
    CLAIMING_ALONE = "claiming-alone"  # primary, backup silent: racing to go on alone
    RECLAIMING = "reclaiming"    # handed-over primary whose backup did not take over
    GOING_LIVE = "going-live"    # backup won: replay to the end, save, start recording
    LIVE_ALONE = "live-alone"    # the only copy: recording, output ungated, awaiting protection
    FENCED = "fenced"            # lost the race (or cannot reach the arbiter): no output, ever
    STOPPED = "stopped"          # operator stop: nobody goes live
    WITHDRAWN = "withdrawn"      # stepped down (disk full, or its QEMU died): never acts again
    HANDED_OVER = "handed-over"  # planned switch: guest paused, whole log with the backup


class Event(StrEnum):
    CHANNEL_SILENT = "channel-silent"    # no frame from the peer within the timeout
    CLAIM_WON = "claim-won"
    CLAIM_LOST = "claim-lost"
    ARBITER_UNREACHABLE = "arbiter-unreachable"
    LIVE = "live"                        # go-live finished: the new recorder runs
    GO_LIVE_FAILED = "go-live-failed"
    OPERATOR_STOP = "operator-stop"      # `ftorch down`: whatever happens next, nobody acts
    HANDOVER = "handover"                # `ftorch failover`, on the primary
    TAKE_OVER = "take-over"              # `ftorch failover`, on the backup, after the handover
    RESUME = "resume"                    # `ftorch failover` gave up before the backup claimed
    DISK_FULL = "disk-full"              # this host's pair folder is below its free-space reserve
    GUEST_EXITED = "guest-exited"        # this side's QEMU died (not an operator stop)


class Action(StrEnum):
    CLOSE_GATE = "close-gate"            # hold all output
    CLAIM = "claim"                      # race for the next generation
    GO_LIVE = "go-live"                  # END into the pipe, stop at the end, savevm, record
    OPEN_GATE_UNGATED = "open-gate-ungated"  # release output without acks (no backup)
    HAND_OVER = "hand-over"              # pause the guest, end the stream, wait for its ack
    RESUME_GUEST = "resume-guest"
    ALERT = "alert"                      # fence this copy and tell the operator
    WITHDRAW = "withdraw"                # stop streaming or listening: the peer takes over


class RoleError(FtorchError):
    """An event that cannot happen in the current role: a bug or a race the caller must see."""


@dataclass(frozen=True)
class Step:
    role: Role
    actions: tuple[Action, ...] = ()
    reason: str = ""


STOP = Step(Role.STOPPED, (), "operator stop: this side does not act on the peer any more")
_LOST = (Action.CLOSE_GATE, Action.ALERT)
_UNSURE = "cannot reach the arbiter: going live could make two live copies"

# Every (role, event) pair: the next step, or None for an event that cannot happen in that
# role (step() raises). The operator can stop a side in any role.
_TABLE: dict[tuple[Role, Event], Step | None] = {
    **{(r, e): None for r in Role for e in Event},
    **{(r, Event.OPERATOR_STOP): STOP for r in Role},
    (Role.PRIMARY, Event.CHANNEL_SILENT): Step(Role.CLAIMING_ALONE, (Action.CLOSE_GATE, Action.CLAIM),
                                               "backup silent: claim the pair to go on alone"),
    (Role.PRIMARY, Event.HANDOVER): Step(Role.HANDED_OVER, (Action.HAND_OVER,),
                                         "planned switch: guest paused, log handed to the backup"),
    (Role.BACKUP, Event.CHANNEL_SILENT): Step(Role.CLAIMING, (Action.CLAIM,),
                                              "primary silent: claim the pair to go live"),
    (Role.BACKUP, Event.DISK_FULL): Step(Role.WITHDRAWN, (Action.WITHDRAW,),
                                         "disk full: stepped down; the primary goes on alone"),
    # a side whose QEMU died cannot serve: it falls silent, so the peer, hearing nothing, claims
    # the pair as for a dead host, and re-protects onto this host once it asks (protect.py)
    (Role.PRIMARY, Event.GUEST_EXITED): Step(Role.WITHDRAWN, (Action.CLOSE_GATE, Action.WITHDRAW),
                                             "the recording QEMU exited: stepped down; the "
                                             "backup goes live"),
    (Role.BACKUP, Event.GUEST_EXITED): Step(Role.WITHDRAWN, (Action.WITHDRAW,),
                                            "the replaying QEMU exited: stepped down; the "
                                            "primary goes on alone"),
    (Role.BACKUP, Event.TAKE_OVER): Step(Role.CLAIMING, (Action.CLAIM,),
                                         "planned switch: claim the pair to go live"),
    (Role.HANDED_OVER, Event.RESUME): Step(Role.RECLAIMING, (Action.CLAIM,),
                                           "planned switch abandoned: claim the pair back"),
    (Role.CLAIMING, Event.CLAIM_WON): Step(Role.GOING_LIVE, (Action.GO_LIVE,), "won: going live"),
    (Role.CLAIMING_ALONE, Event.CLAIM_WON): Step(Role.LIVE_ALONE, (Action.OPEN_GATE_UNGATED,),
                                                 "won: going on alone"),
    (Role.RECLAIMING, Event.CLAIM_WON): Step(Role.LIVE_ALONE,
                                             (Action.OPEN_GATE_UNGATED, Action.RESUME_GUEST),
                                             "won back: going on alone"),
    **{(r, Event.CLAIM_LOST): Step(Role.FENCED, _LOST, "the peer holds the newer generation")
       for r in (Role.CLAIMING, Role.CLAIMING_ALONE, Role.RECLAIMING)},
    **{(r, Event.ARBITER_UNREACHABLE): Step(Role.FENCED, _LOST, _UNSURE)
       for r in (Role.CLAIMING, Role.CLAIMING_ALONE, Role.RECLAIMING)},
    (Role.GOING_LIVE, Event.LIVE): Step(Role.LIVE_ALONE, (Action.OPEN_GATE_UNGATED,),
                                        "live on this host"),
    (Role.GOING_LIVE, Event.GO_LIVE_FAILED): Step(Role.FENCED, (Action.ALERT,),
                                                  "go-live failed after winning: operator needed"),
}


def step(role: Role, event: Event) -> Step:
    """Next role and actions; RoleError if `event` cannot happen in `role`."""
    nxt = _TABLE.get((role, event))
    if nxt is None:
        raise RoleError(f"{event} cannot happen to a side that is {role}")
    return nxt
