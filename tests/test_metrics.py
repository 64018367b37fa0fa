"""The metrics an agent serves, made from a status snapshot, as Prometheus reads them."""
from __future__ import annotations

from dataclasses import replace

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_status import BACKUP, PRIMARY

from ftorch.agent.metrics import StatusCollector
from ftorch.status import FailoverStatus, GateStatus, Histogram, HoldStatus, SideStatus, ThrottleStatus


def scrape(st: SideStatus) -> dict[tuple[str, tuple], float]:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatusCollector(lambda: st))
    text = generate_latest(reg).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    found = [v for (n, lab), v in samples.items() if n == name
             and all(dict(lab).get(k) == x for k, x in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_a_histogram_counts_cumulatively():
    h = Histogram().observe(0.0015).observe(0.3).observe(9.0)
    assert h.counts[0] == 0 and h.counts[1] == 1          # <= 1 ms, <= 2 ms
    assert h.counts[-2] == 2 and h.counts[-1] == 3        # <= 5 s, +Inf
    assert abs(h.sum - 9.3015) < 1e-9


def test_a_primary_and_a_backup_as_prometheus_sees_them():
    gate = GateStatus(held=2, released=10, delay=Histogram().observe(0.004).observe(0.03))
    channel = replace(PRIMARY.primary.channel, wire_bytes=3 << 20)
    a = replace(PRIMARY, primary=replace(PRIMARY.primary, gate=gate, lag_seconds=0.05,
                                         channel=channel),
                failover=FailoverStatus(state="primary", generation=3, failovers=1))
    s = scrape(a)
    assert value(s, "ftorch_role", role="primary", host="a", pair="p") == 1
    assert value(s, "ftorch_role", role="backup", host="a") == 0
    assert value(s, "ftorch_generation", host="a") == 3
    assert value(s, "ftorch_failovers_total", host="a") == 1
    assert value(s, "ftorch_protected", host="a") == 1
    assert value(s, "ftorch_channel_up", host="a") == 1
    assert value(s, "ftorch_log_bytes_total", direction="acked") == 14 << 20
    assert value(s, "ftorch_channel_data_bytes_total") == 3 << 20
    assert value(s, "ftorch_output_gate_held_frames") == 2
    assert value(s, "ftorch_output_gate_delay_seconds_bucket", le="0.005") == 1
    assert value(s, "ftorch_output_gate_delay_seconds_count") == 2
    assert value(s, "ftorch_replication_lag_instructions", host="a") == 0
    assert value(s, "ftorch_replication_lag_seconds", host="a") == 0.05   # from the acks
    assert value(s, "ftorch_clone_pause_seconds") == 1.01
    assert not [n for n, _ in s if n == "ftorch_lag_bound_holding"]   # no bound in this status
    held = scrape(replace(a, primary=replace(a.primary, hold=HoldStatus(0.5, True, held_s=2.5))))
    assert value(held, "ftorch_lag_bound_holding") == 1
    assert value(held, "ftorch_lag_bound_held_seconds") == 2.5
    assert not [n for n, _ in s if n == "ftorch_throttle_share"]   # no throttle in this status
    slowed = scrape(replace(a, primary=replace(a.primary, throttle=ThrottleStatus(
        0.5, True, share=0.4, frozen_s=12.5))))
    assert value(slowed, "ftorch_throttle_slowed") == 1
    assert value(slowed, "ftorch_throttle_share") == 0.4
    assert value(slowed, "ftorch_throttle_frozen_seconds_total") == 12.5
    b = scrape(BACKUP)
    assert value(b, "ftorch_replication_lag_seconds", host="b") == 0.043
    assert value(b, "ftorch_replication_lag_instructions", host="b") == 1_500_000
    assert value(b, "ftorch_log_bytes_total", direction="received") == 0
    assert value(b, "ftorch_protected", host="b") == 1
    fenced = replace(BACKUP, role="fenced", failover=FailoverStatus(state="fenced"))
    f = scrape(fenced)
    assert value(f, "ftorch_protected") == 0 and value(f, "ftorch_role", role="fenced") == 1
