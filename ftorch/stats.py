"""Percentile summaries of latency samples: one definition for status, tests and benchmarks."""
from __future__ import annotations

from collections.abc import Iterable


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None if empty)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def summary(samples: Iterable[float]) -> dict[str, float | int | None]:
    """{"samples", "p50", "p99", "max"} of samples."""
    xs = sorted(samples)
    return {"samples": len(xs), "p50": percentile(xs, 50), "p99": percentile(xs, 99),
            "max": xs[-1] if xs else None}


def wall_clock(monotonic: float) -> float | None:
    """A time.monotonic() reading as wall-clock seconds (what metrics and status show);
    None for 0, a moment that never came."""
    import time
    return time.time() - (time.monotonic() - monotonic) if monotonic else None
