"""Operations on a pair from the operator's side: up, status, down. Agents do the work."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import lab
from .config import PairConfig
from .control import call
from .errors import AgentUnreachable, FtorchError
from .layout import domain_name, paths
from .prepare import fresh_host_dir
from .sharedlock import SharedLock
from .virt import Host, check_emulator

ROLE_OF = {"a": "primary", "b": "backup"}


def uses_lab(cfg: PairConfig) -> bool:
    return any(h.netns for h in cfg.hosts.values())


def agent_call(cfg: PairConfig, key: str, cmd: str, timeout: float = 10.0, **args: Any) -> dict:
    return call(paths(cfg, key).control, cmd, timeout=timeout, **args)


def try_status(cfg: PairConfig, key: str) -> dict[str, Any]:
    """An agent's status, or a stand-in saying why it is unreachable."""
    try:
        return agent_call(cfg, key, "status", timeout=5)
    except AgentUnreachable as e:
        return {"host": key, "role": "unreachable", "error": str(e)}


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise FtorchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


# A backup fewer instructions than this behind what it received has no backlog to speak of
# (it is held 10k instructions behind, and a busy guest runs ~2M between its 10 ms steps).
LEVEL_INSTRUCTIONS = 20_000_000


def wait_caught_up(cfg: PairConfig, timeout: float, max_behind: int = LEVEL_INSTRUCTIONS,
                   samples: int = 5) -> None:
    """Wait until the backup (on whichever host it runs) has replayed its backlog: fewer than
    `max_behind` instructions behind what it has received, `samples` readings in a row (after a
    boot it replays a backlog first). Counted in instructions: the seconds estimate can sit high
    for minutes while the backup is level, and low while it still replays seconds of backlog."""
    recent: list[int] = []

    def caught_up() -> bool:
        sides = [try_status(cfg, k) for k in ("b", "a")]
        st = next((s for s in sides if s.get("role") == "backup"), sides[0])
        behind = st.get("lag_instructions")
        started = st.get("guest") in ("running", "paused") and isinstance(behind, int)
        recent.append(behind if started else 1 << 62)
        return len(recent) >= samples and max(recent[-samples:]) < max_behind

    wait_for(caught_up, timeout, f"the backup to replay its backlog (under {max_behind} "
                                 "instructions behind what it received)")


def spawn_agent(cfg: PairConfig, key: str, role: str, mode: str = "protected") -> None:
    host = cfg.host(key)
    cmd = [sys.executable, "-m", "ftorch", "agent", "run", cfg.source, "--host", key, "--role", role,
           "--mode", mode]
    if host.netns:
        cmd = ["ip", "netns", "exec", host.netns, *cmd]
    log = open(paths(cfg, key).agent_log, "ab")
    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                     env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _reachable(cfg: PairConfig, key: str) -> bool:
    try:
        agent_call(cfg, key, "status", timeout=2)
        return True
    except (AgentUnreachable, FtorchError):
        return False


def up(cfg: PairConfig, wait: bool, timeout: float, mode: str = "protected") -> None:
    """Start host A as primary and host B as backup, with fresh disks and logs.

    mode unprotected or plain: host A only (no backup)."""
    if uses_lab(cfg):
        lab.up()
    host = Host()
    for key in ("a", "b") if mode == "protected" else ("a",):
        check_emulator(cfg.host(key).emulator, key)
    for key in ("a", "b"):
        if _reachable(cfg, key) or host.lookup(domain_name(cfg, key)):
            raise FtorchError(f"pair {cfg.pair} is already running on host {key}: "
                              f"`ftorch down {cfg.source}` first")
    _reset_ownership(cfg)
    keys = ("b", "a") if mode == "protected" else ("a",)  # the backup listens first
    for key in keys:
        fresh_host_dir(cfg, key)
        spawn_agent(cfg, key, ROLE_OF[key], mode)
        wait_for(lambda k=key: _reachable(cfg, k), 30, f"the agent on host {key} "
                 f"(see {paths(cfg, key).agent_log})")
    if wait and mode == "protected":
        wait_for(lambda: try_status(cfg, "b").get("guest") in ("running", "paused"), timeout,
                 "the backup to start replaying")


def _reset_ownership(cfg: PairConfig) -> None:
    """A new run of the pair: host A owns generation 1. Safe only because `up` refused above
    if any agent or domain of the pair still runs."""
    lock = SharedLock(Path(cfg.shared_dir), cfg.pair)
    if lock.dir.exists():
        shutil.rmtree(lock.dir)
    lock.init()
    if lock.claim(1, "a", "ftorch up") is None:
        raise FtorchError(f"could not claim generation 1 in {lock.dir}: another `ftorch up`?")


def status(cfg: PairConfig) -> dict[str, Any]:
    return {"pair": cfg.pair, "hosts": {k: try_status(cfg, k) for k in ("a", "b")}}


def protected(primary: dict[str, Any], backup: dict[str, Any]) -> bool:
    """Two status answers describe a protected pair: a streaming primary, and a backup that
    replays and watches it (armed only once a clone's replay has passed its snapshot)."""
    return (primary.get("role") == "primary" and primary.get("mode") == "protected"
            and backup.get("role") == "backup"
            and backup.get("icount", 0) > backup.get("start_icount", 1 << 62)
            and backup.get("failover", {}).get("state") == "backup")


def live_side(cfg: PairConfig) -> str:
    """The host whose guest runs alone (unprotected, or live after a failover)."""
    st = {k: try_status(cfg, k) for k in ("a", "b")}
    for key, s in st.items():
        if s.get("role") == "live-alone" or (s.get("role") == "primary"
                                              and s.get("mode") == "unprotected"):
            return key
    roles = ", ".join(f"host {k} is {s.get('role')}" for k, s in st.items())
    raise FtorchError(f"no guest of pair {cfg.pair} runs alone ({roles}): nothing to protect")


def down(cfg: PairConfig, timeout: float, force: bool) -> dict[str, Any]:
    """Stop the pair. Cleanly: the primary stops, the backup replays to the end, both quit."""
    result: dict[str, Any] = {"pair": cfg.pair}
    # after a failover and re-protection the primary may be host B
    primary = next((k for k in ("a", "b") if try_status(cfg, k).get("mode") == "protected"), None)
    if not force and primary and _reachable(cfg, cfg.peer(primary)):
        agent_call(cfg, primary, "stop-guest")
        done = agent_call(cfg, cfg.peer(primary), "wait-finished", timeout=timeout + 5,
                          timeout_=timeout)
        result["backup"] = done
        result["primary"] = {"host": primary, **try_status(cfg, primary)}
    order = (cfg.peer(primary), primary) if primary else ("b", "a")
    for key in order:  # the backup first: it must not take a quitting primary for dead
        try:
            agent_call(cfg, key, "quit", timeout=5)
        except (AgentUnreachable, FtorchError):
            pass
        wait_for(lambda k=key: not _reachable(cfg, k), 30, f"the agent on host {key} to quit")
        Host().destroy(domain_name(cfg, key))  # idempotent: also when the agent was gone
    return result
