"""A/B of two checkouts on this machine, interleaved so drift in the machine's speed hits both:
the clone pause (bench/protect.py's clones) and the failover (bench/failover.py), with each
tree's own bench code and agents.

    .venv/bin/python bench/ab.py OTHER_TREE [--rounds 2] [--clones 5] [--failovers 3]

OTHER_TREE: e.g. `git worktree add /tmp/old <commit>` plus symlinks to this tree's .venv and
vm-images/build. Prints one JSON line per tree and round; writes the p50s side by side to
bench/results/ab.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE = """
import json, sys, tempfile
from pathlib import Path
root = Path(sys.argv[1])
sys.path[:0] = [str(root), str(root / "bench")]
import failover, protect, run
from rich.progress import Progress
protect.CLONES, failover.RUNS = int(sys.argv[2]), int(sys.argv[3])
with tempfile.TemporaryDirectory(dir=root) as d, Progress(transient=True) as pr:
    c = protect.clones(protect._config(Path(d), root / "examples/lab.yaml", False), Path(d), pr)
    f = failover.run(run.config(Path(d), "bench"), Path(d), pr)
print(json.dumps({"pause_p50_s": c["pause_s"]["p50"], "steps_p50_s": c["pause_steps_p50_s"],
                  "first_reply_p50_s": f["first_reply_s"]["p50"],
                  "golive_p50_s": f["golive_s"]["p50"], "went_live": f["went_live"]}))
"""


def one(tree: Path, clones: int, failovers: int) -> dict:
    p = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", ONE, str(tree), str(clones),
                        str(failovers)], cwd=tree, capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clones", type=int, default=5)
    ap.add_argument("--failovers", type=int, default=3)
    a = ap.parse_args()
    rows: dict[str, list[dict]] = {"this": [], "other": []}
    for _ in range(a.rounds):
        for name, tree in (("this", ROOT), ("other", a.other.resolve())):
            rows[name].append(one(tree, a.clones, a.failovers))
            print(json.dumps({"tree": name, **rows[name][-1]}), flush=True)
    commit = subprocess.run(["git", "-C", str(a.other), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    lines = [f"## A/B against {commit or a.other} ({a.rounds} interleaved rounds, "
             f"{a.clones} clones and {a.failovers} failovers each, run "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})", "",
             "| p50 per round | this tree | other tree |", "|---|---|---|"]
    for key in ("pause_p50_s", "first_reply_p50_s", "golive_p50_s"):
        this, other = ([f"{r[key]:.2f}" if r[key] is not None else "-" for r in rows[n]]
                       for n in ("this", "other"))
        lines.append(f"| {key} | {', '.join(this)} | {', '.join(other)} |")
    text = "\n".join(lines) + "\n"
    (ROOT / "bench/results/ab.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
