"""Status records: what an agent sends is what the operator's side reads back, whatever the
role; unknown fields (a newer agent) are ignored; the table fits 80 columns."""
import io
import json

from rich.console import Console

from ftorch.ops import cli
from ftorch.ops.pair import PairStatus
from ftorch.status import (
    BackupStatus,
    ChannelStatus,
    FailoverStatus,
    GateStatus,
    PrimaryStatus,
    ReprotectStatus,
    SideStatus,
    unreachable,
)

PRIMARY = SideStatus(host="a", role="primary", pair="p", pid=7,
                     primary=PrimaryStatus(mode="protected", guest="running", icount=6_200_000_000,
                                           channel=ChannelStatus("streaming", 14 << 20, 3),
                                           gate=GateStatus(1, 900, False, 0.001, 0.01)),
                     failover=FailoverStatus(state="primary", generation=3),
                     reprotect=ReprotectStatus(ok=True, pause_s=1.01, peer="b"))
BACKUP = SideStatus(host="b", role="backup", pair="p", pid=8,
                    backup=BackupStatus(guest="running", icount=6_100_000_000, lag_seconds=0.043,
                                        lag_instructions=1_500_000, start_icount=5,
                                        channel=ChannelStatus("streaming", 14 << 20, 1)),
                    failover=FailoverStatus(state="backup", generation=3))


def test_every_kind_of_side_survives_the_wire():
    standby = SideStatus(host="b", role="standby")
    down = unreachable("b", "host b (root@10.77.1.2:22): SSH connection refused")
    for side in (PRIMARY, BACKUP, standby, down):
        wire = json.loads(json.dumps(side.to_json()))
        assert SideStatus.from_json(wire) == side
    assert PRIMARY.to_json()["gate"]["released"] == 900      # the role's fields at the top
    assert BACKUP.to_json()["lag_seconds"] == 0.043


def test_unknown_fields_are_ignored_and_missing_ones_defaulted():
    wire = {**BACKUP.to_json(), "new_field": 1, "failover": {"state": "backup", "later": 2}}
    del wire["break_hits"]
    side = SideStatus.from_json(wire)
    assert side.backup.break_hits == 0 and side.failover.state == "backup"
    assert (side.icount, side.guest, side.channel.state) == (6_100_000_000, "running", "streaming")


def test_a_guest_recording_alone_shows_no_lag():
    alone = SideStatus(host="b", role="live-alone",
                       primary=PrimaryStatus(mode="unprotected", icount=6_226_000_000,
                                             lag_instructions=6_226_000_000))
    row = cli._row("b", alone)
    assert row[4] == "6226.0" and row[6] == ""


def test_the_status_table_fits_80_columns():
    out = io.StringIO()
    cli.console = Console(file=out, width=80)
    cli.console.print(cli.status_table(PairStatus("p", {"a": PRIMARY, "b": BACKUP})))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any("primary" in line and "6200.0" in line for line in lines)
    assert any("backup" in line and "0.043" in line and "1.50" in line for line in lines)


def test_notes_name_a_full_disk_and_refused_strangers():
    from dataclasses import replace

    from ftorch.status import ChannelStatus, GuardStatus
    a = replace(PRIMARY, guard=GuardStatus(free_bytes=10 << 20, reserve_bytes=64 << 20, low=True,
                                           tripped="disk full: 10 MiB free",
                                           action="guest paused until there is room"))
    b = replace(BACKUP, backup=replace(BACKUP.backup, channel=ChannelStatus(
        refused_peers=3, last_refused="10.77.0.100:5000: not the primary's address")))
    notes = cli.status_notes(PairStatus("p", {"a": a, "b": b}))
    assert notes == ["host a: disk full: 10 MiB free: guest paused until there is room",
                     "host b: refused 3 channel connection(s) without the pair's "
                     "credential; last: 10.77.0.100:5000: not the primary's address"]
    assert cli.status_notes(PairStatus("p", {"a": PRIMARY, "b": BACKUP})) == []
    back = SideStatus.from_json(json.loads(json.dumps(a.to_json())))
    assert back.guard == a.guard


def test_a_note_says_when_inbound_frames_wait_for_the_backup():
    from dataclasses import replace

    from ftorch.status import HoldStatus
    hold = HoldStatus(bound_s=0.5, holding=True, episodes=2, frames_held=40, held_s=1.5)
    a = replace(PRIMARY, primary=replace(PRIMARY.primary, hold=hold))
    assert cli.status_notes(PairStatus("p", {"a": a, "b": BACKUP})) == [
        "host a: the guest's inbound frames wait: its backup trails past the 0.5 s bound"]
    assert SideStatus.from_json(json.loads(json.dumps(a.to_json()))).primary.hold == hold
    calm = replace(a, primary=replace(PRIMARY.primary, hold=replace(hold, holding=False)))
    assert cli.status_notes(PairStatus("p", {"a": calm, "b": BACKUP})) == []
