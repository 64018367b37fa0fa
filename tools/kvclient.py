"""Drive the guest's key-value service over ONE TCP connection and report what was acknowledged.

Used by tests, the demo and the benchmarks, inside the client namespace:
  ip netns exec ftorch-client python tools/kvclient.py --duration 30 --out result.json
Every PUT waits for its `OK seq` (the guest fsyncs before answering), so `acked` is exactly the
set of records the service promised to keep.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field


@dataclass
class Result:
    acked: list[tuple[str, str, int]] = field(default_factory=list)
    rtt_s: list[float] = field(default_factory=list)
    ack_times: list[float] = field(default_factory=list)   # wall clock of each OK
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    connect_wait_s: float = 0.0
    mismatches: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.acked) / self.duration_s if self.duration_s else 0.0


def connect(host: str, port: int, wait_s: float) -> socket.socket:
    """Connect, retrying until the guest service answers or wait_s passes."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            s = socket.create_connection((host, port), timeout=2)
            s.settimeout(30)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.rf = sock.makefile("rb")

    def ask(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self.answer()

    def answer(self) -> str:
        reply = self.rf.readline()
        if not reply:
            raise ConnectionError("connection closed by the guest")
        return reply.decode().strip()


# GETs sent at once when reading records back: one round trip each (through the output gate,
# ~5 ms) made reading back a fault case's few thousand records take longer than the fault
VERIFY_BATCH = 32


def read_back(conn: Conn, acked: list[tuple[str, str, int]]) -> list[str]:
    """GET every acknowledged record, a batch at a time; the mismatches."""
    bad = []
    for i in range(0, len(acked), VERIFY_BATCH):
        batch = acked[i:i + VERIFY_BATCH]
        conn.sock.sendall(b"".join(f"GET {key}\n".encode() for key, _, _ in batch))
        for key, value, _ in batch:
            got = conn.answer()
            if got != f"VAL {value}":
                bad.append(f"{key}: expected {value!r}, got {got!r}")
    return bad


_finish = threading.Event()   # SIGUSR1: stop writing now, then verify and report as usual


# The guest's own batch job (kvsvc.c STRESS) runs while the client writes: renewed this often
# for the next stress_s seconds of the guest's clock (a slowed guest's clock runs slow).
STRESS_RENEW_S = 1.0


def stress(conn: Conn, seconds: int) -> None:
    reply = conn.ask(f"STRESS {seconds}")
    if reply != "OK stress":
        raise OSError(f"STRESS {seconds}: {reply}")


def run(host: str, port: int, duration: float, prefix: str, wait_s: float,
        verify: bool, rate: float = 0.0, stress_s: int = 0) -> Result:
    r = Result()
    t0 = time.monotonic()
    conn = Conn(connect(host, port, wait_s))
    r.connect_wait_s = time.monotonic() - t0
    start = time.monotonic()
    i, stressed = 0, 0.0
    try:
        while time.monotonic() - start < duration and not _finish.is_set():
            if stress_s and time.monotonic() - stressed > STRESS_RENEW_S:
                stress(conn, stress_s)
                stressed = time.monotonic()
            key, value = f"{prefix}{i}", f"v{i}-{int(time.time() * 1000)}"
            t = time.monotonic()
            reply = conn.ask(f"PUT {key} {value}")
            if not reply.startswith("OK "):
                r.errors.append(f"PUT {key}: {reply}")
                break
            r.rtt_s.append(time.monotonic() - t)
            r.ack_times.append(time.time())
            r.acked.append((key, value, int(reply.split()[1])))
            i += 1
            if rate:
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
        r.duration_s = time.monotonic() - start
        if stress_s:
            stress(conn, 0)
        if verify:
            r.mismatches = read_back(conn, r.acked)
    except OSError as e:
        r.errors.append(f"{type(e).__name__}: {e}")
        r.duration_s = time.monotonic() - start
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="10.77.0.10")
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--duration", type=float, default=30.0,
                    help="seconds of writing (SIGUSR1 ends it sooner)")
    ap.add_argument("--prefix", default="k")
    ap.add_argument("--wait", type=float, default=120.0, help="seconds to wait for the service")
    ap.add_argument("--rate", type=float, default=0.0, help="requests/s cap (0: as fast as it answers)")
    ap.add_argument("--verify", action="store_true", help="read every record back at the end")
    ap.add_argument("--stress", type=int, default=0,
                    help="keep the guest's CPU- and disk-heavy job running while writing, "
                         "renewed every second for this many seconds of the guest's clock")
    ap.add_argument("--out", help="write the result as JSON here")
    a = ap.parse_args()
    signal.signal(signal.SIGUSR1, lambda *_: _finish.set())
    r = run(a.host, a.port, a.duration, a.prefix, a.wait, a.verify, a.rate, a.stress)
    doc = {**asdict(r), "rate": r.rate}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(doc, f)
    print(f"{len(r.acked)} records acknowledged in {r.duration_s:.1f} s ({r.rate:.1f}/s), "
          f"{len(r.errors)} errors, {len(r.mismatches)} mismatches", file=sys.stderr)
    return 1 if r.errors or r.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
