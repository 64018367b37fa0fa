"""Failover, for real: a planned switch while a client writes over one TCP connection; the new
primary's client carries on with every acknowledged record readable. Partitions and SIGKILL at
many points are the fault suite's (test_faults.py)."""
from __future__ import annotations

import json

import pytest

from ftorch.host.layout import domain_names
from ftorch.host.virt import Host
from ftorch.ops import pair

from .faultlib import LEAN_STATE
from .lab_helpers import Client, ftorch, running_pair, side, status, wait_until, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def ft_pair(tmp_path):
    cfg_path = write_config(tmp_path, "ft", failover={"enabled": True, "reprotect": False})
    with running_pair(cfg_path) as cfg:
        yield cfg_path, cfg, tmp_path


def test_planned_failover_switches_hosts_and_the_client_carries_on(ft_pair):
    cfg_path, cfg, tmp = ft_pair
    pair.wait_caught_up(cfg, timeout=300)
    released = side(cfg_path, "a").primary.gate.released
    client = Client(tmp / "planned.json", duration=40, prefix="s", verify=True)
    wait_until(lambda: side(cfg_path, "a").primary.gate.released > released + 100, 90,
               "the client to be writing through the primary", every=0.05)
    d = json.loads(ftorch("failover", str(cfg_path), "--json", timeout=600).stdout)
    assert (d["from"], d["to"], d["generation"]) == ("a", "b", 2)
    assert d["golive_via"] == "standby", d
    assert 0 < d["golive_state_bytes"] < LEAN_STATE, d
    assert d["lag_s"] <= cfg.lag.bound_s and d["waited_s"] >= 0, d   # paused only within it
    st = status(cfg_path).hosts
    assert st["b"].role == "live-alone" and st["b"].failover.generation == 2
    assert st["a"].role == "unreachable"          # the old primary stopped
    assert all(Host().lookup(name) is None for name in domain_names(cfg, "a"))
    res = client.result(timeout=400)
    assert res["errors"] == [] and res["mismatches"] == [], "the switch lost or broke something"
    assert any(t > st["b"].failover.live_at for t in res["ack_times"])
    # a second switch needs a backup again: refused with a reason, exit 1, nothing touched
    again = ftorch("failover", str(cfg_path), check=False)
    assert again.returncode == 1 and "needs a protected pair" in again.stderr
    assert side(cfg_path, "b").role == "live-alone"
    print(f"planned failover: waited {d['waited_s']:.2f} s for a lag of {d['lag_s']:.3f} s, "
          f"guest paused {d['paused_s']:.2f} s (handover {d['handover_s']:.2f} s,"
          f" replay {d['replay_s']:.2f} s, save {d['save_s']:.2f} s, start {d['start_s']:.2f} s); "
          f"{len(res['acked'])} records")
