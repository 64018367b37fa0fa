"""The fault suite's crashes of one part of a host (issue 15), one after another in one
re-protected pair: libvirtd restarted under both hosts, the backup's QEMU alone, its agent
alone, the whole backup host, the primary's QEMU alone, its agent alone. Each case checks what
every fault case checks (test_faults.py): no acknowledged record lost, never two live copies
(each host's own tap), and after the last one, a clean stop leaves identical disks."""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftorch.host import lab
from ftorch.host.layout import domain_names, paths
from ftorch.ops import pair

from .emissions import Emissions
from .lab_helpers import Client, answered, ftorch, running_pair, side, wait_until, write_config
from .test_faults import other, second_copy
from .test_protect import protected_by

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Crash:
    """What dies: on the primary's host or the backup's, its agent, its QEMU, or both."""
    on: str          # "primary" or "backup"
    agent: bool
    qemu: bool

    def outcome(self) -> str:
        if not self.agent:   # the agent sees its QEMU die and says so
            return "withdrawn"
        return "gone"


CRASHES = {
    "backup-qemu": Crash("backup", agent=False, qemu=True),
    "backup-agent": Crash("backup", agent=True, qemu=False),
    "backup-host": Crash("backup", agent=True, qemu=True),
    "primary-qemu": Crash("primary", agent=False, qemu=True),
    "primary-agent": Crash("primary", agent=True, qemu=False),
}


def writing(cfg_path: Path, live: str, tmp: Path, name: str) -> Client:
    """A client writing through host `live`, once the gate has released some of its frames."""
    released = side(cfg_path, live).primary.gate.released
    client = Client(tmp / f"{name}.json", duration=300, prefix=name.replace("-", ""),
                    verify=True)
    wait_until(lambda: side(cfg_path, live).primary.gate.released > released + 40, 90,
               f"the client to be writing through host {live}", every=0.05)
    return client


def intact(res: dict, what: str, since: float) -> None:
    assert res["errors"] == [], f"{what}: the client's connection broke: {res['errors']}"
    assert res["mismatches"] == [], f"{what}: an acknowledged record is missing or changed"
    assert [t for t in res["ack_times"] if t > since], f"{what}: nothing acked after the fault"


def said(cfg, key: str) -> str:
    """Host `key`'s agent log, and the one before it (a new agent's folder keeps it)."""
    log = paths(cfg, key).agent_log
    return "".join(f.read_text(errors="replace") for f in (log.with_name("agent.log.1"), log)
                   if f.exists())


def crash(cfg_path: Path, cfg, tmp: Path, live: str, name: str) -> tuple[dict, str]:
    """One crash while a client writes through the primary on host `live`: the other side
    (the survivor) must end live alone one generation up, and the client carry on through it.
    Returns the case's row and the host live after it."""
    how = CRASHES[name]
    victim = live if how.on == "primary" else other(live)
    survivor = other(victim)
    pair.wait_caught_up(cfg, timeout=300)
    gen = side(cfg_path, live).failover.generation
    client = writing(cfg_path, live, tmp, name)
    with Emissions() as seen:
        at = time.time()
        lab.kill_host(paths(cfg, victim).pid, domain_names(cfg, victim), agent=how.agent,
                      qemu=how.qemu)
        s = wait_until(lambda: (x := side(cfg_path, survivor)).role in ("live-alone", "fenced")
                       and x, 180, f"host {survivor} to go on alone (or give up)")
        assert s.role == "live-alone", (name, s.failover)
        assert s.failover.generation == gen + 1, (name, s.failover)
        if how.outcome() == "withdrawn":   # the survivor may have dismissed it already
            wait_until(lambda: f"stepping down as {how.on}" in said(cfg, victim), 60,
                       f"host {victim}'s agent to step down")
        out = s.primary.net.frames_out
        wait_until(lambda: side(cfg_path, survivor).primary.net.frames_out > out + 20, 120,
                   f"the guest to answer from host {survivor}")
        res = client.finish(timeout=400)
        late = second_copy(seen, survivor, at)
    assert not late, f"{name}: host {victim} emitted {len(late)} frames after {survivor}'s first"
    intact(res, name, s.failover.live_at)
    first = min(t for t in res["ack_times"] if t > at)
    return {"fault": name, "host": victim, "outcome": f"{survivor} live-alone gen {gen + 1}",
            "first_reply_s": round(first - at, 2), "records": len(res["acked"])}, survivor


def libvirtd_restart(cfg_path: Path, cfg, tmp: Path, live: str) -> dict:
    """libvirtd stops and starts again under both hosts while the client writes: the guests'
    QEMUs run on, nobody takes it for a death, and the backup goes on following the log."""
    pair.wait_caught_up(cfg, timeout=300)
    backup = other(live)
    gen = side(cfg_path, live).failover.generation
    client = writing(cfg_path, live, tmp, "libvirtd")
    at = time.time()
    lab.restart_libvirtd()
    restarted_s = time.time() - at
    primary_icount = side(cfg_path, live).primary.icount
    wait_until(lambda: side(cfg_path, backup).backup.icount > primary_icount, 120,
               f"the backup on host {backup} to replay past the restart")
    res = client.finish(timeout=400)
    p, b = answered(cfg_path, live), answered(cfg_path, backup)
    assert (p.role, b.role) == ("primary", "backup"), (p.failover, b.failover, b.backup)
    assert p.failover.generation == b.failover.generation == gen
    assert not b.backup.replay_error, b.backup.replay_error
    intact(res, "libvirtd restart", at)
    return {"fault": "libvirtd-restart", "host": "both", "outcome": "no failover",
            "first_reply_s": 0.0, "records": len(res["acked"]), "restart_s": round(restarted_s, 2)}


def identical_after_a_clean_stop(cfg_path: Path, cfg, live: str) -> None:
    """The pair stops cleanly: the backup replays to the primary's last instruction, and the
    two disks hold the same data."""
    summary = json.loads(ftorch("down", str(cfg_path), "--json", "--timeout", "300").stdout)
    assert summary["backup"]["finished"], summary
    assert summary["backup"]["icount"] == summary["primary"]["icount"], summary
    cmp = subprocess.run(["qemu-img", "compare", str(paths(cfg, live).disk),
                          str(paths(cfg, other(live)).disk)], capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


def test_crashes_of_one_part_in_one_run(tmp_path):
    cfg_path = write_config(tmp_path, "cr", failover={"enabled": True, "reprotect": True,
                                                      "reprotect_interval_s": 2})
    rows, live = [], "a"
    with running_pair(cfg_path) as cfg:
        rows.append(libvirtd_restart(cfg_path, cfg, tmp_path, live))
        for name in CRASHES:
            row, live = crash(cfg_path, cfg, tmp_path, live, name)
            rows.append(row)
            print("crash " + json.dumps(row), flush=True)
            protected_by(cfg_path, live, timeout=300)
        identical_after_a_clean_stop(cfg_path, cfg, live)
    for r in rows:
        print(f"{r['fault']:>17} on {r['host']}: {r['outcome']}, first reply "
              f"{r['first_reply_s']:.2f} s, {r['records']} records")
