"""The faults of the fault suite (issue 15), each a function that injects one fault into a
protected pair while a client writes, waits for the outcome it must have, checks what every
case checks, and returns a row for the table: no acknowledged record lost (the client reads
each one back by key and value), and never two live copies, judged from each host's own tap
(emissions.py), not from the LAN. The suite (test_faults.py) runs them in a fixed order, the
campaign (bench/faults.py) in a seeded random one; both re-protect the pair after each."""
from __future__ import annotations

import itertools
import json
import random
import signal
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ftorch.agent.golive import SNAPSHOT
from ftorch.config import PairConfig
from ftorch.host import lab
from ftorch.host.layout import domain_names, paths
from ftorch.ops import pair
from ftorch.status import SideStatus

from .emissions import Emissions
from .lab_helpers import STAMP, Client, answered, ftorch, ftorch_background, side, wait_until

LEAN_STATE = 8 << 20   # a go-live's VM state without the guest's RAM is ~1 MB
Row = dict[str, Any]


@dataclass
class Run:
    """A pair under faults: where it is, and which host runs the guest now."""
    cfg_path: Path
    cfg: PairConfig
    tmp: Path
    live: str = "a"
    n: int = 0                      # faults so far (names each client's keys)
    rows: list[Row] = field(default_factory=list)
    acked: list[tuple[str, str, int]] = field(default_factory=list)   # by every client

    def finish(self, clients: list[Client]) -> list[dict]:
        """Stop the clients (each reads its records back) and keep what was acknowledged."""
        results = [c.finish(timeout=400) for c in clients]
        self.acked += [(k, v, int(seq)) for r in results for k, v, seq in r["acked"]]
        return results

    def generation(self) -> int:
        return side(self.cfg_path, self.live).failover.generation

    def writing(self, name: str, after: int = 40, loaders: int = 0) -> list[Client]:
        """A client (and `loaders` more) writing through the live host, once its tap has
        taken `after` of the guest's frames since. (A tap's count, not the agent's: a
        re-protection under way restarts that with the recorder.)"""
        prefix = f"f{self.n}"
        with Emissions() as seen:
            clients = [Client(self.tmp / f"{prefix}-{name}.json", duration=300, prefix=prefix)]
            clients += [Client(self.tmp / f"{prefix}-{name}-load{i}.json", duration=300,
                               prefix=f"{prefix}l{i}") for i in range(loaders)]
            wait_until(lambda: seen.count(self.live) > after, 90,
                       f"the client to be writing through host {self.live}", every=0.01)
        return clients

    def protected(self, timeout: float = 300) -> None:
        """Wait until the live host is a protected primary and its peer a backup past the
        clone (re-protection after a failover, failover.reprotect on)."""
        p, b = self.live, other(self.live)
        wait_until(lambda: pair.protected(side(self.cfg_path, p), side(self.cfg_path, b)),
                   timeout, f"host {p} to be protected by host {b}")


def other(key: str) -> str:
    return "b" if key == "a" else "a"


def intact(results: list[dict], what: str, since: float) -> int:
    """Every client's records came back, its connection never broke, and it was acked after
    `since` (through whichever host is live now). Returns the records verified."""
    for r in results:
        assert r["errors"] == [], f"{what}: a client's connection broke: {r['errors']}"
        assert r["mismatches"] == [], f"{what}: an acknowledged record is missing or changed"
    assert [t for t in results[0]["ack_times"] if t > since], \
        f"{what}: the client wrote nothing after the fault"
    return sum(len(r["acked"]) for r in results)


def second_copy(seen: Emissions, winner: str, after: float) -> list[float]:
    """What the loser emitted after the winner's first frame since `after`: a second live copy."""
    first = wait_until(lambda: seen.first(winner, after), 60, f"host {winner} to emit")
    seen.sync()
    return seen.since(other(winner), first)


def decided(run: Run, key: str, timeout: float = 180) -> SideStatus:
    """Host `key` once it has gone live or given up."""
    return wait_until(lambda: (s := side(run.cfg_path, key)).role in ("live-alone", "fenced")
                      and s, timeout, f"host {key} to go live (or give up)")


def answering(run: Run, key: str) -> None:
    """The guest answers through host `key`: its tap takes 20 more frames. (Not the agent's
    frame counter: a re-protection, which may come first, restarts it with the recorder.)"""
    with Emissions() as seen:
        wait_until(lambda: seen.count(key) >= 20, 120, f"the guest to answer from host {key}")


def said(cfg: PairConfig, key: str, since: float) -> str:
    """What host `key`'s agent logged since `since` (wall clock), also in the log before the
    current one (a new agent's folder keeps it)."""
    log = paths(cfg, key).agent_log
    lines = [line for f in (log.with_name("agent.log.1"), log) if f.exists()
             for line in f.read_text(errors="replace").splitlines()]
    return "\n".join(line for line in lines if logged_at(line) >= since)


def logged_at(line: str) -> float:
    """An agent log line's time (`2026-12-05 03:27:30,255 ...`, local time); 0 if none."""
    try:
        return datetime.strptime(line[:STAMP], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return 0.0


def row(run: Run, fault: str, host: str, outcome: str, at: float, results: list[dict],
        records: int, **more: Any) -> Row:
    first = min((t for t in results[0]["ack_times"] if t > at), default=at)
    return {"fault": fault, "host": host, "outcome": outcome,
            "first_reply_s": round(first - at, 2),
            "stall_s": round(max(first - at, stall(results[0], at)), 2),
            "records": records, **more}


def stall(result: dict, at: float) -> float:
    """The largest gap between two of the client's acks of which the later came after `at`
    (a reply already on its way when the fault came makes the first reply prompt, and says
    nothing of the outage after it; row() also counts the wait from `at` to the first reply,
    for a client that had no ack before the fault)."""
    t = result["ack_times"]
    return max((b - a for a, b in itertools.pairwise(t) if b > at), default=0.0)


# --- crashes of a host or of one of its parts ---------------------------------------------

@dataclass(frozen=True)
class Crash:
    """What dies: on the primary's host or the backup's, its agent, its QEMU, or both."""
    on: str          # "primary" or "backup"
    agent: bool
    qemu: bool


CRASHES = {
    "backup-qemu": Crash("backup", agent=False, qemu=True),
    "backup-agent": Crash("backup", agent=True, qemu=False),
    "backup-host": Crash("backup", agent=True, qemu=True),
    "primary-qemu": Crash("primary", agent=False, qemu=True),
    "primary-agent": Crash("primary", agent=True, qemu=False),
}


def crash(run: Run, name: str) -> Row:
    """One crash while a client writes: the other side (the survivor) must end live alone one
    generation up, and the client carry on through it. An agent that outlives its QEMU steps
    down and says so."""
    how = CRASHES[name]
    victim = run.live if how.on == "primary" else other(run.live)
    survivor = other(victim)
    pair.wait_caught_up(run.cfg, timeout=300)
    gen = run.generation()
    clients = run.writing(name)
    with Emissions() as seen:
        at = time.time()
        lab.kill_host(paths(run.cfg, victim).pid, domain_names(run.cfg, victim),
                      agent=how.agent, qemu=how.qemu)
        s = decided(run, survivor)
        assert s.role == "live-alone", (name, s.failover)
        assert s.failover.generation == gen + 1, (name, s.failover)
        if not how.agent:   # the survivor may have dismissed it already: its log says
            wait_until(lambda: f"stepping down as {how.on}" in said(run.cfg, victim, at), 60,
                       f"host {victim}'s agent to step down")
        answering(run, survivor)
        results = run.finish(clients)
        late = second_copy(seen, survivor, at)
    assert not late, f"{name}: host {victim} emitted {len(late)} frames after {survivor}'s first"
    records = intact(results, name, s.failover.live_at)
    run.live = survivor
    return row(run, name, victim, f"{survivor} live alone, gen {gen + 1}", at, results, records)


def ridden_out(run: Run, name: str, host: str, disturb: Callable[[], dict]) -> Row:
    """disturb() while a client writes through the primary: the pair rides it out. No
    failover, one generation on both sides, nothing lost, the backup caught up afterwards."""
    pair.wait_caught_up(run.cfg, timeout=300)
    live, backup = run.live, other(run.live)
    gen = run.generation()
    clients = run.writing(name)
    at = time.time()
    more = disturb()
    results = run.finish(clients)
    pair.wait_caught_up(run.cfg, timeout=300)
    p, b = answered(run.cfg_path, live), answered(run.cfg_path, backup)
    assert (p.role, b.role) == ("primary", "backup"), (name, p.failover, b.failover)
    assert p.failover.generation == b.failover.generation == gen, (name, p.failover)
    assert not b.backup.replay_error, b.backup.replay_error
    records = intact(results, name, at)
    return row(run, name, host, "no failover", at, results, records, **more)


def serving(run: Run, frames: int, also: Callable[[], None] = lambda: None) -> None:
    """Hold a fault until the live host's tap has taken `frames` more of the guest's frames:
    the guest serves through it (the fault's length is this, not a sleep). also(): called
    at each look."""
    with Emissions() as seen:
        wait_until(lambda: also() or seen.count(run.live) > frames, 180,
                   f"the guest to serve {frames} frames through the fault")


def libvirtd_restart(run: Run) -> Row:
    """libvirtd stops and starts again under both hosts: the guests' QEMUs run on, nobody
    takes it for a death, and the backup goes on following the log."""
    def restart() -> dict:
        t0 = time.time()
        lab.restart_libvirtd()
        took = time.time() - t0
        primary_icount = side(run.cfg_path, run.live).primary.icount
        wait_until(lambda: side(run.cfg_path, other(run.live)).backup.icount > primary_icount,
                   120, "the backup to replay past the restart")
        return {"restart_s": round(took, 2)}
    return ridden_out(run, "libvirtd-restart", "both", restart)


def storage_hung(run: Run) -> Row:
    """The storage server freezes (SIGSTOP) under a running pair: the arbiter is needed only
    for a race, so the pair serves on; it thaws afterwards."""
    def hang() -> dict:
        lab.NFS.signal(signal.SIGSTOP)
        try:
            serving(run, 100)
        finally:
            lab.NFS.signal(signal.SIGCONT)
        return {}
    return ridden_out(run, "storage-hung", "nfs", hang)


def storage_stopped(run: Run) -> Row:
    """The storage server stops under a running pair and starts again: the pair serves on."""
    def stop() -> dict:
        lab.NFS.stop()
        try:
            serving(run, 100)
        finally:
            lab.NFS.start()
        return {}
    return ridden_out(run, "storage-stopped", "nfs", stop)


FLAPS, FLAP_DOWN_S = 5, 0.5


def link_flap(run: Run) -> Row:
    """The primary's LAN cable drops out for 0.5 s five times (well under the channel
    timeout): TCP carries the channel and the client across each gap; nobody fails over."""
    def flap() -> dict:
        for _ in range(FLAPS):
            lab.cut_link(run.live, False)
            try:
                time.sleep(FLAP_DOWN_S)   # the gap's length is the fault itself
            finally:
                lab.cut_link(run.live, True)
            serving(run, 10)
        return {"flaps": FLAPS, "down_s": FLAP_DOWN_S}
    return ridden_out(run, "link-flap", run.live, flap)


SLOW_RATE = "512kbit"   # the loaded channel needs ~0.6 Mbit/s (bench/results/latest.md)


def slow_link(run: Run) -> Row:
    """The primary's LAN cable carries SLOW_RATE each way (tc htb) while the client writes: the
    backup falls behind, nobody fails over, and it catches up once the link is fast again."""
    def slow() -> dict:
        lags: list[float] = []
        lab.slow_link(run.live, SLOW_RATE)
        try:
            serving(run, 200, lambda: lags.append(
                side(run.cfg_path, run.live).primary.lag_seconds or 0.0))
        finally:
            lab.slow_link(run.live, None)
        return {"rate": SLOW_RATE, "max_lag_s": round(max(lags), 2)}
    return ridden_out(run, "slow-link", run.live, slow)


# --- a frozen host, a cut channel -------------------------------------------------------------

def freeze_primary(run: Run) -> Row:
    """SIGSTOP of the primary's host (its agent and QEMU) past the channel timeout: the backup
    goes live; on SIGCONT the old primary finds itself fenced, and nothing it emits follows the
    new primary's first frame (acks that waited in its socket echo heartbeats older than its
    lease: gate/outputgate.py)."""
    pair.wait_caught_up(run.cfg, timeout=300)
    frozen, peer = run.live, other(run.live)
    gen = run.generation()
    clients = run.writing("frozen")
    host = (paths(run.cfg, frozen).pid, domain_names(run.cfg, frozen))
    with Emissions() as seen:
        at = time.time()
        lab.kill_host(*host, signal.SIGSTOP)
        try:
            s = decided(run, peer, 120)
            assert s.role == "live-alone", s.failover
            first = wait_until(lambda: seen.first(peer, after=at), 60,
                               f"host {peer} to emit the guest's frames")
        finally:
            lab.kill_host(*host, signal.SIGCONT)
        # it may be dismissed at once by the re-protection: its log says it was fenced
        wait_until(lambda: "-> fenced on claim-lost" in said(run.cfg, frozen, at), 120,
                   f"host {frozen} to find itself fenced")
        results = run.finish(clients)
        late = second_copy(seen, peer, at)
    assert not late, f"host {frozen} emitted {len(late)} frames after host {peer}'s first"
    records = intact(results, "frozen primary", first)
    run.live = peer
    return row(run, "freeze-primary", frozen, f"{peer} live, gen {gen + 1}; {frozen} fenced",
               at, results, records, first_frame_s=round(first - at, 2))


def race(run: Run, name: str, cut: Callable[[str, str], None], heal: Callable[[str, str], None],
         cut_off: str | None = None) -> Row:
    """cut(primary, backup) while a client writes, so that each side takes the other for dead
    and races for the arbiter: exactly one wins, the other is fenced and never emits again,
    also after heal(primary, backup). cut_off ("primary" or "backup"): that side cannot reach
    the storage, so it must lose, fenced as unsure."""
    pair.wait_caught_up(run.cfg, timeout=300)
    gen = run.generation()
    live, backup = run.live, other(run.live)
    clients = run.writing(name)
    with Emissions() as seen:
        at = time.time()
        cut(live, backup)
        try:   # the winner may dismiss the loser as soon as it can: the loser's log tells
            winner = wait_until(lambda: next((k for k in ("a", "b") if side(
                run.cfg_path, k).role == "live-alone"), None), 120, "one side to win")
            wait_until(lambda: "-> fenced on" in said(run.cfg, other(winner), at), 120,
                       f"host {other(winner)} to find itself fenced")
        finally:
            heal(live, backup)
        if cut_off is not None:
            loser = live if cut_off == "primary" else backup
            assert winner == other(loser), "the side without the storage won the race"
            assert "-> fenced on arbiter-unreachable" in said(run.cfg, loser, at)
        gen_won = side(run.cfg_path, winner).failover.generation
        assert gen_won == gen + 1, gen_won
        results = run.finish(clients)
        late = second_copy(seen, winner, at)
    assert not late, f"the loser emitted {len(late)} frames after the winner's first"
    records = intact(results, name, at)
    run.live = winner
    host = {"primary": live, "backup": backup}.get(cut_off or "", "both")
    return row(run, name, host, f"{winner} won gen {gen + 1}; {other(winner)} fenced", at,
               results, records)


def _drop_channel(run: Run) -> Callable[[str, str], None]:
    port = run.cfg.channel.port
    return lambda _p, b: lab.drop(b, f"tcp dport {port}", f"tcp sport {port}")


def cut_channel(run: Run) -> Row:
    """The logging channel alone is cut (the backup's host drops its port), while both hosts
    reach the storage and the client reaches both."""
    return race(run, "channel-cut", _drop_channel(run), lambda _p, b: lab.undrop(b))


def storage_lost_and_channel_cut(run: Run) -> Row:
    """The primary's host loses the storage, then the channel is cut: only the backup can
    claim."""
    nfs = lab.NFS.address

    def cut(p: str, b: str) -> None:
        lab.drop(p, f"ip saddr {nfs}", f"ip daddr {nfs}")
        _drop_channel(run)(p, b)

    def heal(p: str, b: str) -> None:
        lab.undrop(b)
        lab.undrop(p)
    return race(run, "storage-lost-and-channel-cut", cut, heal, cut_off="primary")


def partition_primary(run: Run) -> Row:
    """The primary's host loses its LAN cable: the backup, the client and the storage are all
    on the other side. The backup wins; the primary, unable to reach the arbiter, is fenced,
    and what it tries to send (its own tap shows it) never follows the backup's first frame."""
    return race(run, "partition-primary", lambda p, _b: lab.cut_link(p, False),
                lambda p, _b: lab.cut_link(p, True), cut_off="primary")


def partition_backup(run: Run) -> Row:
    """The backup's host loses its LAN cable: the primary, with the client and the storage,
    goes on alone; the backup, unable to reach the arbiter, is fenced and never goes live."""
    return race(run, "partition-backup", lambda _p, b: lab.cut_link(b, False),
                lambda _p, b: lab.cut_link(b, True), cut_off="backup")


# --- SIGKILL of the primary's host at chosen points -------------------------------------------

# `after`: frames the live host's tap took since the point's client started (None: a random count,
# printed); `loaders`: other clients writing at full speed; `settled`: the backup caught up and
# its standby recorder ready first (False: the kill comes the moment the pair is protected
# again, the backup fresh from its clone).
KILL_POINTS = {
    "first-write": {"after": 1, "loaders": 0, "settled": True},
    "steady": {"after": 40, "loaders": 0, "settled": True},
    "random": {"after": None, "loaders": 0, "settled": True},
    "heavy-writes": {"after": 150, "loaders": 3, "settled": True},
    "heavy-writes-late": {"after": 700, "loaders": 3, "settled": True},
    "just-protected": {"after": 1, "loaders": 0, "settled": False},
}


def snapshots_on(disk: Path) -> list[str]:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                                     check=True, capture_output=True, text=True).stdout)
    return [s["name"] for s in info.get("snapshots", [])]


def kill_primary_at(run: Run, point: str) -> Row:
    """The primary's host dies at `point` while clients write: its peer must go live one
    generation up and every client carry on with every record intact."""
    how, live, peer = KILL_POINTS[point], run.live, other(run.live)
    after = how["after"] if how["after"] is not None else random.randint(2, 500)
    if how["settled"]:
        pair.wait_caught_up(run.cfg, timeout=300)
        wait_until(lambda: side(run.cfg_path, peer).backup.standby_ready, 60,
                   f"host {peer}'s standby recorder to be ready")
    gen = run.generation()
    clients = run.writing(point, after, how["loaders"])
    at = time.time()
    lab.kill_host(paths(run.cfg, live).pid, domain_names(run.cfg, live))
    s = decided(run, peer)
    assert s.role == "live-alone", (point, s.failover)
    assert s.failover.generation == gen + 1, (point, s.failover)
    if how["settled"]:   # the replayed state went into the standby recorder beside the replay
        assert s.failover.golive_via == "standby", (point, s.failover)
        # without the guest's RAM, which the replay and the standby map from one file
        assert 0 < s.failover.golive_state_bytes < LEAN_STATE, (point, s.failover)
    assert SNAPSHOT not in snapshots_on(paths(run.cfg, peer).disk), point
    answering(run, peer)
    results = run.finish(clients)
    records = intact(results, point, s.failover.live_at)
    run.live = peer
    return row(run, f"kill-{point}", live, f"{peer} live, gen {gen + 1}", at, results, records,
               after=after, detected_s=round(s.failover.detected_at - at, 2),
               replay_s=round(s.failover.replay_s, 2))


def kill_during_switch(run: Run, when: str) -> Row:
    """SIGKILL of the primary's host during `ftorch failover`: at "handover" (paused, waiting
    for acks the backup holds back for the purpose) or at "take-over" (its whole log acked,
    the backup claiming and going live). The backup ends live either way, the operator told
    what happened, and the client carries on."""
    live, peer = run.live, other(run.live)
    pair.wait_caught_up(run.cfg, timeout=300)
    gen = run.generation()
    clients = run.writing(f"switch-{when}")
    cfg = str(run.cfg_path)
    if when == "handover":
        ftorch("debug", "hold-acks", cfg, "true")
    cli = ftorch_background("failover", cfg, "--json")
    started = time.time()
    try:
        if when == "handover":   # paused, and waiting for the acks held back
            wait_until(lambda: side(run.cfg_path, live).role == "handed-over", 120,
                       f"host {live} to begin its handover", every=0.02)
        else:   # its log says so the moment the backup has acked all of it (a status call
            # over SSH takes longer than the backup's take-over)
            wait_until(lambda: "handed over at offset" in said(run.cfg, live, started), 120,
                       f"host {live} to finish its handover", every=0.005)
        at = time.time()
        lab.kill_host(paths(run.cfg, live).pid, domain_names(run.cfg, live))
    finally:
        if when == "handover":
            ftorch("debug", "hold-acks", cfg, "false", check=False)
    _, err = cli.communicate(timeout=900)
    s = decided(run, peer)
    assert s.role == "live-alone" and s.failover.generation == gen + 1, (when, s.failover)
    if cli.returncode:   # the handover call itself failed: the CLI says what it did
        assert cli.returncode == 1 and "went live in its place" in err, err
    else:
        assert when == "take-over", err
    answering(run, peer)
    results = run.finish(clients)
    records = intact(results, f"switch-{when}", s.failover.live_at)
    run.live = peer
    return row(run, f"kill-switch-{when}", live, f"{peer} live, gen {gen + 1}", at, results,
               records, cli_exit=cli.returncode)


def kill_during_golive(run: Run) -> Row:
    """The primary's host freezes past the timeout and, while its backup goes live for it,
    dies (SIGKILL of the frozen agent and QEMU): the go-live goes on, nothing of the old
    primary ever emits again."""
    frozen, peer = run.live, other(run.live)
    pair.wait_caught_up(run.cfg, timeout=300)
    gen = run.generation()
    clients = run.writing("golive")
    host = (paths(run.cfg, frozen).pid, domain_names(run.cfg, frozen))
    frozen_at = time.time()
    lab.kill_host(*host, signal.SIGSTOP)
    try:   # its log says so the moment it starts: a status call over SSH takes longer than
        # the go-live
        wait_until(lambda: "-> claiming on channel-silent" in said(run.cfg, peer, frozen_at),
                   60, f"host {peer} to start its go-live", every=0.005)
    finally:
        at = time.time()
        lab.kill_host(*host)   # SIGKILL ends a stopped process as well
    went_live = [line for line in said(run.cfg, peer, frozen_at).splitlines()
                 if "-> live-alone on live" in line]
    when = "live" if went_live and logged_at(went_live[0]) <= at else "going live"
    s = decided(run, peer)
    assert s.role == "live-alone" and s.failover.generation == gen + 1, s.failover
    answering(run, peer)
    results = run.finish(clients)
    records = intact(results, "go-live", s.failover.live_at)
    run.live = peer
    return row(run, "kill-during-golive", frozen, f"{peer} live, gen {gen + 1}", at, results,
               records, peer_was=when)


def kill_after_libvirtd_restart(run: Run) -> Row:
    """libvirtd restarts, then the primary's host dies: the backup's go-live (which starts and
    loads a recorder through libvirt) works on a new connection."""
    lab.restart_libvirtd()
    row_ = kill_primary_at(run, "steady")
    return {**row_, "fault": "kill-after-libvirtd-restart"}


def in_mid_clone(run: Run, name: str) -> tuple[list[Client], str, str]:
    """The backup's host dies while a client writes; return once the primary, gone on alone,
    has taken the clone for a new backup there (its log says so the moment the snapshot is
    taken; the copy and the new backup's first replay take seconds more): the clients, the
    primary's host, and the new backup's."""
    live, peer = run.live, other(run.live)
    pair.wait_caught_up(run.cfg, timeout=300)
    clients = run.writing(name)
    t0 = time.time()
    lab.kill_host(paths(run.cfg, peer).pid, domain_names(run.cfg, peer))
    wait_until(lambda: "cloned at offset" in said(run.cfg, live, t0), 120,
               f"host {live} to clone the guest for a new backup on host {peer}", every=0.005)
    assert "protected by host" not in said(run.cfg, live, t0), "the clone was over already"
    return clients, live, peer


def running_domains(run: Run, key: str) -> list[str]:
    return lab.running(domain_names(run.cfg, key))


def kill_clone_peer(run: Run) -> Row:
    """The backup's host dies; while the primary clones a new backup onto it, that host dies
    once more (its agent and whatever QEMU it had started): the live guest runs on alone,
    unharmed, and a later attempt protects it."""
    clients, live, peer = in_mid_clone(run, "clone-peer")
    at = time.time()
    running = running_domains(run, peer)
    lab.kill_host(paths(run.cfg, peer).pid, running, qemu=bool(running))
    s = answered(run.cfg_path, live)
    assert s.role in ("live-alone", "primary"), s
    run.protected()
    results = run.finish(clients)
    records = intact(results, "clone-peer", at)
    return row(run, "kill-clone-peer", peer, f"{live} stayed live, protected again", at,
               results, records, qemus_killed=len(running))


def kill_only_copy_during_clone(run: Run) -> Row:
    """A second failure before re-protection: the backup's host dies, and while the primary,
    now the only copy, clones a new backup, its host dies too. The guest is down (as with
    VMware FT), and safely so: the half-made backup, never armed, does not go live, and
    neither host emits anything afterwards. Ends the pair: not in FAULTS."""
    clients, live, peer = in_mid_clone(run, "only-copy")
    with Emissions() as seen:
        at = time.time()
        lab.kill_host(paths(run.cfg, live).pid, running_domains(run, live))
        deadline = time.monotonic() + 4 * run.cfg.channel.timeout_s + 5
        roles = set()
        while time.monotonic() < deadline:   # the length of the look is the point: no sleep
            roles.add(side(run.cfg_path, peer).role)   # to wait for a thing that must not come
        seen.sync()
        after = {k: seen.count(k, at + 0.05) for k in ("a", "b")}   # frames already on their way
    for c in clients:
        c.proc.kill()
    assert "live-alone" not in roles, f"the half-made backup on host {peer} went live: {roles}"
    assert not any(after.values()), f"frames emitted after the second failure: {after}"
    return {"fault": "kill-only-copy-during-clone", "host": live, "outcome":
            f"guest down; {peer} stayed {'/'.join(sorted(roles))}", "first_reply_s": 0.0,
            "stall_s": 0.0, "records": 0}


# Every fault by name: the suite's and the campaign's list.
FAULTS: dict[str, Callable[[Run], Row]] = {
    "libvirtd-restart": libvirtd_restart,
    **{name: (lambda r, n=name: crash(r, n)) for name in CRASHES},
    "freeze-primary": freeze_primary,
    "channel-cut": cut_channel,
    "storage-lost-and-channel-cut": storage_lost_and_channel_cut,
    "partition-primary": partition_primary,
    "partition-backup": partition_backup,
    "storage-hung": storage_hung,
    "storage-stopped": storage_stopped,
    "link-flap": link_flap,
    "slow-link": slow_link,
    **{f"kill-{p}": (lambda r, p=p: kill_primary_at(r, p)) for p in KILL_POINTS},
    "kill-switch-handover": lambda r: kill_during_switch(r, "handover"),
    "kill-switch-take-over": lambda r: kill_during_switch(r, "take-over"),
    "kill-during-golive": kill_during_golive,
    "kill-after-libvirtd-restart": kill_after_libvirtd_restart,
    "kill-clone-peer": kill_clone_peer,
}


def inject(run: Run, name: str) -> Row:
    """Fault `name`, then the pair protected again; the row also goes into run.rows."""
    r = FAULTS[name](run)
    run.n += 1
    run.rows.append(r)
    print("fault " + json.dumps(r), flush=True)
    run.protected()
    return r


REC = struct.Struct("<IIHH")   # kvsvc.c's record head: magic, seq, key and value lengths
REC_SIZE, MAGIC = 512, 0x46544B56


def records_on(disk: Path, count: int) -> list[tuple[str, str, int]]:
    """The guest service's first `count` records, read from its data disk's image."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "data.raw"
        subprocess.run(["qemu-img", "dd", "-f", "qcow2", "-O", "raw", f"bs={REC_SIZE}",
                        f"count={count}", f"if={disk}", f"of={raw}"], check=True,
                       capture_output=True)
        data = raw.read_bytes()
    out = []
    for i in range(count):
        magic, seq, klen, vlen = REC.unpack_from(data, i * REC_SIZE)
        kv = data[i * REC_SIZE + REC.size:(i + 1) * REC_SIZE]
        if magic != MAGIC:
            break
        out.append((kv[:klen].decode(), kv[klen:klen + vlen].decode(), seq))
    return out


def identical_after_a_clean_stop(run: Run) -> None:
    """The pair stops cleanly: the backup replays to the primary's last instruction, the two
    disks hold the same data, the backup's serial output is what the primary's printed since
    the backup's clone, and every record any client was acknowledged in the whole run is on
    the disk, by key, value and sequence number."""
    summary = json.loads(ftorch("down", str(run.cfg_path), "--json", "--timeout", "300").stdout)
    assert summary["backup"]["finished"], summary
    assert summary["backup"]["icount"] == summary["primary"]["icount"], summary
    cmp = subprocess.run(["qemu-img", "compare", str(paths(run.cfg, run.live).disk),
                          str(paths(run.cfg, other(run.live)).disk)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    primary, backup = paths(run.cfg, run.live), paths(run.cfg, other(run.live))
    # the primary's recorder moved into one of its two slots at the clone, each with its own
    # serial file (layout.py); the backup replayed from that clone into its first slot's
    printed = max((f for f in (primary.serial, primary.standby_serial) if f.exists()),
                  key=lambda f: f.stat().st_mtime).read_bytes()
    replayed = backup.serial.read_bytes()
    assert b"tick" in replayed and printed.endswith(replayed), (len(printed), len(replayed))
    top = max((seq for _, _, seq in run.acked), default=0)
    on_disk = records_on(paths(run.cfg, run.live).disk, top)
    missing = [r for r in run.acked if r[2] > len(on_disk) or on_disk[r[2] - 1] != r]
    assert not missing, f"{len(missing)} acknowledged records not on the disk: {missing[:3]}"


def table(rows: list[Row]) -> str:
    return "\n".join(f"{r['fault']:>28} on {r['host']:<4} {r['outcome']:<30} stall "
                     f"{r['stall_s']:5.2f} s, {r['records']} records" for r in rows)
