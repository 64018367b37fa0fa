"""Running host commands with errors that name the command and its complaint."""
from __future__ import annotations

import os
import subprocess
import sys

from ftorch.errors import FtorchError


def run(*cmd: str, error: type[FtorchError] = FtorchError, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run cmd; on failure raise `error` with the command and the first line of its stderr."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=input is None, input=input)
    except FileNotFoundError:
        raise error(f"{cmd[0]}: command not found (run `make setup`)") from None
    if check and p.returncode != 0:
        err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode(errors="replace")
        first = (err.strip().splitlines() or ["no error output"])[0]
        raise error(f"`{' '.join(cmd)}` failed ({p.returncode}): {first}")
    return p


# The agent's heartbeats must not wait behind the guest it protects: on a busy host (a TCG
# vCPU takes a whole core; the lab runs two guests and two agents on two cores) an agent at
# the same weight as QEMU was seen silent for over the 0.5 s channel timeout while its peer ran,
# a false failover at boot. At nice -10 the agent gets ~9x QEMU's CPU share when both want it;
# it only wants much while it parses a boot's log.
AGENT_NICE = -10
# Python hands the GIL over every 5 ms by default; the channel threads wait for it after every
# socket call, behind the log parser: 1 ms keeps a heartbeat round short.
AGENT_SWITCH_INTERVAL_S = 0.001


def prioritize_agent() -> str | None:
    """Raise this process's CPU priority and the GIL's hand-over rate, before any thread
    starts (threads take their nice value from their creator); return why not, if not."""
    sys.setswitchinterval(AGENT_SWITCH_INTERVAL_S)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, AGENT_NICE)
    except OSError as e:
        return f"cannot raise the agent's CPU priority to nice {AGENT_NICE}: {e.strerror}"
    return None
