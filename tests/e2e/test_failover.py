"""Failover, for real: a planned switch and a partition while a client writes over one TCP
connection; the new primary's client carries on with every acknowledged record readable.
SIGKILL at many points is test_faults.py's campaign."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from ftorch.host import lab
from ftorch.host.layout import domain_names
from ftorch.host.virt import Host
from ftorch.ops import pair
from ftorch.status import SideStatus

from .lab_helpers import Client, ftorch, running_pair, side, status, wait_until, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def ft_pair(tmp_path):
    cfg_path = write_config(tmp_path, "ft", failover={"enabled": True, "reprotect": False})
    with running_pair(cfg_path) as cfg:
        yield cfg_path, cfg, tmp_path


LEAN_STATE = 8 << 20   # a go-live's VM state without the guest's RAM is ~1 MB


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
    print(f"planned failover: guest paused {d['paused_s']:.2f} s (handover {d['handover_s']:.2f} s,"
          f" replay {d['replay_s']:.2f} s, save {d['save_s']:.2f} s, start {d['start_s']:.2f} s); "
          f"{len(res['acked'])} records")


def is_live(s: SideStatus) -> bool:
    """Whether a side can emit output: a live-alone copy, or a primary whose backup is still
    acknowledging its log (a gated primary releases nothing else)."""
    gated_live = s.role == "primary" and s.primary.gate.open and s.channel.state == "streaming"
    return s.role == "live-alone" or gated_live


def live_sides(cfg_path) -> list[str]:
    return [key for key in ("a", "b") if is_live(side(cfg_path, key))]


@dataclass(frozen=True)
class Sample:
    asked: float      # monotonic time the status was asked for
    answered: float   # ... and came back: it shows one instant in between
    live: bool


def sample(cfg_path, key: str) -> Sample:
    asked = time.monotonic()
    live = is_live(side(cfg_path, key))
    return Sample(asked, time.monotonic(), live)


def both_live_at_once(samples: dict[str, list[Sample]], loser: str) -> list[tuple[Sample, Sample]]:
    """Pairs of samples that prove two live copies, though each host is asked in turn: the
    race's loser never comes back once it stops, so seen live when asked at t it was live all
    along until t; the winner stays live once it is, so seen live by t' it was live from t' on.
    With t' <= t, both were live at t'. (Two samples that merely fall on either side of the
    handover, the loser's before the winner's, prove nothing: the lab's status calls take up
    to a second.)"""
    winner = "b" if loser == "a" else "a"
    return [(w, lo) for lo in samples[loser] if lo.live
            for w in samples[winner] if w.live and w.answered <= lo.asked]


def test_partition_leaves_exactly_one_live_copy(ft_pair):
    cfg_path, cfg, tmp = ft_pair
    pair.wait_caught_up(cfg, timeout=300)
    client = Client(tmp / "partition.json", duration=40, prefix="p", verify=True)
    wait_until(lambda: side(cfg_path, "a").primary.gate.released > 40, 60, "the client to write")
    lab.cut_link("a", False)  # host A loses the LAN: the backup and the client, both alive
    try:
        samples: dict[str, list[Sample]] = {"a": [], "b": []}

        def decided() -> bool:
            for key in ("b", "a"):
                samples[key].append(sample(cfg_path, key))
            roles = [side(cfg_path, k).role for k in ("a", "b")]
            return all(r in ("fenced", "live-alone") for r in roles)

        wait_until(decided, 120, "both sides to settle after the race")
        roles = {k: side(cfg_path, k) for k in ("a", "b")}
        assert sorted(s.role for s in roles.values()) != ["live-alone", "live-alone"]
        assert [s.role for s in roles.values()].count("fenced") >= 1
        for loser in (k for k, s in roles.items() if s.role == "fenced"):
            proof = both_live_at_once(samples, loser)
            assert not proof, f"two live copies at once: {proof[:3]}"
    finally:
        lab.cut_link("a", True)
    winner = live_sides(cfg_path)
    assert len(winner) == 1
    # the link is back: the loser must stay fenced while the winner serves
    deadline = time.monotonic() + 3 * cfg.channel.timeout_s + 5   # a few reconnect rounds
    while time.monotonic() < deadline:
        assert live_sides(cfg_path) == winner
        time.sleep(0.5)
    loser = "b" if winner == ["a"] else "a"
    assert side(cfg_path, loser).role == "fenced"
    res = client.result(timeout=400)
    assert res["errors"] == [] and res["mismatches"] == []
    print(f"partition: host {winner[0]} won generation "
          f"{side(cfg_path, winner[0]).failover.generation}; {len(res['acked'])} records")
