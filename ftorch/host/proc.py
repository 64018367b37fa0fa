"""Running host commands with errors that name the command and its complaint."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from ftorch.errors import FtorchError


def run(*cmd: str, error: type[FtorchError] = FtorchError, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run cmd; on failure raise `error` with the command and the first line of its stderr."""
    try:
        p = subprocess.run(plain(list(cmd)), capture_output=True, text=input is None, input=input)
    except FileNotFoundError:
        raise error(f"{cmd[0]}: command not found (run `make setup`)") from None
    if check and p.returncode != 0:
        err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode(errors="replace")
        first = (err.strip().splitlines() or ["no error output"])[0]
        raise error(f"`{' '.join(cmd)}` failed ({p.returncode}): {first}")
    return p


# The agent's heartbeats must not wait behind the guest it protects. On a busy host (a TCG
# vCPU takes a whole core; the lab runs two guests and two agents on two cores) an agent at
# nice -10 was still seen runnable and not run for 0.4-2.5 s while both guests booted: a kernel
# sched_switch trace showed only QEMU's threads on both CPUs all that time, kernel threads and
# libvirtd waiting as long as the agent (lifting the agent's autogroup to nice -10 did not help),
# and 1 boot in 3 to 5 ended in a false failover at the 0.5 s timeout. A real-time task is
# picked before any of them: a probe at SCHED_RR 1 was never late by 0.1 s in those stalls.
# Cluster heartbeat daemons run so for the same reason (corosync: SCHED_RR by default). The
# agent is one Python process (the GIL keeps it to about one core); the kernel's real-time
# throttling (sched_rt_runtime_us) leaves the rest 5 % of each CPU even if it spun. Every thread
# inherits the policy (all of them must be real-time: a thread that waits for the GIL waits for
# the one holding it); the programs the agent runs do not (`plain`).
AGENT_RT_PRIORITY = 1
# Where real-time is refused (no CAP_SYS_NICE), nice -10 still gives ~9x QEMU's CPU share.
AGENT_NICE = -10
# Python hands the GIL over every 5 ms by default; the channel threads wait for it after every
# socket call, behind the log parser: 1 ms keeps a heartbeat round short.
AGENT_SWITCH_INTERVAL_S = 0.001


def prioritize_agent() -> str | None:
    """Make this process a real-time one (else nice -10) and raise the GIL's hand-over rate,
    before any thread starts (threads take their policy from their creator); return why not,
    if not."""
    sys.setswitchinterval(AGENT_SWITCH_INTERVAL_S)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, AGENT_NICE)
    except OSError as e:
        return f"cannot raise the agent's CPU priority to nice {AGENT_NICE}: {e.strerror}"
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(AGENT_RT_PRIORITY))
    except OSError as e:
        return f"cannot make the agent a real-time process (SCHED_RR {AGENT_RT_PRIORITY}): {e.strerror}"
    return None


def plain(cmd: list[str]) -> list[str]:
    """cmd as a program started by a real-time agent must run: under the ordinary policy
    (a qemu-img or a compiler at real-time priority would take a CPU from the guests)."""
    if os.sched_getscheduler(0) in (os.SCHED_RR, os.SCHED_FIFO) and shutil.which(cmd[0]):
        return ["chrt", "--other", "0", *cmd]
    return cmd
