"""The fault suite (issue 15): each case a fault while a client writes, with the checks every
case makes: no acknowledged record lost (the client reads each one back by key and value), and
never two live copies, judged from each host's own tap (emissions.py), not from the LAN."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import pytest

from ftorch.agent.golive import SNAPSHOT
from ftorch.host import lab
from ftorch.host.layout import domain_names, paths
from ftorch.ops import pair
from ftorch.status import SideStatus

from .emissions import Emissions
from .lab_helpers import Client, answered, running_pair, side, wait_until, write_config
from .test_failover import LEAN_STATE, ft_pair  # noqa: F401  (a fixture)
from .test_protect import protected_by

pytestmark = pytest.mark.e2e


def test_a_primary_frozen_past_the_timeout_wakes_fenced_and_emits_nothing(ft_pair):  # noqa: F811
    """SIGSTOP of host A (its agent and QEMU) past the channel timeout: host B goes live; on
    SIGCONT host A finds itself fenced, and nothing it emits follows B's first frame (acks that
    waited in its socket echo heartbeats older than its lease: gate/outputgate.py)."""
    cfg_path, cfg, tmp = ft_pair
    pair.wait_caught_up(cfg, timeout=300)
    client = Client(tmp / "frozen.json", duration=40, prefix="z", verify=True)
    wait_until(lambda: side(cfg_path, "a").primary.gate.released > 40, 60, "the client to write")
    with Emissions() as seen:
        frozen_at = time.time()
        lab.kill_host(paths(cfg, "a").pid, domain_names(cfg, "a"), signal.SIGSTOP)
        try:
            b = wait_until(lambda: (s := side(cfg_path, "b")).role in ("live-alone", "fenced")
                           and s, 120, "host B to go live (or give up)")
            assert b.role == "live-alone", b.failover
            b_first = wait_until(lambda: seen.first("b", after=frozen_at), 60,
                                 "host B to emit the guest's frames")
        finally:
            lab.kill_host(paths(cfg, "a").pid, domain_names(cfg, "a"), signal.SIGCONT)
        thawed_at = time.time()
        a = wait_until(lambda: (s := answered(cfg_path, "a")).role == "fenced" and s, 120,
                       "host A to find itself fenced")
        res = client.result(timeout=400)
        late = second_copy(seen, "b", frozen_at)
    assert not late, (f"host A emitted {len(late)} frames after host B's first "
                      f"({[round(t - thawed_at, 3) for t in late[:5]]} s after SIGCONT)")
    assert res["errors"] == [] and res["mismatches"] == [], res
    assert [t for t in res["ack_times"] if t > b_first], "nothing acked through host B"
    print(f"frozen primary: B emitted {b_first - frozen_at:.2f} s after SIGSTOP; A fenced "
          f"{a.failover.generation=}; {len(res['acked'])} records; A's lease waits "
          f"{a.primary.gate.lease_waits}")


def settled(cfg_path) -> dict[str, SideStatus]:
    """Both sides once each has decided: one live, the other fenced (or both fenced)."""
    def decided():
        sides = {k: answered(cfg_path, k) for k in ("a", "b")}
        return all(s.role in ("live-alone", "fenced") for s in sides.values()) and sides
    return wait_until(decided, 120, "both sides to decide")


def second_copy(seen: Emissions, winner: str, after: float) -> list[float]:
    """What the loser emitted after the winner's first frame since `after`: a second live copy."""
    loser = "b" if winner == "a" else "a"
    first = wait_until(lambda: seen.first(winner, after), 60, f"host {winner} to emit")
    seen.sync()
    return seen.since(loser, first)


def test_a_cut_channel_with_both_hosts_on_the_lan_leaves_one_live_copy(ft_pair):  # noqa: F811
    """The logging channel alone is cut (host B drops its port), while both hosts reach the
    storage and the client reaches both: each side takes the other for dead and races for the
    arbiter; exactly one wins, the other never emits again, even once the channel is back."""
    cfg_path, cfg, tmp = ft_pair
    pair.wait_caught_up(cfg, timeout=300)
    client = Client(tmp / "cut.json", duration=40, prefix="c", verify=True)
    wait_until(lambda: side(cfg_path, "a").primary.gate.released > 40, 60, "the client to write")
    port = cfg.channel.port
    with Emissions() as seen:
        cut_at = time.time()
        lab.drop("b", f"tcp dport {port}", f"tcp sport {port}")
        try:
            sides = settled(cfg_path)
        finally:
            lab.undrop("b")
        roles = sorted(s.role for s in sides.values())
        assert roles == ["fenced", "live-alone"], roles
        winner = next(k for k, s in sides.items() if s.role == "live-alone")
        res = client.result(timeout=400)
        late = second_copy(seen, winner, cut_at)
        assert answered(cfg_path, "b" if winner == "a" else "a").role == "fenced"
    assert not late, f"the loser emitted {len(late)} frames after the winner's first"
    assert res["errors"] == [] and res["mismatches"] == [], res
    print(f"channel cut: host {winner} won generation {sides[winner].failover.generation}; "
          f"{len(res['acked'])} records")


# Where the primary dies, one point after another in one run: re-protection brings the killed
# host back as the backup each time. `after`: frames the gate released since the point's client
# started (None: a random count, printed); `loaders`: other clients writing at full speed;
# `settled`: the backup caught up and its standby recorder ready first (False: the kill comes
# the moment the pair is protected again, the backup fresh from its clone).
KILL_POINTS = {
    "first-write": {"after": 1, "loaders": 0, "settled": True},
    "steady": {"after": 40, "loaders": 0, "settled": True},
    "random": {"after": None, "loaders": 0, "settled": True},
    "heavy-writes": {"after": 150, "loaders": 3, "settled": True},
    "heavy-writes-late": {"after": 700, "loaders": 3, "settled": True},
    "just-protected": {"after": 1, "loaders": 0, "settled": False},
}


def other(key: str) -> str:
    return "b" if key == "a" else "a"


def snapshots_on(disk) -> list[str]:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                     check=True, capture_output=True, text=True).stdout)
    return [s["name"] for s in info.get("snapshots", [])]


def kill_primary_at(cfg_path, cfg, tmp, live: str, n: int, point: str) -> dict:
    """One kill point: the primary on host `live` dies while clients write; its peer must go
    live at generation n + 2 and every client carry on with every record intact."""
    how, peer = KILL_POINTS[point], other(live)
    after = how["after"] if how["after"] is not None else random.randint(2, 500)
    if how["settled"]:
        pair.wait_caught_up(cfg, timeout=300)
        wait_until(lambda: side(cfg_path, peer).backup.standby_ready, 60,
                   f"host {peer}'s standby recorder to be ready")
    released = side(cfg_path, live).primary.gate.released
    client = Client(tmp / f"{point}.json", duration=300, prefix=f"k{n}", verify=True)
    others = [Client(tmp / f"{point}-load{i}.json", duration=300, prefix=f"k{n}l{i}", verify=True)
              for i in range(how["loaders"])]
    wait_until(lambda: side(cfg_path, live).primary.gate.released > released + after, 90,
               f"the client to be writing through host {live}", every=0.05)
    killed_at = time.time()
    lab.kill_host(paths(cfg, live).pid, domain_names(cfg, live))
    s = wait_until(lambda: (x := side(cfg_path, peer)).role in ("live-alone", "fenced") and x,
                   180, f"host {peer} to go live (or give up)")
    assert s.role == "live-alone", (point, s.failover)
    assert s.failover.generation == n + 2, (point, s.failover)
    if how["settled"]:   # the replayed state went into the standby recorder beside the replay
        assert s.failover.golive_via == "standby", (point, s.failover)
        # without the guest's RAM, which the replay and the standby map from one file
        assert 0 < s.failover.golive_state_bytes < LEAN_STATE, (point, s.failover)
    assert SNAPSHOT not in snapshots_on(paths(cfg, peer).disk), point
    out = s.primary.net.frames_out
    wait_until(lambda: side(cfg_path, peer).primary.net.frames_out > out + 20, 120,
               f"the guest to answer from host {peer}")
    res = client.finish(timeout=400)
    loads = [c.finish(timeout=400) for c in others]
    for r in loads:
        assert r["errors"] == [] and r["mismatches"] == [], f"{point}: a loader lost data: {r}"
    assert res["errors"] == [], f"{point}: the client's connection broke: {res['errors']}"
    assert res["mismatches"] == [], f"{point}: an acknowledged record is missing or changed"
    assert [t for t in res["ack_times"] if t > s.failover.live_at], \
        f"{point}: the client wrote nothing through the new primary"
    first = min(t for t in res["ack_times"] if t > killed_at)
    return {"point": point, "after": after, "host": live, "first_reply_s": first - killed_at,
            "detected_s": s.failover.detected_at - killed_at, "replay_s": s.failover.replay_s,
            "records": len(res["acked"]) + sum(len(r["acked"]) for r in loads)}


def test_sigkill_the_primary_at_each_point_in_one_run(tmp_path):
    """SIGKILL of the primary's host at each of KILL_POINTS in turn, the pair re-protected
    after each: every time the backup goes live, the client's connection carries on and no
    acknowledged record is lost."""
    cfg_path = write_config(tmp_path, "ks", failover={"enabled": True, "reprotect": True,
                                                      "reprotect_interval_s": 2})
    rows, live = [], "a"
    with running_pair(cfg_path) as cfg:
        for n, point in enumerate(KILL_POINTS):
            if n:
                protected_by(cfg_path, live, timeout=300)
            rows.append(kill_primary_at(cfg_path, cfg, tmp_path, live, n, point))
            live = other(live)
            print("kill point " + json.dumps(rows[-1]), flush=True)
    for r in rows:
        print(f"{r['point']:>18} on {r['host']}: first reply {r['first_reply_s']:.2f} s, "
              f"detected {r['detected_s']:.2f} s, replay {r['replay_s']:.2f} s, "
              f"{r['records']} records")
