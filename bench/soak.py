#!/usr/bin/env python3
"""`make soak`: a protected pair left idle, then under a writing client, watched for growth.

Every SAMPLE_S: each agent's resident memory (the pid its status gives) and the space each
host's pair folder takes on disk (allocated blocks, so punched log holes count as given back).
Writes bench/results/soak.json and soak.md with the growth over the run and its bound.

    .venv/bin/python bench/soak.py [--idle-min 20] [--load-min 10]

The config keeps 4 MiB of log (limits.log_keep_mib) so that punching shows within the run;
the default of 64 MiB takes an idle guest about 40 minutes to reach.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.progress import Progress

from ftorch.config import load
from ftorch.host import lab
from ftorch.host.layout import paths
from ftorch.ops import pair

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench/results"
SAMPLE_S = 10.0
KEEP_MIB = 4
# growth allowed from the first sample after catch-up to the end: the kept log window and one
# punch step on each side, the guest's own writes to its disk, and allocator noise in the agent
DISK_BOUND_MIB = 2 * (KEEP_MIB + 1) + 16
RSS_BOUND_MIB = 16


def rss_mib(pid: int | None) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        pass
    return None


def used_mib(folder: Path) -> float:
    return sum(os.stat(p).st_blocks * 512 for p in folder.iterdir() if p.is_file()) / (1 << 20)


def sample(cfg, t0: float) -> dict:
    row: dict = {"t": round(time.monotonic() - t0, 1)}
    for key in ("a", "b"):
        st = pair.try_status(cfg, key)
        row[f"rss_{key}"] = rss_mib(st.pid)
        row[f"disk_{key}"] = round(used_mib(paths(cfg, key).root), 2)
        row[f"role_{key}"] = st.role
    return row


def growth(rows: list[dict], field: str) -> float:
    vals = [r[field] for r in rows if r[field] is not None]
    return round(max(vals) - vals[0], 2) if vals else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--idle-min", type=float, default=20)
    ap.add_argument("--load-min", type=float, default=10)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, Progress() as progress:
        data = yaml.safe_load((ROOT / "examples/lab.yaml").read_text())
        data.update(pair="soak", limits={"log_keep_mib": KEEP_MIB})
        data["guest"]["image"] = str((ROOT / "vm-images/build/current").resolve())
        cfg_path = Path(d) / "soak.yaml"
        cfg_path.write_text(yaml.safe_dump(data))
        cfg = load(cfg_path)
        lab.up()
        pair.down(cfg, timeout=10, force=True)
        pair.up(cfg, wait=True, timeout=300)
        rows: list[dict] = []
        try:
            pair.wait_caught_up(cfg, timeout=300)
            total = (a.idle_min + a.load_min) * 60
            task = progress.add_task("soak", total=total)
            t0 = time.monotonic()
            client = None
            while (elapsed := time.monotonic() - t0) < total:
                if client is None and elapsed >= a.idle_min * 60:
                    client = subprocess.Popen(
                        ["ip", "netns", "exec", lab.CLIENT_NS, sys.executable,
                         str(ROOT / "tools/kvclient.py"), "--duration", str(a.load_min * 60),
                         "--rate", "50", "--out", str(Path(d) / "client.json")],
                        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                rows.append(sample(cfg, t0))
                progress.update(task, completed=elapsed)
                time.sleep(SAMPLE_S)
            rows.append(sample(cfg, t0))
            if client is not None:
                client.wait(timeout=600)
            res_client = json.loads((Path(d) / "client.json").read_text()) if client else {}
        finally:
            pair.down(cfg, timeout=60, force=True)
            lab.down()
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "idle_min": a.idle_min, "load_min": a.load_min, "keep_mib": KEEP_MIB,
           "samples": rows, "client_requests": len(res_client.get("acked", [])),
           "client_errors": res_client.get("errors", []),
           **{f"{f}_growth_mib": growth(rows, f)
              for f in ("rss_a", "rss_b", "disk_a", "disk_b")},
           "disk_bound_mib": DISK_BOUND_MIB, "rss_bound_mib": RSS_BOUND_MIB}
    res["flat"] = (max(res["disk_a_growth_mib"], res["disk_b_growth_mib"]) <= DISK_BOUND_MIB
                   and max(res["rss_a_growth_mib"], res["rss_b_growth_mib"]) <= RSS_BOUND_MIB)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "soak.json").write_text(json.dumps(res, indent=1) + "\n")
    (OUT / "soak.md").write_text(markdown(res))
    print(markdown(res))
    return 0 if res["flat"] else 1


def markdown(res: dict) -> str:
    first, last = res["samples"][0], res["samples"][-1]
    return "\n".join([
        f"## Soak: {res['idle_min']:g} min idle, then {res['load_min']:g} min of a client writing "
        f"at 50 requests/s (run {res['date']})", "",
        f"Sampled every {SAMPLE_S:g} s ({len(res['samples'])} samples); log kept: "
        f"{res['keep_mib']} MiB per host. Client: {res['client_requests']} records acknowledged, "
        f"{len(res['client_errors'])} errors.", "",
        "| | first sample | last sample | growth (max - first) | bound |", "|---|---|---|---|---|",
        *[f"| {label} | {first[f]:.1f} MiB | {last[f]:.1f} MiB | {res[f + '_growth_mib']:.1f} MiB "
          f"| {bound} MiB |" for label, f, bound in (
              ("agent A resident memory", "rss_a", res["rss_bound_mib"]),
              ("agent B resident memory", "rss_b", res["rss_bound_mib"]),
              ("host A pair folder on disk", "disk_a", res["disk_bound_mib"]),
              ("host B pair folder on disk", "disk_b", res["disk_bound_mib"]))],
        "", f"Within bounds: {'yes' if res['flat'] else 'NO'}."]) + "\n"


if __name__ == "__main__":
    sys.exit(main())
