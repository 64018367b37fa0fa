"""Prometheus metrics of one agent, made when scraped from its status snapshot (status.py), on
an explicit registry with the process collector: no counters sprinkled through the code.

Names follow the Prometheus naming guide: prefix `ftorch_`, base units, `_total` counters,
timestamps rather than ages; every family carries `pair` and `host` labels.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ftorch.arbiter.roles import Role
from ftorch.status import SideStatus

log = logging.getLogger("ftorch.metrics")
LABELS = ("pair", "host")
# every role `ftorch status` can show: the role machine's and the agent's own
ROLES = ("standby", *(str(r) for r in Role))


def _gauge(name: str, doc: str, labels: list[str], value: float | None,
           extra: tuple[str, ...] = (), extra_values: tuple[str, ...] = ()) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=[*LABELS, *extra])
    if value is not None:
        g.add_metric([*labels, *extra_values], value)
    return g


def families(st: SideStatus) -> Iterator[Metric]:
    """Every ftorch metric family for one side's status (pure: no I/O)."""
    lb = [st.pair, st.host]
    role = GaugeMetricFamily("ftorch_role", "The side's role: 1 for the current one.",
                             labels=[*LABELS, "role"])
    for r in ROLES:
        role.add_metric([*lb, r], 1.0 if st.role == r else 0.0)
    yield role
    fo = st.failover
    yield _gauge("ftorch_generation", "The pair's generation this side operates under.", lb,
                 fo.generation if fo and fo.generation is not None else None)
    failovers = CounterMetricFamily("ftorch_failovers", "Times this agent went live or on "
                                    "alone after its peer went silent.", labels=list(LABELS))
    failovers.add_metric(lb, fo.failovers if fo else 0)
    yield failovers
    yield _gauge("ftorch_protected", "1 while this side is half of a protected pair.", lb,
                 1.0 if _protected(st) else 0.0)
    yield from _channel(st, lb)
    yield from _lag(st, lb)
    yield from _gate(st, lb)
    rp = st.reprotect
    yield _gauge("ftorch_clone_pause_seconds", "The guest's pause in the last clone.", lb,
                 rp.pause_s if rp else None)


def _protected(st: SideStatus) -> bool:
    ch = st.channel
    streaming = ch is not None and ch.state == "streaming"
    if st.primary is not None:
        return st.role == "primary" and st.primary.mode == "protected" and streaming
    return st.role == "backup" and streaming and st.failover is not None \
        and st.failover.state == "backup"


def _channel(st: SideStatus, lb: list[str]) -> Iterator[Metric]:
    ch = st.channel
    yield _gauge("ftorch_channel_up", "1 while the logging channel streams.", lb,
                 None if ch is None else 1.0 if ch.state == "streaming" else 0.0)
    yield _gauge("ftorch_channel_last_heard_seconds", "When the peer was last heard on the "
                 "channel (Unix time).", lb, ch.last_heard_at if ch else None)
    yield _gauge("ftorch_channel_longest_silence_seconds", "The peer's longest silence on the "
                 "channel so far (a failover at the channel timeout).", lb,
                 ch.longest_silence_s if ch else None)
    close = CounterMetricFamily("ftorch_channel_close_calls", "Silences of the peer past half "
                                "the channel timeout that ended before it.", labels=list(LABELS))
    close.add_metric(lb, ch.close_calls if ch else 0)
    yield close
    refused = CounterMetricFamily("ftorch_channel_refused_connections", "Connections refused "
                                  "for want of the pair's credential.", labels=list(LABELS))
    refused.add_metric(lb, ch.refused_peers if ch else 0)
    yield refused
    logged = CounterMetricFamily("ftorch_log_bytes", "Log bytes by what happened to them.",
                                 labels=[*LABELS, "direction"])
    if st.primary is not None:
        logged.add_metric([*lb, "sent"], st.primary.channel.sent_bytes)
        logged.add_metric([*lb, "acked"], st.primary.channel.acked_offset)
    if st.backup is not None:
        logged.add_metric([*lb, "received"], st.backup.channel.received_bytes)
        logged.add_metric([*lb, "replayed"], st.backup.fed_offset)   # in QEMU's pipe
    yield logged
    wire = CounterMetricFamily("ftorch_channel_data_bytes", "Bytes of log frames the primary "
                               "sent on the logging channel (deflated, with frame headers).",
                               labels=list(LABELS))
    wire.add_metric(lb, st.primary.channel.wire_bytes if st.primary is not None else 0)
    yield wire


def _lag(st: SideStatus, lb: list[str]) -> Iterator[Metric]:
    yield _gauge("ftorch_replication_lag_seconds", "Time since the primary recorded what the "
                 "backup has just replayed (the primary: as the backup's acks report it).", lb,
                 st.lag_seconds)
    rec: Any = st.primary or st.backup
    yield _gauge("ftorch_replication_lag_instructions", "Instructions the backup trails by.",
                 lb, rec.lag_instructions if rec else None)
    hold = st.primary.hold if st.primary else None
    yield _gauge("ftorch_lag_bound_holding", "1 while the guest's inbound frames wait because "
                 "its backup trails past the lag bound.", lb,
                 (1 if hold.holding else 0) if hold else None)
    yield _gauge("ftorch_lag_bound_held_seconds", "Seconds inbound frames have waited for the "
                 "backup, summed over frames.", lb, hold.held_s if hold else None)
    thr = st.primary.throttle if st.primary else None
    yield _gauge("ftorch_throttle_slowed", "1 while the recorder is slowed because its backup "
                 "trails (frozen for a share of every period).", lb,
                 (1 if thr.slowed else 0) if thr else None)
    yield _gauge("ftorch_throttle_share", "Share of each period the recorder is frozen now.",
                 lb, thr.share if thr else None)
    frozen = CounterMetricFamily("ftorch_throttle_frozen_seconds", "Seconds the recorder has "
                                 "been frozen by the lag bound.", labels=list(LABELS))
    if thr:
        frozen.add_metric(lb, thr.frozen_s)
    yield frozen


def _gate(st: SideStatus, lb: list[str]) -> Iterator[Metric]:
    g = st.primary.gate if st.primary else None
    yield _gauge("ftorch_output_gate_held_frames", "Outbound frames waiting for acks.", lb,
                 g.held if g else None)
    h = HistogramMetricFamily("ftorch_output_gate_delay_seconds", "Delay the output rule "
                              "added to released frames.", labels=list(LABELS))
    if g is not None:
        d = g.delay
        bounds = [*(f"{b:g}" for b in d.bounds), "+Inf"]
        h.add_metric(lb, list(zip(bounds, d.counts, strict=True)), d.sum)
    yield h


class StatusCollector(Collector):
    def __init__(self, snapshot: Callable[[], SideStatus]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from families(self.snapshot())


def serve(address: str, port: int, snapshot: Callable[[], SideStatus]) -> Any:
    """Serve /metrics on address:port in a daemon thread; returns the server (shutdown())."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(snapshot))
    ProcessCollector(registry=registry)
    server, _ = start_http_server(port, addr=address, registry=registry)
    log.info("metrics on http://%s:%d/metrics", address, port)
    return server
