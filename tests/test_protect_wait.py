"""Re-protection's wait for the clone's backup to replay past the snapshot ends as soon as that
backup is gone, instead of at the pass deadline (minutes)."""
from types import SimpleNamespace

import pytest

from ftorch.agent import protect
from ftorch.agent.protect import ProtectError, _wait_passed
from ftorch.status import BackupStatus, SideStatus, unreachable


def test_a_clone_whose_backup_stops_answering_fails_fast(monkeypatch):
    monkeypatch.setattr(protect, "PEER_GONE_S", 0.3)
    answers = iter([SideStatus(host="b", role="backup", backup=BackupStatus())])
    hosts = SimpleNamespace(status=lambda peer: next(answers, unreachable(
        peer, "agent not running (no control socket)")))
    with pytest.raises(ProtectError, match="host b stopped answering .*agent not running"):
        _wait_passed(hosts, "b", icount=1000)


def test_one_unanswered_call_is_not_a_death(monkeypatch):
    monkeypatch.setattr(protect, "PEER_GONE_S", 5.0)
    passed = BackupStatus(icount=protect.PASS_MARGIN + 2000, received_icount=protect.PASS_MARGIN + 2000)
    answers = iter([unreachable("b", "SSH timed out"),
                    SideStatus(host="b", role="backup", backup=passed)])
    hosts = SimpleNamespace(status=lambda peer: next(answers))
    _wait_passed(hosts, "b", icount=1000)   # returns: passed and level


def test_a_clone_whose_backup_falls_silent_on_the_channel_fails_at_once(monkeypatch):
    """The guest's output waits for the new backup's acks: a dead one must not hold it for
    the SSH check's 10 s either."""
    hosts = SimpleNamespace(status=lambda peer: SideStatus(host="b", role="backup",
                                                           backup=BackupStatus()))
    with pytest.raises(ProtectError, match="fell silent on the logging channel"):
        _wait_passed(hosts, "b", icount=1000, silent=lambda: True)
