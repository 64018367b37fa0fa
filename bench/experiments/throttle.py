"""The recorder throttle (lag.throttle, rr/throttle.py) against a busy guest, watched for a hung
backup (docs/qemu-notes.md, "A SIGSTOP duty cycle of the recorder breaks replay too").

    python bench/experiments/throttle.py SECONDS [BACKUP_CPU] [--settle] [--shift N]

A client writes 10 records/s and keeps the guest's STRESS job running for SECONDS, starting as
soon as the guest's service listens (--settle: 8 status reads later); BACKUP_CPU (e.g. 0.5)
caps each of host B's QEMUs to that share of a CPU meanwhile; --shift N records and replays
with a fixed `-icount shift=N` instead of `auto`. A hang: the backup's count
unchanged over 4 status reads while the primary's moves (KEEP_HUNG=SECONDS: keep the pair
that long before it is torn down).
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests/e2e")]
import lab_helpers as h  # noqa: E402

from ftorch.host import lab  # noqa: E402
from ftorch.host.layout import domain_names, paths  # noqa: E402


def starve(cfg, share: float | None) -> None:
    for domain in lab.running(domain_names(cfg, "b")):
        lab.starve(domain, share)


def main(seconds: int, backup_cpu: float | None, settle: bool, shift: str) -> None:
    tmp = Path(tempfile.mkdtemp())
    cfg_path = h.write_config(tmp, "thr", lag={"throttle": True},
                              replay={"icount_shift": shift})
    with h.running_pair(cfg_path) as cfg:
        t0, last, same = time.monotonic(), None, 0

        def show(tag: str) -> None:
            nonlocal last, same
            s = h.status(cfg_path)
            a, b = s.hosts["a"], s.hosts["b"]
            t = a.primary.throttle
            print(f"{tag:6} {time.monotonic() - t0:6.1f} s  lag {b.lag_seconds or 0:.3f} s "
                  f"(primary's {a.primary.lag_seconds or 0:.3f})  A {a.icount / 1e6:.0f} M  "
                  f"B {b.icount / 1e6:.0f} M  share {t.share:.2f}  frozen {t.frozen_s:.1f} s",
                  flush=True)
            same, last = (same + 1 if b.icount == last else 0), b.icount

        h.wait_until(lambda: b"listening" in paths(cfg, "a").serial.read_bytes(), 300,
                     "the guest's service")
        for _ in range(8 if settle else 0):
            show("boot")
        client = h.Client(tmp / "c.json", duration=seconds, rate=10, stress_s=5)
        if backup_cpu:
            starve(cfg, backup_cpu)
        end = time.monotonic() + seconds
        while time.monotonic() < end and same < 4:
            show("stress")
        starve(cfg, None)
        if same >= 4 and os.environ.get("KEEP_HUNG"):   # to look at the hung replay (gdb)
            print("hung: kept for", os.environ["KEEP_HUNG"], "s", flush=True)
            time.sleep(float(os.environ["KEEP_HUNG"]))
        res = client.finish(120)
        print("RESULT", "stuck" if same >= 4 else "ok", f"backup at {last}",
              f"acked {len(res['acked'])} errors {res['errors']} mismatches {res['mismatches']}")


if __name__ == "__main__":
    argv = sys.argv[1:]
    shift = argv[argv.index("--shift") + 1] if "--shift" in argv else "auto"
    args = [a for a in argv if a not in ("--settle", "--shift", shift)]
    main(int(args[0]), float(args[1]) if len(args) > 1 else None, "--settle" in argv, shift)
