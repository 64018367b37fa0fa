"""Programs a real-time agent starts run under the ordinary policy (host/proc.py)."""
from __future__ import annotations

import os
import sys

import pytest

from ftorch.host import proc


def test_an_ordinary_process_runs_commands_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getscheduler", lambda pid: os.SCHED_OTHER)
    assert proc.plain(["sh", "-c", "true"]) == ["sh", "-c", "true"]


def test_a_real_time_process_starts_them_under_the_ordinary_policy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getscheduler", lambda pid: os.SCHED_RR)
    assert proc.plain(["sh", "-c", "true"]) == ["chrt", "--other", "0", "sh", "-c", "true"]


def test_a_missing_program_is_still_reported_as_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getscheduler", lambda pid: os.SCHED_RR)
    with pytest.raises(proc.FtorchError, match="no-such-program: command not found"):
        proc.run("no-such-program")


def test_the_child_of_a_real_time_process_is_not_real_time() -> None:
    """For real: a real-time child process runs a command through proc.run."""
    script = ("import os; from ftorch.host import proc; "
              "os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1)); "
              f"print(proc.run({sys.executable!r}, '-c', "
              "'import os; print(os.sched_getscheduler(0))').stdout)")
    p = proc.run(sys.executable, "-c", script)
    assert p.stdout.split() == [str(os.SCHED_OTHER)]
