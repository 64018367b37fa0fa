from ftorch.channel.horizon import Decision, decide, target


def test_target_keeps_margin_until_final():
    assert target(1_000_000, 10_000, final=False) == 990_000
    assert target(1_000_000, 10_000, final=True) == 1_000_000


def test_first_break_then_continue_from_prelaunch():
    assert decide(50_000, 10_000, False, None, "prelaunch", 0) == Decision(40_000, True)


def test_running_break_moves_forward_without_cont():
    assert decide(80_000, 10_000, False, 40_000, "running", 30_000) == Decision(70_000, False)


def test_no_new_data_keeps_break():
    assert decide(50_000, 10_000, False, 40_000, "running", 30_000) == Decision(None, False)


def test_hit_break_is_consumed_and_replaced():
    # QEMU deleted the break when it paused at 40_000; new data lets it go on to 60_000
    assert decide(70_000, 10_000, False, 40_000, "paused", 40_000) == Decision(60_000, True)


def test_hit_break_without_new_data_stays_paused():
    assert decide(50_000, 10_000, False, 40_000, "paused", 40_000) == Decision(None, False)


def test_final_runs_to_the_very_end():
    assert decide(50_000, 10_000, True, 40_000, "paused", 40_000) == Decision(50_000, True)


def test_injected_end_runs_free_onto_the_end():
    # failover: a break at the last count would leave its events queued and savevm refusing
    assert decide(50_000, 10_000, True, 40_000, "running", 30_000, injected=True) == \
        Decision(None, False, delete_break=True)
    assert decide(50_000, 10_000, True, None, "paused", 40_000, injected=True) == \
        Decision(None, True, delete_break=True)
    assert decide(50_000, 10_000, True, None, "running", 45_000, injected=True) == \
        Decision(None, False, delete_break=False)


def test_never_breaks_in_the_past():
    assert decide(15_000, 10_000, False, None, "running", 20_000) == Decision(None, False)
