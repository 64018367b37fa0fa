#!/usr/bin/env python3
"""`make bench`: replication figures against baselines measured in the same run.

Scenarios, same guest and workload: plain (no record/replay), recorded alone (unprotected),
and the protected pair. Each: boot, wait for the service (and, for the pair, for the backup to
catch up), IDLE_S of idle, then LOAD_S of a client writing over one TCP connection.
Then the failover runs (bench/failover.py) and the re-protection runs (bench/protect.py).
Writes bench/results/{replication,failover,protect}.json, bench/results/latest.md and
bench/results/lag.png. `--report` rebuilds latest.md from those JSON files; `--only PARTS` (a
comma-separated list of replication, failover, protect, detection, channel) reruns those parts and rebuilds
latest.md with the other parts' last results (`--protect` is `--only protect`). bench/channel.py: what TLS
costs the logging channel; bench/ab.py: this tree against another, interleaved.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import channel
import detection
import failover
import protect
import yaml
from rich.console import Console
from rich.progress import Progress

from ftorch.config import load
from ftorch.host import lab
from ftorch.host.layout import paths
from ftorch.ops import pair
from ftorch.stats import summary

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench/results"
sys.path.insert(0, str(ROOT / "tools"))
import promplot  # noqa: E402  (tools/ is not a package)

IDLE_S = 30.0
LOAD_S = 30.0
console = Console()


class SerialTicks(threading.Thread):
    """When each `tick N` line appeared in a serial file (polled every 2 ms)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.seen, self.stop = path, {}, False

    def run(self) -> None:
        pos, buf = 0, b""
        while not self.stop:
            try:
                with open(self.path, "rb") as f:
                    f.seek(pos)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            now = time.time()
            pos += len(data)
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                m = re.match(rb"tick (\d+)", line)
                if m:
                    self.seen.setdefault(int(m.group(1)), now)
            time.sleep(0.002)


def config(tmp: Path, name: str, lag: dict | None = None, **replay: int | bool) -> Path:
    data = yaml.safe_load((ROOT / "examples/lab.yaml").read_text())
    data["pair"] = "bench"
    data["guest"]["image"] = str((ROOT / "vm-images/build/current").resolve())
    data["replay"].update(replay)
    data.setdefault("lag", {}).update(lag or {})
    data["failover"]["reprotect"] = False   # the failover runs measure one failover each
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def client(duration: float, out: Path, wait: float = 180) -> dict:
    subprocess.run(["ip", "netns", "exec", lab.CLIENT_NS, sys.executable, str(ROOT / "tools/kvclient.py"),
                    "--duration", str(duration), "--wait", str(wait), "--out", str(out)],
                   check=False, capture_output=True, cwd=ROOT)
    return json.loads(out.read_text())


def log_size(cfg) -> int:
    p = paths(cfg, "a").rr_log
    return p.stat().st_size if p.exists() else 0


def wire_bytes(cfg, mode: str) -> int:
    """Bytes of log frames the primary has put on the logging channel (deflated, with frame
    headers; before TLS and TCP), 0 without a backup."""
    if mode != "protected":
        return 0
    a = pair.try_status(cfg, "a").primary
    return a.channel.wire_bytes if a is not None else 0


def cpu_seconds(comm: str) -> float:
    """User + system CPU time of the processes named `comm` so far (what the replay control
    costs the libvirtd that carries its QMP)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if text[text.index("(") + 1:text.rindex(")")] == comm:
            fields = text[text.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def scenario(name: str, mode: str, cfg_path: Path, tmp: Path, progress: Progress) -> dict:
    cfg = load(cfg_path)
    task = progress.add_task(f"{name}: booting", total=None)
    lab.up()  # idempotent; first: the pair's hosts are reached over its sshd
    pair.down(cfg, timeout=10, force=True)   # leftovers of an earlier run
    pair.up(cfg, wait=True, timeout=300, mode=mode)
    client(1, tmp / "warm.json")  # the service answers: boot is over
    result: dict = {"mode": mode}
    if mode == "protected":
        progress.update(task, description=f"{name}: backup catching up")
        failover.caught_up(cfg)   # steady state, not catch-up
    ticks = {k: SerialTicks(paths(cfg, k).serial) for k in ("a", "b")}
    for t in ticks.values():
        t.start()
    lag_samples: list[tuple[float, float]] = []
    sampling = True

    def sample() -> None:
        while sampling:
            b = pair.try_status(cfg, "b").backup
            if b is not None and isinstance(b.lag_seconds, float):
                lag_samples.append((time.time(), b.lag_seconds))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    if mode == "protected":
        sampler.start()
    progress.update(task, description=f"{name}: idle {IDLE_S:.0f} s")
    w0, b0, t0, cpu0 = wire_bytes(cfg, mode), log_size(cfg), time.time(), cpu_seconds("libvirtd")
    time.sleep(IDLE_S)  # measuring the idle guest, not synchronising
    w1, b1, t1 = wire_bytes(cfg, mode), log_size(cfg), time.time()
    progress.update(task, description=f"{name}: client load {LOAD_S:.0f} s")
    load_res = client(LOAD_S, tmp / f"{name}.json")
    w2, b2, t2 = wire_bytes(cfg, mode), log_size(cfg), time.time()
    sampling = False
    st = pair.status(cfg)
    for t in ticks.values():
        t.stop = True
    result.update({
        "requests": len(load_res["acked"]), "errors": load_res["errors"],
        "request_rate": load_res["rate"], "rtt_s": summary(load_res["rtt_s"]),
    })
    if mode != "plain":
        result["log_mbit_s"] = {"idle": (b1 - b0) * 8 / 1e6 / (t1 - t0),
                                "load": (b2 - b1) * 8 / 1e6 / (t2 - t1)}
    if mode == "protected":
        result["wire_mbit_s"] = {"idle": (w1 - w0) * 8 / 1e6 / (t1 - t0),
                                 "load": (w2 - w1) * 8 / 1e6 / (t2 - t1)}
    if mode == "protected":
        a = st.hosts["a"].primary
        assert a is not None, "host A is no longer the primary"
        ta, tb = ticks["a"].seen, ticks["b"].seen
        tick_lag = [tb[n] - ta[n] for n in ta if n in tb and ta[n] >= t0]
        idle_lag = [tb[n] - ta[n] for n in ta if n in tb and t0 <= ta[n] < t1]
        load_lag = [tb[n] - ta[n] for n in ta if n in tb and t1 <= ta[n] < t2]
        result["staleness_s"] = asdict(a.staleness_s)
        result["gate"] = asdict(a.gate) if a.gate else None
        result["hold"] = asdict(a.hold) if a.hold else None
        result["lag_s_serial"] = summary(tick_lag)
        result["lag_s_serial_idle"] = summary(idle_lag)
        result["lag_s_serial_load"] = summary(load_lag)
        result["libvirtd_cpu_share"] = (cpu_seconds("libvirtd") - cpu0) / (t2 - t0)
        result["lag_s_status"] = summary([v for _, v in lag_samples])
        result["lag_trace"] = [(round(t - t0, 3), round(v, 4)) for t, v in lag_samples]
        b = st.hosts["b"].backup
        result["backup_break_hits"] = b.break_hits if b else None
        png = OUT / f"{name}-prometheus.png"   # the same run as the lab's Prometheus saw it
        promplot.plot(cfg.pair, t0, time.time(), png, f"ftorch bench, {name}: idle {IDLE_S:.0f} s "
                      f"then client load (lab Prometheus)", {"client load": t1})
    progress.update(task, description=f"{name}: stopping")
    pair.down(cfg, timeout=300, force=mode != "protected")
    progress.update(task, description=f"{name}: done", completed=1, total=1)
    return result


def fmt(x: float | None, unit: str = "", scale: float = 1.0, digits: int = 3) -> str:
    return "-" if x is None else f"{x * scale:.{digits}f}{unit}"


def _lag_phases(x: dict) -> list[tuple[str, dict]]:
    """The serial-tick lag split into the idle and client-load phases (older results: whole)."""
    if "lag_s_serial_idle" in x:
        return [(", idle", x["lag_s_serial_idle"]), (", client load", x["lag_s_serial_load"])]
    return [("", x["lag_s_serial"])]


def markdown(res: dict) -> str:
    p, r, f, n = res["plain"], res["recorded"], res["pair"], res["pair_nokick"]
    u = res.get("pair_nobound")   # older results have no such row
    lines = [f"# Replication benchmark ({res['date']}, {res['machine']})", "",
             f"Workload: idle {IDLE_S:.0f} s, then one client writing over one TCP connection for "
             f"{LOAD_S:.0f} s (`PUT` answered after fsync). Same guest in every row.", "",
             "| scenario | requests/s | ratio to plain | RTT p50 | RTT p99 | log Mbit/s idle | "
             "log Mbit/s load | channel Mbit/s idle | channel Mbit/s load |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = [("plain (no record/replay)", p), ("recorded alone, inbound kick", r),
            ("protected pair, kick + lag bound (default)", f),
            *([("protected pair, kick, no lag bound", u)] if u else []),
            ("protected pair, no kick", n)]
    for name, x in rows:
        lm, wm = x.get("log_mbit_s", {}), x.get("wire_mbit_s", {})
        lines.append(f"| {name} | {x['request_rate']:.1f} | {x['request_rate'] / p['request_rate']:.2f} "
                     f"| {fmt(x['rtt_s']['p50'], ' ms', 1e3, 1)} | {fmt(x['rtt_s']['p99'], ' ms', 1e3, 1)} "
                     f"| {fmt(lm.get('idle'), '', 1, 3)} | {fmt(lm.get('load'), '', 1, 3)} "
                     f"| {fmt(wm.get('idle'), '', 1, 3)} | {fmt(wm.get('load'), '', 1, 3)} |")
    lines += ["", "| measure | pair | p50 | p99 | max | samples |", "|---|---|---|---|---|---|"]
    for label, x in (("default", f), *([("no bound", u)] if u else []), ("no kick", n)):
        s, lq = x["staleness_s"], x["lag_s_status"]
        lines += [
            f"| log staleness: inbound frame given to QEMU until its log event is on the wire | {label} "
            f"| {fmt(s['p50'], ' ms', 1e3, 1)} | {fmt(s['p99'], ' ms', 1e3, 1)} | - | {s['samples']} |",
            *[f"| backup lag: serial tick on A until the same tick on B{phase} | {label} "
              f"| {fmt(q['p50'], ' s')} | {fmt(q['p99'], ' s')} | {fmt(q['max'], ' s')} "
              f"| {q['samples']} |" for phase, q in _lag_phases(x)],
            f"| backup lag: agent's estimate every 100 ms | {label} | {fmt(lq['p50'], ' s')} "
            f"| {fmt(lq['p99'], ' s')} | {fmt(lq['max'], ' s')} | {lq['samples']} |"]
    rtt_f, rtt_r = f["rtt_s"], r["rtt_s"]
    lines += ["", "Round trip with FT against the same guest unprotected (recorded alone): p50 "
              f"{rtt_f['p50'] / rtt_r['p50']:.2f}x, p99 {rtt_f['p99'] / rtt_r['p99']:.2f}x; "
              f"requests/s {f['request_rate'] / r['request_rate']:.2f}x."]
    g = f.get("gate") or {}
    lines += ["", f"Output gate (kick on): {g.get('released')} frames released, added delay p50 "
              f"{fmt(g.get('delay_p50'), ' ms', 1e3, 2)}, p99 {fmt(g.get('delay_p99'), ' ms', 1e3, 2)}."]
    share = f.get("libvirtd_cpu_share")
    hold = f.get("hold") or {}
    if hold:
        lines += ["", f"Lag bound (default row): inbound frames held {hold.get('frames_held')} "
                  f"times in {hold.get('episodes')} episodes, {hold.get('held_s')} s in all, "
                  f"longest {hold.get('longest_s')} s ({hold.get('timeouts')} let in at "
                  "`lag.max_hold_s`)."]
    lines += ["", f"Backup break hits (kick on): {f.get('backup_break_hits')}; libvirtd's CPU "
              f"(both hosts' replay control): {fmt(share, ' % of a core', 100, 0)}. "
              "Lag over time: `lag.png`."]
    if res.get("boot_failures"):
        lines += ["", f"Fresh pairs that did not settle before their row (redone): "
                  f"{len(res['boot_failures'])}: {'; '.join(res['boot_failures'])}"]
    return "\n".join(lines) + "\n"


def plot(res: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    trace = res["pair"]["lag_trace"]
    if not trace:
        return
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot([t for t, _ in trace], [v * 1e3 for _, v in trace], lw=0.8)
    ax.axvline(IDLE_S, color="grey", ls="--", lw=0.8)
    ax.set_xlabel(f"seconds (idle, then client load from {IDLE_S:.0f} s)")
    ax.set_ylabel("backup lag (ms)")
    ax.set_title("ftorch backup lag (agent estimate)")
    fig.tight_layout()
    fig.savefig(OUT / "lag.png", dpi=100)


PARTS = ("failover", "protect", "detection", "channel")   # each reruns alone with --only


def _run_part(part: str, cfg: Path, tmp: Path, progress: Progress) -> dict:
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if part == "failover":
        return {**failover.run(cfg, tmp, progress), "date": now}
    if part == "protect":
        return {**protect.run(cfg, tmp, progress), "date": now}
    if part == "detection":   # the heaviest load: the kick's faster guest makes the most log
        return {**detection.run(config(tmp, "detect", inbound_kick=True), tmp, progress),
                "date": now}
    return {**channel.run(), "date": now}


def _last(part: str) -> dict | None:
    f = OUT / f"{part}.json"
    return json.loads(f.read_text()) if f.exists() else None


def report(res: dict, parts: dict[str, dict | None], timeout_s: float) -> str:
    """Write the results as JSON and bench/results/latest.md; return the markdown."""
    (OUT / "replication.json").write_text(json.dumps({**res, "channel_timeout_s": timeout_s},
                                                     indent=2) + "\n")
    for part, r in parts.items():
        if r is not None:
            (OUT / f"{part}.json").write_text(json.dumps(r, indent=2) + "\n")
    text = markdown(res)
    if parts.get("channel"):
        text += "\n" + channel.markdown(parts["channel"])
    if parts.get("failover"):
        text += "\n" + failover.markdown(parts["failover"], timeout_s)
    if parts.get("protect"):
        text += "\n" + protect.markdown(parts["protect"])
    if parts.get("detection"):
        text += "\n" + detection.markdown(parts["detection"])
    (OUT / "latest.md").write_text(text)
    plot(res)
    return text


def main() -> int:
    if sys.argv[1:] == ["--report"]:   # rebuild latest.md from the JSON of the last run
        res = json.loads((OUT / "replication.json").read_text())
        console.print(report(res, {p: _last(p) for p in PARTS}, res.get("channel_timeout_s", 5.0)))
        return 0
    if sys.argv[1:] == ["--protect"]:
        sys.argv[1:] = ["--only", "protect"]
    only = ["replication", *PARTS]
    if sys.argv[1:2] == ["--only"] and len(sys.argv) == 3:  # the rest from the last run
        only = sys.argv[2].split(",")
        if not set(only) <= {"replication", *PARTS}:
            console.print(f"--only takes a comma-separated list of replication, {', '.join(PARTS)}")
            return 2
    OUT.mkdir(parents=True, exist_ok=True)
    last = OUT / "replication.json"
    res = json.loads(last.read_text()) if "replication" not in only and last.exists() else {}
    parts = {p: _last(p) for p in PARTS}
    with tempfile.TemporaryDirectory() as d, Progress(console=console) as progress:
        cfg = config(Path(d), "bench")
        # the replication rows' own timeout when they are not rerun (the JSON keeps it)
        timeout_s = load(cfg).channel.timeout_s if "replication" in only \
            else res.get("channel_timeout_s", 5.0)
        try:
            if "replication" in only:
                res = replication(Path(d), cfg, progress)
            for part in PARTS:
                if part in only:
                    parts[part] = _run_part(part, cfg, Path(d), progress)
        finally:
            if set(only) - {"channel"}:
                pair.down(load(cfg), timeout=10, force=True)
                lab.down()
    console.print(report(res, parts, timeout_s))
    return 0


def replication(tmp: Path, cfg: Path, progress: Progress) -> dict:
    """Every replication scenario, each against plain QEMU in the same run."""
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                 "machine": f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} "
                            "cores, TCG"}
    kick = config(tmp, "kick", inbound_kick=True)   # the lever of issue 14, measured both ways
    runs = (("plain", "plain", cfg), ("recorded", "unprotected", kick), ("pair", "protected", kick),
            ("pair_nobound", "protected", config(tmp, "nobound", {"hold_inbound": False})),
            ("pair_nokick", "protected", config(tmp, "nokick", inbound_kick=False)))
    for name, mode, path in runs:
        res[name] = failover.redo_boot_failures(
            lambda n=name, m=mode, c=path: scenario(n, m, c, tmp, progress),
            res.setdefault("boot_failures", []))
    for name, _, _ in runs:
        res[name]["ratio_to_plain"] = res[name]["request_rate"] / res["plain"]["request_rate"]
    return res


if __name__ == "__main__":
    sys.exit(main())
