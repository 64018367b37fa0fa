"""Re-protection figures: the primary's pause while `ftorch protect` clones it (over CLONES
clones of one running 128 MiB guest, a client writing meanwhile), how many clones replayed on the
first try, and the time from a failover until the pair is protected again (automatic).

Clones: the guest runs unprotected on host A; each round protects it onto host B, then kills
host B (the primary goes on alone after the channel timeout) and protects again.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from failover import released, with_reprotect
from rich.progress import Progress

from ftorch.config import load
from ftorch.errors import FtorchError
from ftorch.host import lab
from ftorch.host.layout import domain_names, paths
from ftorch.ops import pair
from ftorch.stats import summary

ROOT = Path(__file__).resolve().parents[1]
CLONES = 10
REPROTECTS = 3


def _client(tmp: Path, name: str, duration: float) -> subprocess.Popen:
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.CLIENT_NS, sys.executable, str(ROOT / "tools/kvclient.py"),
         "--duration", str(duration), "--out", str(tmp / f"{name}.json")],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _settled_alone(cfg, key: str) -> bool:
    return pair.try_status(cfg, key).role == "live-alone"


def clones(cfg_path: Path, tmp: Path, progress: Progress) -> dict:
    cfg = load(cfg_path)
    task = progress.add_task("protect: clones", total=CLONES)
    lab.up()  # idempotent; first: the pair's hosts are reached over its sshd
    pair.down(cfg, timeout=10, force=True)   # leftovers of an earlier run
    pair.up(cfg, wait=True, timeout=300, mode="unprotected")
    client = _client(tmp, "clones", 600)
    pauses, first_try, tries, errors, vias = [], 0, 0, [], []
    steps: dict[str, list[float]] = {}
    try:
        pair.wait_for(lambda: released(cfg) > 50,
                      300, "the client to be writing (the guest has booted)")
        for _ in range(CLONES):
            tries += 1
            try:
                res = pair.agent_call(cfg, "a", "protect", timeout=900)
                pauses.append(res["pause_s"])
                vias.append(res.get("clone_via", ""))
                for k, v in res["pause_steps"].items():
                    steps.setdefault(k, []).append(v)
                first_try += 1
            except FtorchError as e:
                progress.console.print(f"clone failed: {e}")
                errors.append(str(e))
                last = pair.try_status(cfg, "a").reprotect
                failed_pause = last.pause_s if last else None
                if failed_pause is not None:
                    pauses.append(failed_pause)   # the pause happened all the same
                continue
            finally:
                progress.advance(task)
            lab.kill_host(paths(cfg, "b").pid, domain_names(cfg, "b"))
            pair.wait_for(lambda: _settled_alone(cfg, "a"), 120, "host A to go on alone")
    finally:
        client.kill()
        pair.down(cfg, timeout=10, force=True)
    return {"pause_s": summary(pauses), "first_try": first_try, "tries": tries, "errors": errors,
            "via_standby": vias.count("standby"),
            "pause_steps_p50_s": {k: summary(v)["p50"] for k, v in steps.items()}}


def reprotection(cfg_path: Path, tmp: Path, progress: Progress) -> dict:
    cfg = load(cfg_path)
    task = progress.add_task("protect: failover to protected again", total=REPROTECTS)
    gaps = []
    lab.up()  # idempotent; first: the pair's hosts are reached over its sshd
    pair.down(cfg, timeout=10, force=True)   # leftovers of an earlier run
    pair.up(cfg, wait=True, timeout=300)
    live = "a"
    try:
        pair.wait_caught_up(cfg, timeout=300)
        for _ in range(REPROTECTS):
            peer = cfg.peer(live)
            killed = time.time()
            lab.kill_host(paths(cfg, live).pid, domain_names(cfg, live))

            def protected(p=peer, lv=live) -> bool:
                return pair.protected(pair.try_status(cfg, p), pair.try_status(cfg, lv))
            pair.wait_for(protected, 400, f"host {peer} to be protected again")
            gaps.append(time.time() - killed)
            live = peer
            progress.advance(task)
            pair.wait_caught_up(cfg, timeout=300)
    finally:
        pair.down(cfg, timeout=10, force=True)
    return {"failover_to_protected_s": summary(gaps)}


def run(base_cfg: Path, tmp: Path, progress: Progress) -> dict:
    res = clones(with_reprotect(tmp, base_cfg, False), tmp, progress)
    if res["first_try"]:   # automatic re-protection needs clones that replay
        res.update(reprotection(with_reprotect(tmp, base_cfg, True), tmp, progress))
    else:
        res["failover_to_protected_s"] = summary([])
    return res


def _ms(s: dict, key: str) -> str:
    return f"{s[key] * 1e3:.0f} ms" if s["samples"] else "-"


def _s(s: dict, key: str) -> str:
    return f"{s[key]:.1f} s" if s["samples"] else "-"


def markdown(res: dict) -> str:
    p, g = res["pause_s"], res["failover_to_protected_s"]
    first_error = f" First error: {res['errors'][0]}" if res.get("errors") else ""
    when = f", run {res['date']}" if res.get("date") else ""
    return "\n".join([
        f"## Re-protection ({res['tries']} clones of a running 128 MiB guest, a client "
        f"writing{when})", "",
        "| measure | p50 | max | samples |", "|---|---|---|---|",
        f"| primary's pause during `ftorch protect` | {_ms(p, 'p50')} | "
        f"{_ms(p, 'max')} | {p['samples']} |",
        f"| SIGKILL of the primary until protected again (automatic) | {_s(g, 'p50')} | "
        f"{_s(g, 'max')} | {g['samples']} |", "",
        f"Clones that replayed past their snapshot on the first try: {res['first_try']} of "
        f"{res['tries']}.{first_error}" + (
            f" Clones that moved the guest into the recorder waiting beside it: "
            f"{res['via_standby']} (the others restarted it from the snapshot)."
            if "via_standby" in res else ""), "",
        "The pause by step (p50): " + (", ".join(
            f"{k} {v * 1e3:.0f} ms" for k, v in res.get("pause_steps_p50_s", {}).items()) or "-")
        + " (clone.py, in order: savevm_base: the first snapshot, without the RAM; kill: "
        "SIGKILL and an image check; start: that snapshot loaded into the waiting recorder; "
        "drop: older snapshots; savevm_clone: the clone's snapshot, without the RAM, and a copy "
        "of the RAM file; copy: the image's local copy)."]) + "\n"
