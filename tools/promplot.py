"""A PNG of a pair's replication lag and output-gate delay over time, from the lab's Prometheus
(the same series the Grafana dashboard shows). Used by `make demo` and `make bench`."""
from __future__ import annotations

from pathlib import Path

from ftorch.host import lab, labprom

STEP_S = 5   # the scrape interval of ops/prometheus/prometheus.yml


def series(expr: str, start: float, end: float) -> dict[str, list[tuple[float, float]]]:
    """host -> [(seconds since start, value)] of a range query."""
    span = max(end - start, STEP_S)
    res = labprom.query(lab.MON_NS, lab.prometheus_url(), expr, at=end, range_s=span,
                        step_s=STEP_S)
    return {r["metric"].get("host", "?"): _gaps([(float(t) - start, float(v))
                                                for t, v in r["values"] if v not in ("NaN", "+Inf")])
            for r in res}


def _gaps(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A NaN where a series has no sample for over a step (a dead agent), so the line breaks
    there instead of bridging the silence."""
    out: list[tuple[float, float]] = []
    for t, v in points:
        if out and t - out[-1][0] > 1.5 * STEP_S:
            out.append((out[-1][0] + STEP_S, float("nan")))
        out.append((t, v))
    return out


def plot(pair: str, start: float, end: float, out: Path, title: str,
         marks: dict[str, float] | None = None) -> Path:
    """Lag (each side's view) above, gate delay p50/p99 below; `marks`: label -> wall time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sel = f'pair="{pair}"'
    lag = series(f"ftorch_replication_lag_seconds{{{sel}}}", start, end)
    gate = {q: series(f"histogram_quantile({q}, sum by (host, le) "
                      f"(rate(ftorch_output_gate_delay_seconds_bucket{{{sel}}}[30s])))", start, end)
            for q in ("0.5", "0.99")}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    for host, pts in sorted(lag.items()):
        top.plot([t for t, _ in pts], [v * 1e3 for _, v in pts], lw=1,
                 label=f"seen on host {host}")
    top.set_ylabel("replication lag (ms)")
    for q, by_host in gate.items():
        for host, pts in sorted(by_host.items()):
            bottom.plot([t for t, _ in pts], [v * 1e3 for _, v in pts], lw=1,
                        label=f"p{float(q) * 100:g} on host {host}")
    bottom.set_ylabel("output gate delay (ms)")
    bottom.set_xlabel(f"seconds (Prometheus, one point every {STEP_S} s)")
    for ax in (top, bottom):
        for label, at in (marks or {}).items():
            ax.axvline(at - start, color="grey", ls="--", lw=0.8)
            if ax is top:
                ax.annotate(label, (at - start, 1), xycoords=("data", "axes fraction"),
                            rotation=90, va="top", ha="right", fontsize=8, color="grey")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="upper left")
    top.set_title(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
