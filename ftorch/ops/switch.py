"""Planned switch (`ftorch failover`): the backup becomes the live primary, nothing lost.

The primary pauses its guest and ends the log stream after its last event; once the backup has
acknowledged all of it, the backup claims the next generation on the arbiter and goes live
exactly there (the same go-live as after a crash, minus the detection); the old primary then
stops its paused guest. If the backup cannot take over before it has claimed the pair, the
primary claims it back and goes on alone; the arbiter keeps the two from both going live.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from ftorch.config import PairConfig
from ftorch.errors import FtorchError
from ftorch.ops.pair import agent_call, try_status, wait_for
from ftorch.status import FailoverStatus, SideStatus, decode

log = logging.getLogger("ftorch.switch")
POLL_S = 0.2


def _sides(cfg: PairConfig) -> tuple[str, str, SideStatus]:
    """(primary key, backup key, the backup's status) of a protected pair, or a clear error."""
    st = {k: try_status(cfg, k) for k in ("a", "b")}
    prim = [k for k, s in st.items() if s.role == "primary"]
    back = [k for k, s in st.items() if s.role == "backup"]
    if not prim or not back:
        raise FtorchError(f"a planned failover needs a protected pair; host a is {st['a'].role}, "
                          f"host b is {st['b'].role} (`ftorch status {cfg.source}`)")
    p, b = prim[0], back[0]
    if st[p].mode != "protected" or st[b].failover is None:
        raise FtorchError(f"pair {cfg.pair} runs without failover: set failover.enabled")
    return p, b, st[b]


def _within_bound(cfg: PairConfig, b: str, timeout: float) -> tuple[float, float]:
    """Wait until the backup trails by no more than the lag bound: the guest's pause lasts as
    long as the backup takes to replay what it trails. (The wait, the lag then.)"""
    bound, start = cfg.lag.bound_s, time.monotonic()
    lag: float | None = None

    def within() -> bool:
        nonlocal lag
        st = try_status(cfg, b)
        if st.role != "backup":
            raise FtorchError(f"host {b} is {st.role} now, not a backup: no planned failover "
                              f"(`ftorch status {cfg.source}`)")
        lag = st.backup.lag_seconds if st.backup else None
        return isinstance(lag, float) and lag <= bound

    wait_for(within, timeout, lambda: f"the backup on host {b} to come within the bound; it "
             f"still trails by {lag} s (lag.bound_s {bound} s): the guest would pause about "
             "that long; retry when the guest is less busy", every=POLL_S)
    assert lag is not None
    return time.monotonic() - start, lag


def _stop_old(cfg: PairConfig, p: str) -> None:
    """The old primary, paused and handed over, quits; one whose host died meanwhile is
    already stopped (the switch itself is done)."""
    try:
        agent_call(cfg, p, "quit", timeout=10)
    except FtorchError as e:
        if try_status(cfg, p).reachable:
            raise
        log.warning("the old primary on host %s is gone already: %s", p, e)
        return
    wait_for(lambda: not try_status(cfg, p).reachable, 60, f"the old primary on host {p} to stop")


def _abandon(cfg: PairConfig, p: str, b: str, why: str) -> FtorchError:
    """The backup did not claim the pair: stop it, let the primary claim it back."""
    try:
        agent_call(cfg, b, "quit", timeout=10)
    except FtorchError as e:
        log.warning("stopping the backup on host %s: %s", b, e)
    try:
        back = agent_call(cfg, p, "resume", timeout=30)
    except FtorchError as e:
        return FtorchError(f"planned failover failed ({why}) and host {p} could not resume: {e}; "
                           "operator needed")
    return FtorchError(f"planned failover abandoned ({why}); host {p} is {back.get('state')}, "
                       "unprotected until re-protected")


def _primary_lost(cfg: PairConfig, p: str, b: str, why: str, timeout: float) -> FtorchError:
    """The primary's host died during the handover: the backup alone can carry on, and must
    not be stopped. If it holds the whole stream (the END came) it takes over now; otherwise
    its own watch takes the silence for a death and goes live after the timeout."""
    st = try_status(cfg, b)
    try:
        if st.backup is not None and st.backup.log_ended:
            agent_call(cfg, b, "take-over", timeout=timeout + 300, timeout_=timeout)
        wait_for(lambda: try_status(cfg, b).role == "live-alone", timeout + 300,
                 f"host {b} to go live")
    except FtorchError as e:
        return FtorchError(f"host {p} died during the planned failover ({why}) and host {b} "
                           f"did not go live: {e}; operator needed")
    return FtorchError(f"host {p} died during the planned failover ({why}); host {b} went live "
                       f"in its place, unprotected until re-protected")


def failover(cfg: PairConfig, timeout: float) -> dict[str, Any]:
    """Switch the live guest to the backup's host; return what happened and how long it took."""
    p, b, bst = _sides(cfg)
    generation = bst.failover.generation if bst.failover else None
    waited, lag = _within_bound(cfg, b, timeout)
    try:
        handed = decode(FailoverStatus, agent_call(cfg, p, "handover", timeout=timeout + 10,
                                                   timeout_=timeout))
    except FtorchError as e:
        if not try_status(cfg, p).reachable:
            raise _primary_lost(cfg, p, b, f"handover: {e}", timeout) from None
        raise _abandon(cfg, p, b, f"handover: {e}") from None
    try:
        took = decode(FailoverStatus, agent_call(cfg, b, "take-over", timeout=timeout + 300,
                                                 timeout_=timeout))
    except FtorchError as e:
        took = try_status(cfg, b).failover or FailoverStatus(state="unreachable", error=str(e))
    if took.state != "live-alone":
        # unknown (host b unreachable) is safe to abandon too: the primary's claim back loses
        # to a generation host b claimed, so it never resumes behind a backup that went live
        if took.generation in (generation, None):
            raise _abandon(cfg, p, b, f"take-over: {took.error or took.reason}")
        raise FtorchError(f"host {b} claimed the pair but did not go live: {took.error}; "
                          f"host {p} stays paused and fenced: operator needed")
    _stop_old(cfg, p)
    assert took.live_at and took.take_over_at and handed.paused_at
    return {"pair": cfg.pair, "from": p, "to": b, "generation": took.generation,
            "waited_s": round(waited, 3), "lag_s": lag,
            "paused_s": took.live_at - handed.paused_at,
            "handover_s": took.take_over_at - handed.paused_at,
            "replay_s": took.replay_s, "save_s": took.save_s, "start_s": took.start_s,
            "golive_via": took.golive_via, "golive_state_bytes": took.golive_state_bytes,
            "offset": handed.offset, "icount": handed.icount}
