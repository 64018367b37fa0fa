"""The far side of a host request: `ftorch-host` reads one JSON request on stdin, does it on
this host, and writes one JSON reply on stdout. sshd runs it for the operator's CLI and for the
peer's agent; nothing else in ftorch touches this host on another's behalf.

Imports stay light at the top (every status poll starts this process); each operation imports
what it needs.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_REQUEST = 1 << 20
AGENT_LOG = "agent.log"
# Installed by provisioning (ansible/): on a host run by systemd, agents start as its instances
AGENT_UNIT = Path("/etc/systemd/system/ftorch-agent@.service")
SYSTEMD_RUNNING = Path("/run/systemd/system")


class Refused(Exception):
    """A request this host will not or cannot carry out; `kind` lets the caller map it."""

    def __init__(self, message: str, kind: str = "failed", exit_code: int = 1) -> None:
        super().__init__(message)
        self.kind = kind
        self.exit_code = exit_code


def _agent(socket_path: str, request: dict[str, Any], wait: float) -> dict[str, Any]:
    """Relay one request to this host's agent on its control socket."""
    if not os.path.exists(socket_path):
        raise Refused(f"agent not running (no control socket {socket_path})", "agent-down", 4)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(wait)
            s.connect(socket_path)
            s.sendall(json.dumps(request).encode() + b"\n")
            line = s.makefile("rb").readline()
    except TimeoutError as e:   # it took the connection: alive, but frozen or overloaded
        raise Refused(f"agent did not answer {request.get('cmd')!r} within {wait:.0f} s: {e}",
                      "agent-silent", 4) from None
    except OSError as e:
        raise Refused(f"agent did not answer {request.get('cmd')!r}: {e}", "agent-down", 4) from None
    if not line:
        raise Refused(f"agent closed the connection on {request.get('cmd')!r}", "agent-down", 4)
    return {"reply": json.loads(line)}


def _probe(pair_dir: str, domains: list[str]) -> dict[str, Any]:
    """Does an agent of the pair answer here, and does any of its domains run?"""
    try:
        _agent(str(Path(pair_dir) / "agent.sock"), {"cmd": "status"}, wait=3)
        agent = True
    except Refused as e:   # one that is there but silent may still run the pair
        agent = e.kind == "agent-silent"
    from ftorch.host.virt import Host
    host = Host()
    guests = [host.lookup(name) for name in domains]
    return {"agent": agent, "domain": any(g is not None and g.is_active() for g in guests)}


def _prepare(pair_dir: str) -> dict[str, Any]:
    """A fresh, empty pair folder (the last agent log kept as agent.log.1: why it ended)."""
    root = Path(pair_dir)
    previous = (root / AGENT_LOG).read_bytes() if (root / AGENT_LOG).exists() else None
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    if previous is not None:
        (root / "agent.log.1").write_bytes(previous)
    return {"free": shutil.disk_usage(root).free}


def _own(paths: list[str]) -> dict[str, Any]:
    """Hand files to the user QEMU runs as under libvirt."""
    from ftorch.host.prepare import qemu_ids
    uid, gid = qemu_ids()
    for p in paths:
        os.chown(p, uid, gid)
    return {}


def agent_env(key: str, role: str, mode: str) -> str:
    """The agent unit's environment file (what `agent run` takes besides pair.yaml)."""
    for name, value in (("host", key), ("role", role), ("mode", mode)):
        if not value.replace("-", "").isalnum():
            raise Refused(f"agent {name} {value!r} is not a plain word")
    return f"FTORCH_HOST={key}\nFTORCH_ROLE={role}\nFTORCH_MODE={mode}\n"


def _start_unit(config: Path, key: str, role: str, mode: str) -> dict[str, Any]:
    """Start the agent as an instance of the provisioned unit: systemd supervises it, its log
    is the unit's (appended to agent.log) and `systemctl status` shows it."""
    def systemd(*cmd: str, check: bool = True) -> str:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if check and p.returncode != 0:
            raise Refused(f"`{' '.join(cmd)}` failed: {p.stderr.strip() or p.returncode}")
        return p.stdout.strip()
    (config.parent / "agent.env").write_text(agent_env(key, role, mode))
    unit = systemd("systemd-escape", "--path", f"--template={AGENT_UNIT.name}", str(config.parent))
    systemd("systemctl", "reset-failed", unit, check=False)   # a previous agent's exit
    systemd("systemctl", "start", unit)
    return {"pid": int(systemd("systemctl", "show", "-p", "MainPID", "--value", unit) or 0),
            "unit": unit}


def _start_agent(config: str, key: str, role: str, mode: str, log: str) -> dict[str, Any]:
    """Start the agent in the background: under systemd as an instance of the provisioned unit
    (which logs to the pair folder's agent.log), otherwise in its own session, logging to
    `log`."""
    if SYSTEMD_RUNNING.is_dir() and AGENT_UNIT.exists() and Path(config).name == "pair.yaml":
        return _start_unit(Path(config), key, role, mode)
    cmd = [sys.executable, "-m", "ftorch", "agent", "run", config, "--host", key, "--role", role,
           "--mode", mode]
    with open(log, "ab") as out:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                             start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return {"pid": p.pid}


def _destroy_domain(name: str, ram_file: str = "") -> dict[str, Any]:
    from ftorch.host.layout import RAM_DIR
    from ftorch.host.virt import Host
    path = Path(ram_file) if ram_file else None
    if path and (path.parent != RAM_DIR or not path.name.startswith("ftorch-")):
        raise Refused(f"not a RAM file of ftorch's: {ram_file}", "usage", 2)
    destroyed = Host().destroy(name)
    if path:   # after the domain: its name is for the domains that map it
        path.unlink(missing_ok=True)
    return {"destroyed": destroyed}


def _check_emulator(path: str, host: str, kick: bool = True) -> dict[str, Any]:
    from ftorch.errors import VersionError
    from ftorch.host.virt import check_emulator
    try:
        return {"version": check_emulator(path, host, kick)}
    except VersionError as e:
        raise Refused(str(e), "version", e.exit_code) from None


def _reset_ownership(shared_dir: str, pair: str) -> dict[str, Any]:
    """A new run of the pair: host A owns generation 1 (the caller made sure nothing runs)."""
    from ftorch.arbiter.sharedlock import SharedLock
    lock = SharedLock(shared_dir, pair)
    lock.init()
    lock.reset()
    rec = lock.claim(1, "a", "ftorch up")
    if rec is None:
        raise Refused(f"could not claim generation 1 in {lock.where}: another `ftorch up`?")
    return {"record": rec.text()}


def _read_ownership(shared_dir: str, pair: str) -> dict[str, Any]:
    """The pair's newest ownership record as this host sees it."""
    from ftorch.arbiter.sharedlock import SharedLock
    rec = SharedLock(shared_dir, pair).current()
    return {"record": rec.text() if rec else None}


def _free(path: str) -> dict[str, Any]:
    return {"free": shutil.disk_usage(path).free}


def _digest(path: str, ranges: list[list[int]]) -> dict[str, Any]:
    """sha256 of the given (offset, length) ranges of a file, its size and what it occupies,
    once it is on disk (the copy counts only when durable)."""
    from ftorch.host.imagecopy import digest_ranges
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        sha = digest_ranges(f, [(int(o), int(n)) for o, n in ranges])
        st = os.fstat(f.fileno())
    return {"sha256": sha, "size": st.st_size, "allocated": st.st_blocks * 512}


OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "agent": _agent, "probe": _probe, "prepare": _prepare, "own": _own,
    "start-agent": _start_agent, "destroy-domain": _destroy_domain,
    "check-emulator": _check_emulator, "reset-ownership": _reset_ownership,
    "read-ownership": _read_ownership, "free": _free,
    "digest": _digest,
}


def handle(raw: bytes) -> dict[str, Any]:
    """One request in, one reply out; every failure is a reply, never a traceback."""
    try:
        req = json.loads(raw)
        if not isinstance(req, dict) or req.get("op") not in OPS:
            raise Refused(f"unknown request {str(req)[:80]!r}", "usage", 2)
        op = OPS[req.pop("op")]
        return {"ok": True, **op(**req)}
    except Refused as e:
        return {"ok": False, "error": str(e), "kind": e.kind, "exit_code": e.exit_code}
    except (ValueError, TypeError) as e:
        return {"ok": False, "error": f"malformed request: {e}", "kind": "usage", "exit_code": 2}
    except Exception as e:  # noqa: BLE001 - the caller needs an answer, whatever broke here
        from ftorch.errors import FtorchError
        code = e.exit_code if isinstance(e, FtorchError) else 1
        return {"ok": False, "error": str(e) or repr(e), "kind": "failed", "exit_code": code}


TOO_LARGE = {"ok": False, "error": "request too large", "kind": "usage", "exit_code": 2}


def main() -> None:
    """One request per line on stdin, one reply per line on stdout, until stdin ends: the
    caller keeps the session open and saves an SSH session and a process start per request."""
    for raw in iter(lambda: sys.stdin.buffer.readline(MAX_REQUEST + 1), b""):
        reply = TOO_LARGE if len(raw) > MAX_REQUEST else handle(raw)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if reply is TOO_LARGE:
            return   # the rest of that line would be read as requests


if __name__ == "__main__":
    main()
