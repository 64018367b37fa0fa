"""The planned switch waits for the backup to come within the lag bound before it pauses the
guest (ops/switch.py), with fake status answers."""
from pathlib import Path

import pytest

from ftorch.config import PairConfig, load
from ftorch.errors import FtorchError
from ftorch.ops import switch
from ftorch.status import BackupStatus, SideStatus


def answers(monkeypatch, sides: list[SideStatus]) -> list[SideStatus]:
    seen: list[SideStatus] = []

    def next_status(_cfg, _key):
        seen.append(sides[min(len(seen), len(sides) - 1)])
        return seen[-1]
    monkeypatch.setattr(switch, "try_status", next_status)
    monkeypatch.setattr(switch, "POLL_S", 0.001)
    return seen


def backup(lag: float | None) -> SideStatus:
    return SideStatus(host="b", role="backup", backup=BackupStatus(lag_seconds=lag))


@pytest.fixture
def cfg() -> PairConfig:
    return load(Path(__file__).resolve().parents[1] / "examples/lab.yaml")   # bound 0.5 s


def test_the_switch_waits_until_the_backup_is_within_the_bound(monkeypatch, cfg):
    seen = answers(monkeypatch, [backup(None), backup(3.0), backup(0.9), backup(0.2)])
    waited, lag = switch._within_bound(cfg, "b", timeout=10)
    assert lag == 0.2 and len(seen) == 4 and waited >= 0


def test_a_backup_that_stays_behind_is_refused_naming_its_lag(monkeypatch, cfg):
    answers(monkeypatch, [backup(2.5)])
    with pytest.raises(FtorchError, match=r"still trails by 2.5 s .*lag.bound_s 0.5"):
        switch._within_bound(cfg, "b", timeout=0.05)


def test_a_backup_that_stops_being_one_ends_the_wait_at_once(monkeypatch, cfg):
    answers(monkeypatch, [backup(3.0), SideStatus(host="b", role="live-alone")])
    with pytest.raises(FtorchError, match="host b is live-alone now"):
        switch._within_bound(cfg, "b", timeout=10)
