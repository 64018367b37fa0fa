"""Failover as a client feels it: SIGKILL of the primary's host until the client's first reply on
the same TCP connection from the new primary (replies between the kill and the backup's claim
were on their way already), and the client's longest stall from the kill until the pair is
protected again (the automatic re-protection pauses the guest once more), at KILL_POINTS x RUNS.

Each run: a fresh protected pair, caught up; one client writing over one connection; after the
kill point's number of frames released by the output gate, the primary's agent and QEMU get
SIGKILL; host B goes live and clones itself back onto host A; the client writes on until
SETTLE_S after that, then reads every record back.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import yaml
from rich.progress import Progress

from ftorch.config import load
from ftorch.errors import FtorchError
from ftorch.host import lab
from ftorch.host.layout import domain_names, paths
from ftorch.ops import pair
from ftorch.stats import summary

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5
# frames the gate released after the client started: soon after connecting, in a steady
# stream, and once the guest's disk has taken a few hundred writes
KILL_POINTS = {"early": 10, "steady": 100, "late": 400}
SETTLE_S = 3.0
# BENCH_TRACE=DIR keeps each run's evidence there: the client's packets (tcpdump in its
# namespace) and both agents' logs, to read a long stall against what the agents did
TRACE = os.environ.get("BENCH_TRACE")
PARTS = ("first_reply_s", "longest_stall_s", "protected_again_s", "detection_s", "replay_s",
         "golive_s", "save_s", "start_s")


def with_reprotect(tmp: Path, base: Path, reprotect: bool) -> Path:
    data = yaml.safe_load(base.read_text())
    data["failover"].update({"reprotect": reprotect, "reprotect_interval_s": 1})
    p = tmp / f"protect-{reprotect}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def released(cfg) -> int:
    """Frames the primary on host A let out through its gate."""
    p = pair.try_status(cfg, "a").primary
    return p.gate.released if p and p.gate else 0


def longest_stall(ack_times: list[float], killed_at: float) -> float | None:
    """The longest wait between two replies the client had from the last reply before the
    kill on (the kill's own stall included)."""
    before = [t for t in ack_times if t <= killed_at]
    window = ([before[-1]] if before else [killed_at]) + [t for t in ack_times if t > killed_at]
    return max((b - a for a, b in zip(window, window[1:], strict=False)), default=None)


def _trace_start(name: str) -> subprocess.Popen | None:
    if not TRACE:
        return None
    Path(TRACE).mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(["ip", "netns", "exec", lab.CLIENT_NS, "tcpdump", "-i", "eth0", "-s",
                             "160", "-w", f"{TRACE}/{name}.pcap", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _trace_stop(dump: subprocess.Popen | None, cfg, name: str, out: Path) -> None:
    if dump is None:
        return
    dump.send_signal(signal.SIGINT)
    dump.wait(timeout=30)
    for key in ("a", "b"):
        st = pair.try_status(cfg, key)
        Path(f"{TRACE}/{name}-{key}-status.json").write_text(
            json.dumps(asdict(st) if st else None, indent=1, default=str))
        if paths(cfg, key).agent_log.exists():
            shutil.copy(paths(cfg, key).agent_log, f"{TRACE}/{name}-{key}.log")
    if out.exists():
        shutil.copy(out, f"{TRACE}/{name}-client.json")


class BootFailed(Exception):
    """The fresh pair did not settle into protected and caught up (e.g. a false failover
    while both guests boot on the lab's two cores): the run is redone, and counted."""


def caught_up(cfg) -> None:
    """Wait until the fresh pair is caught up; BootFailed if it never is."""
    try:
        pair.wait_caught_up(cfg, timeout=300, max_lag_s=0.5)
    except FtorchError as e:
        roles = {k: pair.try_status(cfg, k).role for k in ("a", "b")}
        raise BootFailed(f"{e} (roles {roles})") from e


def redo_boot_failures(fn: Callable[[], dict], failures: list[str], tries: int = 3) -> dict:
    """fn(), again after a BootFailed (each kept in failures), at most `tries` times."""
    for _ in range(tries - 1):
        try:
            return fn()
        except BootFailed as e:
            failures.append(str(e))
    return fn()


def one_run(cfg_path: Path, tmp: Path, point: str, i: int) -> dict:
    cfg = load(cfg_path)
    lab.up()  # idempotent; first: the pair's hosts are reached over its sshd
    pair.down(cfg, timeout=10, force=True)   # leftovers of an earlier run
    pair.up(cfg, wait=True, timeout=300)
    dump = None
    out = tmp / f"failover-{point}{i}.json"
    try:
        dump = _trace_start(f"{point}{i}")
        caught_up(cfg)
        before = released(cfg)
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.CLIENT_NS, sys.executable, str(ROOT / "tools/kvclient.py"),
             "--duration", "600", "--verify", "--out", str(out)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pair.wait_for(lambda: released(cfg) > before + KILL_POINTS[point], 90,
                      "the client to write")
        killed_at = time.time()
        lab.kill_host(paths(cfg, "a").pid, domain_names(cfg, "a"))
        pair.wait_for(lambda: pair.try_status(cfg, "b").role in ("live-alone", "fenced"),
                      180, "host B to go live")
        fo = asdict(pair.try_status(cfg, "b").failover)
        pair.wait_for(lambda: pair.protected(pair.try_status(cfg, "b"), pair.try_status(cfg, "a")),
                      400, "host A to be the backup again")
        protected_at = time.time()
        time.sleep(SETTLE_S)   # the client writes on through the protected pair (a duration)
        proc.send_signal(signal.SIGUSR1)   # stop writing, read back, report
        proc.wait(timeout=300)
        res = json.loads(out.read_text())
    finally:
        _trace_stop(dump, cfg, f"{point}{i}", out)
        pair.down(cfg, timeout=10, force=True)
    # the new primary's first reply: one before the claim was on its way before the kill
    after = [t for t in res["ack_times"] if t > fo["detected_at"]]
    return {
        "kill_point": point, "live": fo["state"] == "live-alone", "error": fo.get("error"),
        "client_errors": res["errors"], "mismatches": len(res["mismatches"]),
        "records": len(res["acked"]),
        "first_reply_s": (min(after) - killed_at) if after else None,
        "longest_stall_s": longest_stall(res["ack_times"], killed_at),
        "protected_again_s": protected_at - killed_at,
        "detection_s": fo["detected_at"] - killed_at,
        "replay_s": fo.get("replay_s"), "golive_s": (fo.get("save_s") or 0) + (fo.get("start_s") or 0),
        "save_s": fo.get("save_s"), "start_s": fo.get("start_s"),
    }


def run(cfg_path: Path, tmp: Path, progress: Progress) -> dict:
    cfg = with_reprotect(tmp, cfg_path, True)
    task = progress.add_task("failover: SIGKILL runs", total=RUNS * len(KILL_POINTS))
    runs, boot_failures = [], []
    for i in range(RUNS):
        for point in KILL_POINTS:   # interleaved: drift hits every point alike
            runs.append(redo_boot_failures(lambda p=point, n=i: one_run(cfg, tmp, p, n),
                                           boot_failures))
            progress.advance(task)
    ok = [r for r in runs if r["live"] and r["first_reply_s"] is not None]
    return {"runs": runs, "went_live": len(ok), "boot_failures": boot_failures,
            "intact": sum(1 for r in ok if not r["client_errors"] and not r["mismatches"]),
            "timeout_s": load(cfg).channel.timeout_s,
            "all": {k: summary([r[k] for r in ok]) for k in PARTS},
            "by_point": {p: {k: summary([r[k] for r in ok if r["kill_point"] == p])
                             for k in ("first_reply_s", "longest_stall_s")} for p in KILL_POINTS}}


def markdown(res: dict, timeout_s: float) -> str:
    def row(label: str, s: dict) -> str:
        return (f"| {label} | {s['p50']:.2f} s | {s['p99']:.2f} s | {s['max']:.2f} s | "
                f"{s['samples']} |" if s["samples"] else f"| {label} | - | - | - | 0 |")
    legacy = "all" not in res   # the older format: one kill point, no re-protection
    if legacy:
        res = {**res, "all": {k: res.get(k) or {"samples": 0} for k in PARTS},
               "by_point": {}, "timeout_s": 5.0}   # the default of that time
    a = res["all"]
    runs = (f"{len(res['runs'])} runs at one kill point, re-protection off (older bench)"
            if legacy else f"{len(res['runs'])} runs: {RUNS} at each of {len(KILL_POINTS)} "
            "kill points")
    lines = [
        f"## Failover ({runs}, SIGKILL of the primary's agent and QEMU"
        + (f", run {res['date']}" if res.get("date") else "") + ")", "",
        f"Went live: {res['went_live']} of {len(res['runs'])}; client connection and every "
        f"acknowledged record intact: {res['intact']}. Detection is the channel timeout "
        f"({res.get('timeout_s', timeout_s):g} s)."
        + (f" Fresh pairs that did not settle before their run (redone): "
           f"{len(res['boot_failures'])}." if res.get("boot_failures") else "")
        + ("" if legacy else " The client writes on one connection until the pair is protected "
           "again (automatic re-protection: a clone back onto host A)."), "",
        "| measure | p50 | p99 | max | samples |", "|---|---|---|---|---|",
        row("SIGKILL to the new primary's first reply, same connection", a["first_reply_s"]),
        row("client's longest stall, kill to protected again", a["longest_stall_s"]),
        row("SIGKILL to protected again", a["protected_again_s"]),
        row("detection (SIGKILL to the backup's claim)", a["detection_s"]),
        row("replay of the remaining log", a["replay_s"]),
        row("go-live (stop, savevm, repair, recorder running)", a["golive_s"]),
        row("  of which stop + savevm + repair + quit", a["save_s"]),
        row("  of which recorder start from the snapshot", a["start_s"])]
    if res["by_point"]:
        lines += ["", "| kill point (frames released after the client started) | first reply "
                  "p50 | max | longest stall p50 | max |", "|---|---|---|---|---|"]
    for p, frames in KILL_POINTS.items():
        if p not in res["by_point"]:
            continue
        f, s = res["by_point"][p]["first_reply_s"], res["by_point"][p]["longest_stall_s"]
        if f["samples"]:
            lines.append(f"| {p} ({frames}) | {f['p50']:.2f} s | {f['max']:.2f} s | "
                         f"{s['p50']:.2f} s | {s['max']:.2f} s |")
    lines += ["", "Beyond detection and go-live, the first reply waits for the client's TCP "
              "retransmission back-off."]
    if res.get("first_reply_note"):
        lines += ["", f"Note: {res['first_reply_note']}."]
    return "\n".join(lines) + "\n"
