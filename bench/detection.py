"""False failovers under load: how close a healthy pair comes to the channel timeout.

One protected pair (inbound kick on: the fastest guest, so the most log and the busiest agents),
caught up, then a client writing over one connection for LOAD_S. Nothing is killed: any
failover is a false one. Each side's longest silence of its peer and its close calls (silences
past half the timeout) come from the agents' status.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from rich.progress import Progress

from ftorch.config import load
from ftorch.host import lab
from ftorch.ops import pair

ROOT = Path(__file__).resolve().parents[1]
LOAD_S = 300.0


def run(cfg_path: Path, tmp: Path, progress: Progress) -> dict:
    cfg = load(cfg_path)
    task = progress.add_task(f"detection: {LOAD_S:.0f} s of load, nothing killed", total=None)
    lab.up()
    pair.down(cfg, timeout=10, force=True)
    pair.up(cfg, wait=True, timeout=300)
    try:
        pair.wait_caught_up(cfg, timeout=300, max_lag_s=0.5)
        gen0 = pair.try_status(cfg, "b").failover.generation
        out = tmp / "detection.json"
        subprocess.run(["ip", "netns", "exec", lab.CLIENT_NS, sys.executable,
                        str(ROOT / "tools/kvclient.py"), "--duration", str(LOAD_S), "--verify",
                        "--out", str(out)], cwd=ROOT, check=False, capture_output=True)
        res = json.loads(out.read_text())
        sides = {k: pair.try_status(cfg, k) for k in ("a", "b")}
    finally:
        pair.down(cfg, timeout=60, force=True)
    progress.update(task, completed=1, total=1)
    return {
        "load_s": LOAD_S, "timeout_s": cfg.channel.timeout_s,
        "heartbeat_s": cfg.channel.heartbeat_s, "records": len(res["acked"]),
        "client_errors": res["errors"], "mismatches": len(res["mismatches"]),
        "roles": {k: s.role for k, s in sides.items()},
        "generation": {"before": gen0, "after": {k: s.failover.generation if s.failover else None
                                                 for k, s in sides.items()}},
        "failovers": sum(s.failover.failovers for s in sides.values() if s.failover),
        "longest_silence_s": {k: s.channel.longest_silence_s if s.channel else None
                              for k, s in sides.items()},
        "close_calls": {k: s.channel.close_calls if s.channel else None for k, s in sides.items()},
        "at": time.time(),
    }


def markdown(res: dict) -> str:
    ls, cc = res["longest_silence_s"], res["close_calls"]
    return "\n".join([
        f"## Failure detection under load ({res['load_s']:.0f} s, nothing killed"
        + (f", run {res['date']}" if res.get("date") else "") + ")", "",
        f"Heartbeat {res['heartbeat_s'] * 1e3:.0f} ms, timeout {res['timeout_s'] * 1e3:.0f} ms; a "
        f"client writing over one connection ({res['records']} records, mismatches "
        f"{res['mismatches']}; errors: {'; '.join(res['client_errors']) or 'none'}), inbound "
        "kick on. (`ERR full`: the guest's key-value store holds 131072 records; the client "
        "stops there.)", "",
        "| side | hears | longest silence | silences past half the timeout |",
        "|---|---|---|---|",
        f"| A (primary) | the backup's ACKs and BEATs | {ls['a'] * 1e3:.0f} ms | {cc['a']} |",
        f"| B (backup) | the primary's DATA and BEATs | {ls['b'] * 1e3:.0f} ms | {cc['b']} |",
        "", f"False failovers: {res['failovers']} (roles after: A {res['roles']['a']}, "
        f"B {res['roles']['b']}; generation {res['generation']['before']} before).", ""])
