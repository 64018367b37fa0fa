"""Operations on a pair from the operator's side: up, status, down. Agents do the work."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftorch.channel import trust
from ftorch.channel.horizon import LEVEL_INSTRUCTIONS
from ftorch.config import PairConfig
from ftorch.errors import AgentUnreachable, FtorchError
from ftorch.host.layout import domain_names, ram_file
from ftorch.host.prepare import image_files
from ftorch.rpc.hosts import Hosts, pair_dir
from ftorch.status import SideStatus
from ftorch.wait import wait_for

__all__ = ["agent_call", "try_status", "wait_for", "wait_caught_up", "up", "status", "down",
           "protected", "live_side", "PairStatus"]
ROLE_OF = {"a": "primary", "b": "backup"}


def agent_call(cfg: PairConfig, key: str, cmd: str, timeout: float = 10.0, **args: Any) -> dict:
    return Hosts(cfg).agent(key, cmd, timeout=timeout, **args)


def try_status(cfg: PairConfig, key: str) -> SideStatus:
    """An agent's status, or a stand-in saying why it is unreachable."""
    return Hosts(cfg).status(key)


def wait_caught_up(cfg: PairConfig, timeout: float, max_behind: int = LEVEL_INSTRUCTIONS,
                   samples: int = 5, max_lag_s: float | None = None) -> None:
    """Wait until the backup (on whichever host it runs) has replayed its backlog: fewer than
    `max_behind` instructions behind what it has received, `samples` readings in a row (after a
    boot it replays a backlog first), and with max_lag_s also that close in time. An idle
    guest runs few instructions a second, and a backup replays its idle stretches in real
    time: it can be level in instructions and still seconds behind (benchmarks ask for both)."""
    recent: list[tuple[int, float]] = []

    def caught_up() -> bool:
        sides = [try_status(cfg, k) for k in ("b", "a")]
        b = next((s.backup for s in sides if s.role == "backup" and s.backup), None)
        started = b is not None and b.guest in ("running", "paused")
        if b is None or not started:
            recent.append((1 << 62, float("inf")))
        else:
            recent.append((b.lag_instructions, b.lag_seconds if b.lag_seconds is not None
                           else float("inf")))
        last = recent[-samples:]
        return len(last) == samples and max(i for i, _ in last) < max_behind and \
            (max_lag_s is None or max(s for _, s in last) < max_lag_s)

    wait_for(caught_up, timeout, f"the backup to replay its backlog (under {max_behind} "
                                 "instructions behind what it received"
                                 + (f", {max_lag_s} s" if max_lag_s is not None else "") + ")")


def _reachable(cfg: PairConfig, key: str) -> bool:
    return try_status(cfg, key).reachable


def up(cfg: PairConfig, wait: bool, timeout: float, mode: str = "protected") -> None:
    """Start host A as primary and host B as backup, with fresh disks and logs, over SSH.

    mode unprotected or plain: host A only (no backup)."""
    hosts = Hosts(cfg)
    keys = ("b", "a") if mode == "protected" else ("a",)  # the backup listens first
    for key in keys:
        hosts(key).check_emulator(cfg.host(key).emulator, cfg.replay.inbound_kick)
    for key in ("a", "b"):
        found = hosts(key).probe(pair_dir(cfg, key), domain_names(cfg, key))
        if found.agent or found.domain:
            raise FtorchError(f"pair {cfg.pair} is already running on host {key}: "
                              f"`ftorch down {cfg.source}` first")
    # a new run of the pair: host A owns generation 1 (safe: nothing of it runs, see above)
    record = hosts("a").reset_ownership(cfg.shared_dir, cfg.pair)
    if mode == "protected":
        hosts.sees_record("b", record)
    files = image_files(cfg)
    credential = trust.new_credential(cfg.pair)   # the channel's, for this run of the pair
    for key in keys:
        where = pair_dir(cfg, key)
        hosts(key).prepare_pair(where, files, cfg.text, credential,
                                room=cfg.limits.disk_reserve_mib << 20, what=f"pair {cfg.pair}")
        hosts(key).start_agent(where, key, ROLE_OF[key], mode)
        wait_for(lambda k=key: _reachable(cfg, k), 30, f"the agent on host {key} "
                 f"(see {where}/agent.log there)")
    if wait and mode == "protected":
        wait_for(lambda: try_status(cfg, "b").guest in ("running", "paused"), timeout,
                 "the backup to start replaying")


@dataclass(frozen=True)
class PairStatus:
    pair: str
    hosts: dict[str, SideStatus]

    def to_json(self) -> dict[str, Any]:
        return {"pair": self.pair, "hosts": {k: s.to_json() for k, s in self.hosts.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PairStatus:
        return cls(data["pair"], {k: SideStatus.from_json(v) for k, v in data["hosts"].items()})


def status(cfg: PairConfig) -> PairStatus:
    return PairStatus(cfg.pair, {k: try_status(cfg, k) for k in ("a", "b")})


def protected(primary: SideStatus, backup: SideStatus) -> bool:
    """Two status answers describe a protected pair: a streaming primary, and a backup that
    replays and watches it (armed only once a clone's replay has passed its snapshot)."""
    return (primary.role == "primary" and primary.mode == "protected"
            and backup.role == "backup" and backup.backup is not None
            and backup.backup.icount > backup.backup.start_icount
            and backup.failover is not None and backup.failover.state == "backup")


def live_side(cfg: PairConfig) -> str:
    """The host whose guest runs alone (unprotected, or live after a failover)."""
    st = {k: try_status(cfg, k) for k in ("a", "b")}
    for key, s in st.items():
        if s.role == "live-alone" or (s.role == "primary" and s.mode == "unprotected"):
            return key
    roles = ", ".join(f"host {k} is {s.role}" for k, s in st.items())
    raise FtorchError(f"no guest of pair {cfg.pair} runs alone ({roles}): nothing to protect")


def down(cfg: PairConfig, timeout: float, force: bool) -> dict[str, Any]:
    """Stop the pair. Cleanly: the primary stops, the backup replays to the end, both quit."""
    result: dict[str, Any] = {"pair": cfg.pair}
    # after a failover and re-protection the primary may be host B
    primary = next((k for k in ("a", "b") if try_status(cfg, k).mode == "protected"), None)
    if not force and primary and _reachable(cfg, cfg.peer(primary)):
        agent_call(cfg, primary, "stop-guest")
        done = agent_call(cfg, cfg.peer(primary), "wait-finished", timeout=timeout + 5,
                          timeout_=timeout)
        result["backup"] = done
        result["primary"] = try_status(cfg, primary).to_json()
    order = (cfg.peer(primary), primary) if primary else ("b", "a")
    unreachable = []
    for key in order:  # the backup first: it must not take a quitting primary for dead
        try:
            agent_call(cfg, key, "quit", timeout=5)
        except (AgentUnreachable, FtorchError):
            pass
        wait_for(lambda k=key: not _reachable(cfg, k), 30, f"the agent on host {key} to quit")
        try:  # idempotent: also when the agent was gone
            for name in domain_names(cfg, key):
                Hosts(cfg)(key).destroy_domain(name, str(ram_file(cfg, key)))
        except AgentUnreachable as e:
            unreachable.append(e)
    if unreachable:
        raise AgentUnreachable(f"{unreachable[0]}: the pair's guest there may still run; "
                               "run `ftorch down --force` again once it answers")
    return result
