"""Lag-bound levers against a writing client, watched for a hung backup (docs/qemu-notes.md).

    python bench/experiments/lagbound.py SECONDS hold       # the product's bound (inbound hold)
    python bench/experiments/lagbound.py SECONDS stopcont   # QMP stop/cont duty cycle instead
    python bench/experiments/lagbound.py SECONDS freeze     # SIGSTOP/SIGCONT duty cycle instead

A hang: the backup's instruction count unchanged over 4 status reads while the primary runs.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import libvirt
import libvirt_qemu

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests/e2e")]
import lab_helpers as h  # noqa: E402

from ftorch.host.layout import domain_names  # noqa: E402
from ftorch.host.virt import Guest  # noqa: E402

PERIOD_S = 0.1
SHARES = (0.1, 0.2, 0.3, 0.5, 0.8, 1.0)


def duty_cycle(domain: str, stop: threading.Event, seed: int, lever: str) -> None:
    """Stop and continue the recorder every PERIOD_S, running a random share of each."""
    dom = libvirt.open("qemu:///system").lookupByName(domain)
    guest = Guest(dom)
    rnd = random.Random(seed)

    def qmp(cmd: str) -> None:
        libvirt_qemu.qemuMonitorCommand(dom, json.dumps({"execute": cmd}), 0)
    pause, resume = ((guest.freeze, guest.thaw) if lever == "freeze"
                     else (lambda: qmp("stop"), lambda: qmp("cont")))
    share, changed, cycles = 1.0, 0.0, 0
    while not stop.is_set():
        if time.monotonic() - changed > 0.25:
            share, changed = rnd.choice(SHARES), time.monotonic()
        if share < 1.0:
            pause()
            time.sleep((1 - share) * PERIOD_S)
            resume()
            cycles += 1
        time.sleep(share * PERIOD_S)
    resume()
    print(f"{lever}: {cycles} pauses", flush=True)


def running(domains: list[str]) -> str:
    for name in domains:
        out = subprocess.run(["virsh", "domstate", name], capture_output=True, text=True).stdout
        if out.strip() == "running":
            return name
    raise SystemExit("no running recorder")


def main(seconds: float, lever: str, seed: int = 1) -> None:
    tmp = Path(tempfile.mkdtemp())
    hold = lever == "hold"
    cfg_path = h.write_config(tmp, "ft", failover={"enabled": True, "reprotect": False},
                              lag={"hold_inbound": hold})
    with h.running_pair(cfg_path) as cfg:
        client = h.Client(tmp / "c.json", seconds + 120)
        stop = threading.Event()
        if not hold:
            args = (running(domain_names(cfg, "a")), stop, seed, lever)
            threading.Thread(target=duty_cycle, args=args, daemon=True).start()
        t0, same, last, lags = time.monotonic(), 0, None, []
        while time.monotonic() - t0 < seconds and same < 4:
            s = h.status(cfg_path)
            a, b = s.hosts["a"], s.hosts["b"]
            lags.append(b.backup.lag_seconds or 0.0)
            print(f"{time.monotonic() - t0:6.1f} lag {lags[-1]:.3f} s, "
                  f"{(a.icount - b.icount) / 1e6:.1f} M instr; hold {a.primary.hold}", flush=True)
            same, last = (same + 1 if b.icount == last else 0), b.icount
            time.sleep(1)
        stop.set()
        res = client.finish(120)
        tail = sorted(lags[5:]) or [0.0]
        print("RESULT", "stuck" if same >= 4 else "ok", f"backup at {last}",
              f"lag p50 {tail[len(tail) // 2]:.3f} max {tail[-1]:.3f} s",
              f"acked {len(res['acked'])} errors {res['errors']} mismatches {res['mismatches']}")


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2], *(int(a) for a in sys.argv[3:]))
