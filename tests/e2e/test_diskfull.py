"""A full disk is a state, not a livelock (agent/guard.py): each host's folder on a small
tmpfs, filled while a client writes; the pair decides within the channel timeout, no
acknowledged record is lost, and protection comes back once room is freed."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from ftorch.config import load
from ftorch.host.layout import paths

from .lab_helpers import (
    Client,
    answered,
    ftorch,
    running_pair,
    side,
    small_disk,
    wait_until,
    write_config,
)
from .test_protect import protected_by

pytestmark = pytest.mark.e2e
RESERVE_MIB = 64


def fill(host_dir: Path, leave_mib: int) -> Path:
    """Take all but `leave_mib` of the host's disk (outside the pair folder)."""
    filler = host_dir / "filler"
    free = shutil.disk_usage(host_dir).free
    subprocess.run(["fallocate", "-l", str(free - (leave_mib << 20)), str(filler)], check=True)
    return filler


def writing(cfg_path: Path, out: Path, duration: float) -> Client:
    """Once host A is protected: a client writing through it (its first replies are out)."""
    protected_by(cfg_path, "a")
    client = Client(out, duration=duration, prefix=out.stem)
    wait_until(lambda: side(cfg_path, "a").primary.gate.released > 20, 120, "the client to write")
    return client


def test_backup_disk_full_primary_goes_on_alone_then_protected_again(tmp_path):
    cfg_path = write_config(tmp_path, "dfb", limits={"disk_reserve_mib": RESERVE_MIB},
                            failover={"reprotect": True, "reprotect_interval_s": 2})
    cfg = load(cfg_path)
    with small_disk(cfg.host("b").path, 400) as disk, running_pair(cfg_path):
        client = writing(cfg_path, tmp_path / "dfb.json", duration=60)
        filled_at = time.monotonic()
        filler = fill(disk, RESERVE_MIB // 2)
        b = wait_until(lambda: (s := side(cfg_path, "b")).role == "withdrawn"
                       and "stepped down" in s.guard.action and s, 30, "host B to step down")
        assert b.guard.low and b.backup.guest == "stopped"
        assert "disk full" in b.backup.withdrawn and "reserve" in b.backup.withdrawn
        # the decision: the primary hears nothing and goes on alone within the channel timeout
        wait_until(lambda: side(cfg_path, "a").role == "live-alone",
                   cfg.channel.timeout_s + 10, "host A to go on alone")
        decided_s = time.monotonic() - filled_at
        # host B keeps saying why while it has no room; A re-protects once it has
        b = answered(cfg_path, "b")
        assert b.role == "withdrawn" and b.guard.tripped.startswith("disk full")
        filler.unlink()
        protected_by(cfg_path, "a", timeout=300)
        assert side(cfg_path, "a").reprotect.ok
        res = client.result(timeout=300)
        assert res["errors"] == [] and res["mismatches"] == [], res
        assert len(res["acked"]) > 0
        print(json.dumps({"decided_s": decided_s}))


def test_primary_disk_full_pauses_the_guest_until_there_is_room(tmp_path):
    cfg_path = write_config(tmp_path, "dfa", limits={"disk_reserve_mib": RESERVE_MIB})
    cfg = load(cfg_path)
    with small_disk(cfg.host("a").path, 400) as disk, running_pair(cfg_path):
        client = writing(cfg_path, tmp_path / "dfa.json", duration=40)
        filler = fill(disk, RESERVE_MIB // 2)
        a = wait_until(lambda: (s := side(cfg_path, "a")).primary.disk_paused
                       and "paused" in s.guard.action and s, 30, "host A to pause its guest")
        assert a.guard.low and a.role == "primary" and "paused" in a.guard.action
        released = a.primary.gate.released
        b = answered(cfg_path, "b")
        assert b.role == "backup", "a paused primary is not a dead one: no failover"
        filler.unlink()
        wait_until(lambda: not (s := side(cfg_path, "a")).primary.disk_paused
                   and s.primary.gate.released > released, 60, "the guest to run again")
        res = client.result(timeout=300)
        assert res["errors"] == [] and res["mismatches"] == [], res
        assert answered(cfg_path, "b").role == "backup"
        summary = json.loads(ftorch("down", str(cfg_path), "--json", "--timeout", "300").stdout)
        pa, pb = paths(cfg, "a"), paths(cfg, "b")
        assert summary["backup"]["icount"] == summary["primary"]["icount"]
        assert pa.serial.read_bytes() == pb.serial.read_bytes()
