#!/usr/bin/env python3
"""`make demo`: a protected guest on two namespace hosts, a client writing to it, the backup
following live; then a clean stop and proof that the backup replayed the same execution."""
from __future__ import annotations

import filecmp
import json
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ftorch import lab, pair
from ftorch.config import load
from ftorch.layout import paths
from ftorch.replaylog import scan_file

ROOT = Path(__file__).resolve().parents[1]

console = Console()
WRITE_S = 30


def table(st: dict, frames_in: int) -> Table:
    t = Table(title=f"pair {st['pair']}: {frames_in} network frames from the client reached the "
                    "guest (each one in the log)")
    for c in ("host", "role", "guest", "instructions", "lag (instr)", "lag (s)", "log bytes acked"):
        t.add_column(c)
    for key, s in st["hosts"].items():
        lag = s.get("lag_seconds")
        t.add_row(key, s.get("role", "?"), str(s.get("guest", s.get("error", ""))),
                  f"{s.get('icount', 0):,}", f"{s.get('lag_instructions', 0):,}",
                  f"{lag:.3f}" if isinstance(lag, float) else "-",
                  f"{s.get('channel', {}).get('acked_offset', 0):,}")
    return t


def main() -> int:
    cfg = load(sys.argv[1] if len(sys.argv) > 1 else ROOT / "examples/lab.yaml")
    console.rule("ftorch demo")
    console.print("starting the lab (hosts A and B, a client, a LAN bridge) and the pair…")
    pair.down(cfg, timeout=10, force=True)
    pair.up(cfg, wait=True, timeout=300)
    console.print("primary recording on host A, backup replaying on host B. The guest boots "
                  "(TCG, ~20 s); the backup replays the boot backlog and catches up…")
    with console.status("waiting for the backup to catch up"):
        pair.wait_caught_up(cfg, timeout=300)
    out = Path("/tmp/ftorch-demo-client.json")
    client = subprocess.Popen(["ip", "netns", "exec", lab.CLIENT_NS, sys.executable, "-m",
                               "ftorch.kvclient", "--duration", str(WRITE_S), "--out", str(out),
                               "--verify"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    with Live(table(pair.status(cfg), 0), console=console, refresh_per_second=2) as live:
        while client.poll() is None:
            st = pair.status(cfg)
            live.update(table(st, st["hosts"]["a"].get("net", {}).get("frames_in", 0)))
            time.sleep(0.5)
    res = json.loads(out.read_text())
    console.print(f"client: {len(res['acked'])} records acknowledged, {len(res['errors'])} errors, "
                  f"{len(res['mismatches'])} read back wrong")
    console.print("stopping the primary cleanly; the backup replays to the end of its log…")
    summary = pair.down(cfg, timeout=300, force=False)
    pa, pb = paths(cfg, "a"), paths(cfg, "b")
    total = scan_file(str(pa.rr_log)).icount
    same_serial = filecmp.cmp(pa.serial, pb.serial, shallow=False)
    same_disk = subprocess.run(["qemu-img", "compare", "-q", str(pa.disk), str(pb.disk)]).returncode == 0
    console.print(f"primary executed {total:,} instructions; backup replayed "
                  f"{summary['backup']['icount']:,}")
    console.print(f"serial consoles identical: {same_serial}; data disks identical: {same_disk}")
    lab.down()
    ok = same_serial and same_disk and summary["backup"]["icount"] == total and not res["errors"]
    console.rule("[green]demo passed" if ok else "[red]demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
