"""The pair's hosts as seen from one side: the operator's machine, or one host's agent.

The operator connects with its own key and known_hosts; an agent with the key and known_hosts
kept in its host's folder (they reach the peer for re-protection). Both get the same requests.
"""
from __future__ import annotations

import os
from typing import Any

from ftorch.config import PairConfig
from ftorch.errors import AgentUnreachable, FtorchError
from ftorch.rpc.ssh import Endpoint, connect
from ftorch.rpc.transport import HostTransport
from ftorch.status import SideStatus, unreachable


def pair_dir(cfg: PairConfig, key: str) -> str:
    """The pair's folder on host `key`, as that host sees it."""
    return str(cfg.host(key).path / cfg.pair)


def endpoint(cfg: PairConfig, key: str, me: str | None = None) -> Endpoint:
    """How to reach host `key`: from the operator's machine (me None) or from host `me`."""
    h = cfg.host(key)
    if me is None:
        identity = os.path.expanduser(cfg.ssh.identity)
        known = os.path.expanduser(cfg.ssh.known_hosts)
        netns = cfg.ssh.netns
    else:
        home = cfg.host(me).path
        identity = str(home / cfg.ssh.agent_identity)
        known = str(home / cfg.ssh.agent_known_hosts)
        netns = ""   # an agent is already on its host's networks
    return Endpoint(key, h.ssh_address, h.ssh.port, h.ssh.user, identity, known,
                    cfg.ssh.connect_timeout_s, netns)


class Hosts:
    """The two hosts of a pair from one side; `me` None is the operator."""

    def __init__(self, cfg: PairConfig, me: str | None = None) -> None:
        self.cfg = cfg
        self.me = me

    def __call__(self, key: str) -> HostTransport:
        return connect(endpoint(self.cfg, key, self.me))

    def agent(self, key: str, cmd: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
        """One command to the pair's agent on host `key`."""
        return self(key).call_agent(pair_dir(self.cfg, key), cmd, timeout=timeout, **args)

    def status(self, key: str) -> SideStatus:
        """The agent's status, or a stand-in saying in one line why it does not answer."""
        try:
            return SideStatus.from_json(self.agent(key, "status", timeout=5))
        except AgentUnreachable as e:
            return unreachable(key, str(e))

    def sees_record(self, key: str, record: str) -> None:
        """Host `key` reads `record` as the pair's newest arbiter record: both hosts race on
        one storage (a mount missing on one of them would give each its own arbiter, and the
        pair two live copies). Raises FtorchError saying what it read instead."""
        cfg = self.cfg
        try:
            seen = self(key).read_ownership(cfg.shared_dir, cfg.pair)
        except FtorchError as e:
            raise FtorchError(f"host {key} cannot read the arbiter's storage {cfg.shared_dir}: "
                              f"{e}") from None
        if seen != record:
            raise FtorchError(f"host {key} does not read the arbiter record this side reads at "
                              f"{cfg.shared_dir} (it reads {seen!r}): both hosts must reach the "
                              "same shared storage")
