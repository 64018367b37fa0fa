"""Each agent's Prometheus metrics, scraped for real from the LAN during a pair run and after a
failover; the lab's Prometheus server scraping them, its rules firing, and every PromQL query
of the Grafana dashboard answered with series."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest
from dashboard import queries
from prometheus_client.parser import text_string_to_metric_families

from ftorch.host import lab, labprom
from ftorch.host.layout import domain_names, paths

from .lab_helpers import Client, ftorch, side, wait_until, write_config
from .test_protect import protected_by, unprotected_pair

pytestmark = pytest.mark.e2e


def scrape(address: str, port: int) -> dict[str, list]:
    """name -> [(labels, value)] from http://address:port/metrics, fetched from the LAN."""
    out = labprom.fetch(lab.CLIENT_NS, f"http://{address}:{port}/metrics")
    found: dict[str, list] = {}
    for fam in text_string_to_metric_families(out):
        for s in fam.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def one(m: dict, name: str, **labels: str) -> float:
    vals = [v for lab_, v in m.get(name, []) if all(lab_.get(k) == x for k, x in labels.items())]
    assert len(vals) == 1, (name, labels, m.get(name))
    return vals[0]


def promql(expr: str, range_s: float | None = None) -> list[dict]:
    return labprom.query(lab.MON_NS, lab.prometheus_url(), expr, range_s=range_s)


def hosts_with(expr: str, range_s: float) -> set[str]:
    return {r["metric"].get("host", "") for r in promql(expr, range_s)}


def test_metrics_prometheus_rules_and_dashboard_during_a_run_and_a_failover(tmp_path):
    cfg_path = write_config(tmp_path, "mx", failover={"reprotect": False})
    with unprotected_pair(cfg_path) as cfg:
        started = time.time()

        def since_start() -> float:   # range queries see this run only
            return time.time() - started
        port = cfg.metrics.port
        a_addr, b_addr = cfg.host("a").address, cfg.host("b").address
        ftorch("protect", str(cfg_path), timeout=600)      # a clone: its pause is a metric
        protected_by(cfg_path, "a")
        client = Client(tmp_path / "mx.json", duration=20, prefix="m")
        a, b = scrape(a_addr, port), scrape(b_addr, port)
        assert one(a, "ftorch_role", role="primary", pair="mx", host="a") == 1
        assert one(b, "ftorch_role", role="backup", host="b") == 1
        assert one(a, "ftorch_protected") == one(b, "ftorch_protected") == 1
        assert one(a, "ftorch_channel_up") == one(b, "ftorch_channel_up") == 1
        assert one(a, "ftorch_generation") == one(b, "ftorch_generation") == 1
        assert 0 < one(a, "ftorch_clone_pause_seconds") < 30
        assert one(a, "process_resident_memory_bytes") > 0
        sent = one(a, "ftorch_log_bytes_total", direction="sent")
        wait_until(lambda: one(scrape(a_addr, port), "ftorch_log_bytes_total", direction="sent")
                   > sent, 60, "the log bytes sent to grow")
        wait_until(lambda: one(scrape(a_addr, port), "ftorch_output_gate_delay_seconds_count")
                   > 0, 60, "released frames in the gate's histogram")
        for host, addr in (("a", a_addr), ("b", b_addr)):   # lag is measured on both sides
            assert 0 <= one(scrape(addr, port), "ftorch_replication_lag_seconds", host=host) < 30
        assert client.result(timeout=120)["errors"] == []

        # the lab's Prometheus has both sides' lag over the last minute, and the dashboard's
        # every query parses and returns series
        wait_until(lambda: hosts_with('ftorch_replication_lag_seconds{pair="mx"}', 60)
                   == {"a", "b"}, 60, "Prometheus to hold both sides' lag")
        for panel, expr in queries(pair="mx").items():
            if panel.startswith("annotation"):
                assert promql(expr, range_s=since_start()) == [], panel   # no failover yet
                continue
            assert promql(expr, range_s=since_start()), f"dashboard panel {panel}: no series " \
                                                        f"for {expr}"
        assert promql('ALERTS{alertname=~"FtorchChannelDown|FtorchTwoLiveCopies"}') == []
        # ... and its UI on this machine's loopback, through the relay into the lab
        with urllib.request.urlopen(f"{labprom.local_url()}/api/v1/query?query=up",
                                    timeout=10) as r:
            assert len(json.load(r)["data"]["result"]) == 2

        # the live view: refreshed in place, or one JSON object a refresh
        view = ftorch("status", str(cfg_path), "--watch", "--count", "2", "--interval", "0.5")
        assert "pair mx" in view.stdout and "lag b" in view.stdout
        lines = ftorch("status", str(cfg_path), "--watch", "--json", "--count", "2",
                       "--interval", "0.5").stdout.splitlines()
        assert [json.loads(x)["hosts"]["b"]["role"] for x in lines] == ["backup", "backup"]

        lab.kill_host(paths(cfg, "a").pid, domain_names(cfg, "a"))
        wait_until(lambda: side(cfg_path, "b").role == "live-alone", 120, "host B to go live")
        b = scrape(b_addr, port)
        assert one(b, "ftorch_failovers_total") == 1
        assert one(b, "ftorch_generation") == 2
        assert one(b, "ftorch_role", role="live-alone") == 1
        assert one(b, "ftorch_protected") == 0
        # the rules see it too: the failover alert fires for host B, the dashboard marks it
        wait_until(lambda: promql('ALERTS{alertname="FtorchFailover", alertstate="firing", '
                                  'pair="mx", host="b"}'), 60, "the FtorchFailover alert")
        wait_until(lambda: promql(queries(pair="mx")["annotation Failovers"],
                                  range_s=since_start()),
                   60, "the failover annotation's query to find the generation change")
        assert promql('ALERTS{alertname="FtorchTwoLiveCopies"}') == []

