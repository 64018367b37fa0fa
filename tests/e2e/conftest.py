"""What every end-to-end session starts from."""
from __future__ import annotations

import os
import warnings

import pytest

from ftorch.host import lab

from . import lab_helpers
from .lab_helpers import unmount


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that failed in a pair a fixture holds up: its report carries both agents' logs
    (the pair, and its logs, are gone by the fixture's teardown)."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and lab_helpers.ACTIVE_PAIR is not None:
        report.sections.append(("agent logs", lab_helpers.agent_logs(lab_helpers.ACTIVE_PAIR)))


@pytest.fixture(scope="session", autouse=True)
def _no_small_disk_left_behind():
    """A run killed inside a small-disk test (test_diskfull, test_protect) leaves its tmpfs on
    the host's folder; the next run would see a nearly full disk in every test."""
    left = [h.dir for h in lab.HOSTS if os.path.ismount(h.dir)]
    if left:
        lab.down()
        for d in left:
            unmount(d)
        warnings.warn(f"unmounted {', '.join(map(str, left))}, left mounted by an earlier run",
                      stacklevel=1)
    yield
