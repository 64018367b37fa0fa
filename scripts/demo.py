#!/usr/bin/env python3
"""`make demo`: a protected guest on two namespace hosts, a client writing to it over one TCP
connection, the backup following live; then host A dies (SIGKILL of its agent and QEMU), host B
goes live with the guest and the connection, and protects it again onto host A; a clean stop
shows the new backup replayed the same execution, and the client finds every record."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from ftorch.config import load
from ftorch.host import lab
from ftorch.host.layout import domain_name, paths
from ftorch.ops import pair
from ftorch.ops.cli import status_table
from ftorch.status import SideStatus

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import promplot  # noqa: E402  (tools/ is not a package)

PNG = ROOT / "bench/results/demo.png"

console = Console()
WRITE_S = 20


def watch(cfg, title: str, done, timeout: float) -> float:
    """Show the pair's status live until done(status) holds; return the seconds it took."""
    t0 = time.monotonic()
    with Live(console=console, refresh_per_second=2) as live:
        while True:
            st = pair.status(cfg)
            frames = sum(s.primary.net.frames_in for s in st.hosts.values() if s.primary)
            live.update(status_table(st, f"pair {st.pair}: {frames} network frames from the "
                                         "client reached the guest (each one in the log)"))
            if done(st):
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"demo: {title}: not within {timeout:.0f} s")
            time.sleep(0.5)


def main() -> int:
    cfg = load(sys.argv[1] if len(sys.argv) > 1 else ROOT / "examples/lab.yaml")
    console.rule("ftorch demo")
    console.print("starting the lab (hosts A and B, a client, a LAN bridge) and the pair…")
    lab.up()  # idempotent; first: the pair's hosts are reached over its sshd
    pair.down(cfg, timeout=10, force=True)   # leftovers of an earlier run
    pair.up(cfg, wait=True, timeout=300)
    console.print("primary recording on host A, backup replaying on host B. The guest boots "
                  "(TCG, ~20 s); the backup replays the boot backlog and catches up…")
    with console.status("waiting for the backup to catch up"):
        pair.wait_caught_up(cfg, timeout=300)
    t_start, marks = time.time(), {}
    out = Path("/tmp/ftorch-demo-client.json")
    client = subprocess.Popen(["ip", "netns", "exec", lab.CLIENT_NS, sys.executable,
                               str(ROOT / "tools/kvclient.py"), "--duration", "900", "--out", str(out),
                               "--verify"], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    console.print(f"a client writes records over one TCP connection; {WRITE_S} s of replication:")
    start = time.monotonic()
    watch(cfg, "replication", lambda st: time.monotonic() - start > WRITE_S, WRITE_S + 60)

    console.rule("host A dies")
    lab.kill_host(paths(cfg, "a").pid, domain_name(cfg, "a"))
    marks["host A killed"] = time.time()
    console.print("SIGKILL to host A's agent and QEMU. Host B notices the silence "
                  f"({cfg.channel.timeout_s:g} s), wins the pair, replays what it received and "
                  "goes live with the guest's memory, disk and connections:")
    def frames_out(side: SideStatus) -> int:
        return side.primary.net.frames_out if side.primary else 0

    base = frames_out(pair.try_status(cfg, "b"))
    took = watch(cfg, "host B to go live and answer",
                 lambda st: st.hosts["b"].role == "live-alone"
                 and frames_out(st.hosts["b"]) > base + 10, 180)
    console.print(f"host B live and answering the same client connection {took:.1f} s after "
                  "the kill")
    marks["B live"] = time.time()
    console.print("host A's place is free again: host B clones the running guest onto it "
                  "(failover.reprotect)…")
    took = watch(cfg, "protection again",
                 lambda st: pair.protected(st.hosts["b"], st.hosts["a"]), 300)
    console.print(f"protected again by host A {took:.1f} s after going live")
    marks["protected again"] = time.time()
    pair.wait_caught_up(cfg, timeout=300)

    client.send_signal(signal.SIGUSR1)   # stop writing, read every record back
    client.communicate(timeout=600)
    res = json.loads(out.read_text())
    console.print(f"client: {len(res['acked'])} records acknowledged over one connection, "
                  f"{len(res['errors'])} errors, {len(res['mismatches'])} read back wrong")
    console.print("stopping the primary (host B) cleanly; the backup replays to the end of its log…")
    summary = pair.down(cfg, timeout=300, force=False)
    pa, pb = paths(cfg, "a"), paths(cfg, "b")
    same_disk = subprocess.run(["qemu-img", "compare", "-q", str(pb.disk), str(pa.disk)]).returncode == 0
    backup_at, primary_at = summary["backup"]["icount"], summary["primary"]["icount"]
    console.print(f"primary executed up to instruction {primary_at:,}; the backup replayed to "
                  f"{backup_at:,}; data disks identical: {same_disk}")
    promplot.plot(cfg.pair, t_start, time.time(), PNG, "ftorch demo: lag and output-gate delay "
                  "(lab Prometheus)", marks)
    console.print(f"lag and gate delay over the demo, from the lab's Prometheus: {PNG}")
    lab.down()
    ok = (same_disk and backup_at == primary_at and summary["backup"]["finished"]
          and not res["errors"] and not res["mismatches"])
    console.rule("[green]demo passed" if ok else "[red]demo FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
