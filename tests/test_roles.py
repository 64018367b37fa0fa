import pytest

from ftorch.arbiter.roles import _TABLE, Action, Event, Role, RoleError, step


def test_backup_that_wins_goes_live_and_then_opens_its_output():
    s = step(Role.BACKUP, Event.CHANNEL_SILENT)
    assert s.role == Role.CLAIMING and s.actions == (Action.CLAIM,)
    s = step(Role.CLAIMING, Event.CLAIM_WON)
    assert s.role == Role.GOING_LIVE and s.actions == (Action.GO_LIVE,)
    assert step(Role.GOING_LIVE, Event.LIVE).actions == (Action.OPEN_GATE_UNGATED,)


def test_primary_holds_output_while_it_claims_and_goes_on_alone_if_it_wins():
    s = step(Role.PRIMARY, Event.CHANNEL_SILENT)
    assert s.actions[0] == Action.CLOSE_GATE and s.role == Role.CLAIMING_ALONE
    assert step(Role.CLAIMING_ALONE, Event.CLAIM_WON).role == Role.LIVE_ALONE


def test_losers_and_the_unsure_are_fenced():
    for role in (Role.CLAIMING, Role.CLAIMING_ALONE, Role.RECLAIMING):
        for event in (Event.CLAIM_LOST, Event.ARBITER_UNREACHABLE):
            s = step(role, event)
            assert s.role == Role.FENCED and Action.CLOSE_GATE in s.actions
            assert Action.ALERT in s.actions
    assert step(Role.GOING_LIVE, Event.GO_LIVE_FAILED).role == Role.FENCED


def test_a_side_whose_qemu_died_steps_down_and_its_peer_is_left_to_claim():
    s = step(Role.PRIMARY, Event.GUEST_EXITED)
    assert s.role == Role.WITHDRAWN and s.actions == (Action.CLOSE_GATE, Action.WITHDRAW)
    s = step(Role.BACKUP, Event.GUEST_EXITED)
    assert s.role == Role.WITHDRAWN and s.actions == (Action.WITHDRAW,)
    for role in (Role.WITHDRAWN, Role.FENCED, Role.GOING_LIVE):   # acts once, never again
        with pytest.raises(RoleError):
            step(role, Event.GUEST_EXITED)


def test_operator_stop_is_possible_in_every_role_and_never_fails_over():
    for role in Role:
        s = step(role, Event.OPERATOR_STOP)
        assert s.role == Role.STOPPED and s.actions == ()


def test_planned_switch_hands_over_then_the_backup_claims_or_the_primary_takes_back():
    s = step(Role.PRIMARY, Event.HANDOVER)
    assert s.role == Role.HANDED_OVER and s.actions == (Action.HAND_OVER,)
    s = step(Role.BACKUP, Event.TAKE_OVER)
    assert s.role == Role.CLAIMING and s.actions == (Action.CLAIM,)
    assert step(Role.CLAIMING, Event.CLAIM_WON).role == Role.GOING_LIVE
    # the backup never claimed: the primary claims the pair back and resumes its guest
    s = step(Role.HANDED_OVER, Event.RESUME)
    assert s.role == Role.RECLAIMING
    s = step(Role.RECLAIMING, Event.CLAIM_WON)
    assert s.role == Role.LIVE_ALONE and Action.RESUME_GUEST in s.actions
    assert step(Role.RECLAIMING, Event.CLAIM_LOST).role == Role.FENCED   # it did claim after all


def test_the_table_names_every_role_and_event_and_the_impossible_raise():
    assert set(_TABLE) == {(r, e) for r in Role for e in Event}
    impossible = [(r, e) for (r, e), s in _TABLE.items() if s is None]
    assert (Role.BACKUP, Event.RESUME) in impossible            # wrong side
    assert (Role.HANDED_OVER, Event.CHANNEL_SILENT) in impossible   # no race once handed over
    assert (Role.FENCED, Event.CLAIM_WON) in impossible         # claims answer at once
    for r, e in impossible:
        with pytest.raises(RoleError, match=f"{e} cannot happen to a side that is {r}"):
            step(r, e)


def test_every_role_but_the_two_steady_ones_is_reached_and_every_action_is_used():
    reached = {s.role for s in _TABLE.values() if s is not None}
    assert reached == set(Role) - {Role.PRIMARY, Role.BACKUP}
    assert {a for s in _TABLE.values() if s is not None for a in s.actions} == set(Action)
