from ftorch.roles import Action, Event, Role, step


def test_backup_that_wins_goes_live_and_then_opens_its_output():
    s = step(Role.BACKUP, Event.CHANNEL_SILENT)
    assert s.role == Role.CLAIMING and s.actions == (Action.CLAIM,)
    s = step(Role.CLAIMING, Event.CLAIM_WON, was=Role.BACKUP)
    assert s.role == Role.GOING_LIVE and s.actions == (Action.GO_LIVE,)
    assert step(Role.GOING_LIVE, Event.LIVE).actions == (Action.OPEN_GATE_UNGATED,)


def test_primary_holds_output_while_it_claims_and_goes_on_alone_if_it_wins():
    s = step(Role.PRIMARY, Event.CHANNEL_SILENT)
    assert s.actions[0] == Action.CLOSE_GATE and Role.CLAIMING == s.role
    assert step(Role.CLAIMING, Event.CLAIM_WON, was=Role.PRIMARY).role == Role.LIVE_ALONE


def test_losers_and_the_unsure_are_fenced():
    for event in (Event.CLAIM_LOST, Event.ARBITER_UNREACHABLE):
        s = step(Role.CLAIMING, event)
        assert s.role == Role.FENCED and Action.CLOSE_GATE in s.actions
    assert step(Role.FENCED, Event.CHANNEL_SILENT).role == Role.FENCED
    assert step(Role.FENCED, Event.CLAIM_WON).role == Role.FENCED  # a late win changes nothing


def test_operator_stop_never_fails_over():
    for role in (Role.PRIMARY, Role.BACKUP, Role.CLAIMING, Role.LIVE_ALONE):
        assert step(role, Event.OPERATOR_STOP).role == Role.STOPPED
    assert step(Role.STOPPED, Event.CHANNEL_SILENT).role == Role.STOPPED


def test_planned_switch_hands_over_then_the_backup_claims_or_the_primary_takes_back():
    s = step(Role.PRIMARY, Event.HANDOVER)
    assert s.role == Role.HANDED_OVER and s.actions == (Action.HAND_OVER,)
    assert step(Role.HANDED_OVER, Event.CHANNEL_SILENT).role == Role.HANDED_OVER  # no race
    s = step(Role.BACKUP, Event.TAKE_OVER)
    assert s.role == Role.CLAIMING and s.actions == (Action.CLAIM,)
    assert step(Role.CLAIMING, Event.CLAIM_WON, was=Role.BACKUP).role == Role.GOING_LIVE
    # the backup never claimed: the primary claims the pair back and resumes its guest
    s = step(Role.HANDED_OVER, Event.RESUME)
    assert s.role == Role.CLAIMING
    s = step(Role.CLAIMING, Event.CLAIM_WON, was=Role.HANDED_OVER)
    assert s.role == Role.LIVE_ALONE and Action.RESUME_GUEST in s.actions
    assert step(Role.CLAIMING, Event.CLAIM_LOST).role == Role.FENCED   # it did claim after all
    assert step(Role.HANDED_OVER, Event.OPERATOR_STOP).role == Role.STOPPED
    assert step(Role.BACKUP, Event.RESUME).role == Role.BACKUP           # wrong side: no change
