"""Failover time: SIGKILL of the primary's host until the client's first reply on the same TCP
connection, over RUNS runs, split into detection, replay of the remaining log and go-live.

Each run: a fresh protected pair, caught up; one client writing over one connection; after
KILL_AFTER frames released by the output gate, the primary's agent and QEMU get SIGKILL.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from rich.progress import Progress

from ftorch.config import load
from ftorch.host import lab
from ftorch.host.layout import domain_name, paths
from ftorch.ops import pair
from ftorch.stats import summary

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
KILL_AFTER = 100
CLIENT_S = 30.0


def released(cfg) -> int:
    """Frames the primary on host A let out through its gate."""
    p = pair.try_status(cfg, "a").primary
    return p.gate.released if p and p.gate else 0


def one_run(cfg_path: Path, tmp: Path, i: int) -> dict:
    cfg = load(cfg_path)
    lab.up()  # idempotent; first: the pair's hosts are reached over its sshd
    pair.down(cfg, timeout=10, force=True)   # leftovers of an earlier run
    pair.up(cfg, wait=True, timeout=300)
    try:
        pair.wait_caught_up(cfg, timeout=300)
        out = tmp / f"failover{i}.json"
        before = released(cfg)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.CLIENT_NS, sys.executable, str(ROOT / "tools/kvclient.py"),
             "--duration", str(CLIENT_S), "--verify", "--out", str(out)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pair.wait_for(lambda: released(cfg) > before + KILL_AFTER, 90, "the client to write")
        killed_at = time.time()
        lab.kill_host(paths(cfg, "a").pid, domain_name(cfg, "a"))
        pair.wait_for(lambda: pair.try_status(cfg, "b").role in ("live-alone", "fenced"),
                      180, "host B to go live")
        fo = asdict(pair.try_status(cfg, "b").failover)
        proc.wait(timeout=CLIENT_S + 300)
        res = json.loads(out.read_text())
    finally:
        pair.down(cfg, timeout=10, force=True)
    after = [t for t in res["ack_times"] if t > killed_at]
    return {
        "live": fo["state"] == "live-alone", "error": fo.get("error"),
        "client_errors": res["errors"], "mismatches": len(res["mismatches"]),
        "records": len(res["acked"]),
        "first_reply_s": (min(after) - killed_at) if after else None,
        "detection_s": fo["detected_at"] - killed_at,
        "replay_s": fo.get("replay_s"), "golive_s": (fo.get("save_s") or 0) + (fo.get("start_s") or 0),
        "save_s": fo.get("save_s"), "start_s": fo.get("start_s"),
    }


def run(cfg_path: Path, tmp: Path, progress: Progress) -> dict:
    task = progress.add_task("failover: SIGKILL runs", total=RUNS)
    runs = []
    for i in range(RUNS):
        runs.append(one_run(cfg_path, tmp, i))
        progress.advance(task)
    ok = [r for r in runs if r["live"] and r["first_reply_s"] is not None]
    return {"runs": runs, "went_live": len(ok), "intact": sum(1 for r in ok if not r["client_errors"]
                                                              and not r["mismatches"]),
            **{k: summary([r[k] for r in ok]) for k in
               ("first_reply_s", "detection_s", "replay_s", "golive_s", "save_s", "start_s")}}


def markdown(res: dict, timeout_s: float) -> str:
    def row(label: str, key: str) -> str:
        s = res[key]
        return (f"| {label} | {s['p50']:.2f} s | {s['max']:.2f} s |" if s["samples"]
                else f"| {label} | - | - |")
    return "\n".join([
        f"## Failover ({len(res['runs'])} runs, SIGKILL of the primary's agent and QEMU"
        + (f", run {res['date']}" if res.get("date") else "") + ")", "",
        f"Went live: {res['went_live']} of {len(res['runs'])}; client connection and every "
        f"acknowledged record intact: {res['intact']}. Detection is the channel timeout "
        f"({timeout_s:g} s).", "",
        "| part | p50 | max |", "|---|---|---|",
        row("SIGKILL to first reply on the same connection", "first_reply_s"),
        row("detection (SIGKILL to the backup's claim)", "detection_s"),
        row("replay of the remaining log", "replay_s"),
        row("go-live (stop, savevm, repair, recorder running)", "golive_s"),
        row("  of which stop + savevm + repair + quit", "save_s"),
        row("  of which recorder start from the snapshot", "start_s"),
        "", "The rest of the first-reply time is the client's TCP retransmission back-off."]) + "\n"
