#!/usr/bin/env python3
"""`make faults`: a seeded random campaign of the fault suite's faults over one long run.

One protected pair; COUNT faults drawn from tests/e2e/faultlib.py's FAULTS with the seed, each
checked as in the suite (no acknowledged record lost, never two live copies), the pair
re-protected after each, a clean stop at the end whose disks must be identical. The same seed
draws the same faults in the same order (and the same random kill point).

    .venv/bin/python bench/faults.py [--seed 15] [--count 30]

Writes bench/results/faults.json and faults.md; exit 1 at the first fault whose checks fail
(the pair is then torn down, and the row says what failed).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from rich.progress import Progress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.faultlib import FAULTS, Run, identical_after_a_clean_stop, inject  # noqa: E402
from tests.e2e.lab_helpers import running_pair, write_config  # noqa: E402

OUT = ROOT / "bench/results"


def draw(seed: int, count: int) -> list[str]:
    """The campaign's faults: every fault once before any repeats (in a random order), then
    random draws, so a short campaign still covers the list."""
    rng = random.Random(seed)
    names = sorted(FAULTS)
    first = rng.sample(names, len(names))
    return (first + [rng.choice(names) for _ in range(max(0, count - len(names)))])[:count]


def campaign(seed: int, count: int, tmp: Path, only: list[str] | None = None) -> dict:
    random.seed(seed)   # the random kill point draws from the module's generator
    names = only or draw(seed, count)
    cfg_path = write_config(tmp, "fc", failover={"enabled": True, "reprotect": True,
                                                 "reprotect_interval_s": 2})
    t0 = time.time()
    failed = None
    with running_pair(cfg_path) as cfg, Progress() as bar:
        run = Run(cfg_path, cfg, tmp)
        task = bar.add_task("faults", total=len(names) + 1)
        steps = [(name, lambda n=name: inject(run, n)) for name in names]
        for name, step in [*steps, ("clean-stop", lambda: identical_after_a_clean_stop(run))]:
            bar.update(task, description=name)
            try:
                step()
            except Exception as e:  # noqa: BLE001 - recorded, then the campaign stops
                failed = {"fault": name, "error": f"{type(e).__name__}: {e}",
                          "trace": traceback.format_exc()[-2000:]}
                break
            bar.advance(task)
    return {"seed": seed, "count": count, "faults": names, "rows": run.rows, "failed": failed,
            "minutes": round((time.time() - t0) / 60, 1),
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                     capture_output=True, text=True).stdout.strip()}


def markdown(res: dict) -> str:
    rows = res["rows"]
    done = Counter(r["fault"] for r in rows)
    lines = [f"# Fault campaign: seed {res['seed']}, {res['count']} faults",
             "",
             f"`.venv/bin/python bench/faults.py --seed {res['seed']} --count {res['count']}` "
             f"(commit {res['commit']}, {res['minutes']} min, 2 cores). "
             + ("**Every fault passed its checks**; the clean stop left identical disks."
                if res["failed"] is None else f"**Failed at {res['failed']['fault']}**: "
                f"{res['failed']['error'][:300]}"),
             "",
             f"Records acknowledged and read back: {sum(r['records'] for r in rows)}; "
             f"faults of each kind: {', '.join(f'{k} {v}' for k, v in sorted(done.items()))}.",
             "",
             "Stall: the client's longest wait for an acknowledgement across the fault.",
             "",
             "| # | fault | host | outcome | stall (s) | records |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {i} | {r['fault']} | {r['host']} | {r['outcome']} | {r['stall_s']:.2f} "
              f"| {r['records']} |" for i, r in enumerate(rows, 1)]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=15, help="draws the faults and their order")
    ap.add_argument("--count", type=int, default=30, help="faults in the campaign")
    ap.add_argument("--faults", help="these faults in this order instead (comma-separated; "
                                     "nothing written to bench/results)")
    args = ap.parse_args()
    only = args.faults.split(",") if args.faults else None
    unknown = [f for f in only or [] if f not in FAULTS]
    if unknown:
        ap.error(f"unknown faults {', '.join(unknown)}; known: {', '.join(sorted(FAULTS))}")
    with tempfile.TemporaryDirectory(prefix="ftorch-faults-") as tmp:
        res = campaign(args.seed, args.count, Path(tmp), only)
    if only:
        print(markdown(res))
        return 1 if res["failed"] else 0
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "faults.json").write_text(json.dumps(res, indent=1) + "\n")
    (OUT / "faults.md").write_text(markdown(res))
    print(markdown(res))
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
