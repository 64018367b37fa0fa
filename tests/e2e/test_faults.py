"""The fault suite (issue 15): every fault of faultlib.py, in two runs of one pair each,
re-protected after each fault, ending in a clean stop whose disks must be identical. Each
fault checks that no acknowledged record is lost and that no two copies are ever live."""
from __future__ import annotations

from pathlib import Path

import pytest

from .faultlib import FAULTS, Run, identical_after_a_clean_stop, inject, kill_only_copy_during_clone, table
from .lab_helpers import running_pair, write_config

pytestmark = pytest.mark.e2e

# A host or one of its parts dies, freezes or is cut off; libvirtd restarts; the LAN and the
# storage misbehave.
PARTS = ["libvirtd-restart", "storage-hung", "storage-stopped", "link-flap", "slow-link",
         "backup-qemu", "backup-agent", "backup-host", "primary-qemu", "primary-agent",
         "freeze-primary", "channel-cut", "storage-lost-and-channel-cut", "partition-primary",
         "partition-backup", "kill-clone-peer"]
# SIGKILL of the primary's host at ten points.
KILLS = ["kill-first-write", "kill-steady", "kill-random", "kill-heavy-writes",
         "kill-heavy-writes-late", "kill-just-protected", "kill-switch-handover",
         "kill-switch-take-over", "kill-during-golive", "kill-after-libvirtd-restart"]


def faulty_pair(tmp: Path, pair: str) -> Path:
    return write_config(tmp, pair, failover={"enabled": True, "reprotect": True,
                                             "reprotect_interval_s": 2})


def run_faults(tmp: Path, pair: str, names: list[str]) -> None:
    cfg_path = faulty_pair(tmp, pair)
    with running_pair(cfg_path) as cfg:
        run = Run(cfg_path, cfg, tmp)
        for name in names:
            inject(run, name)
        identical_after_a_clean_stop(run)
    print("\n" + table(run.rows))


def test_every_fault_is_in_one_of_the_runs():
    assert sorted(PARTS + KILLS) == sorted(FAULTS)


def test_crashes_freezes_and_cuts_in_one_run(tmp_path):
    run_faults(tmp_path, "pf", PARTS)


def test_sigkill_the_primary_at_ten_points_in_one_run(tmp_path):
    run_faults(tmp_path, "ks", KILLS)


def test_a_second_failure_in_mid_clone_leaves_the_guest_down_and_nothing_live(tmp_path):
    """SIGKILL of the primary during a clone: the only copy, since a clone runs only while the
    guest runs alone."""
    cfg_path = faulty_pair(tmp_path, "oc")
    with running_pair(cfg_path) as cfg:
        r = kill_only_copy_during_clone(Run(cfg_path, cfg, tmp_path))
    print(r)
