"""Each agent's Prometheus metrics, scraped for real from the LAN during a pair run, and after a
failover."""
from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ftorch.host import lab
from ftorch.host.layout import domain_name, paths

from .lab_helpers import Client, running_pair, side, wait_until, write_config
from .test_protect import protected_by

pytestmark = pytest.mark.e2e
FETCH = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())"


def scrape(address: str, port: int) -> dict[str, list]:
    """name -> [(labels, value)] from http://address:port/metrics, fetched from the LAN."""
    out = subprocess.run(["ip", "netns", "exec", lab.CLIENT_NS, sys.executable, "-c", FETCH,
                          f"http://{address}:{port}/metrics"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    found: dict[str, list] = {}
    for fam in text_string_to_metric_families(out):
        for s in fam.samples:
            found.setdefault(s.name, []).append((s.labels, s.value))
    return found


def one(m: dict, name: str, **labels: str) -> float:
    vals = [v for lab_, v in m.get(name, []) if all(lab_.get(k) == x for k, x in labels.items())]
    assert len(vals) == 1, (name, labels, m.get(name))
    return vals[0]


def test_metrics_on_both_sides_and_after_a_failover(tmp_path):
    cfg_path = write_config(tmp_path, "mx", failover={"reprotect": False})
    with running_pair(cfg_path) as cfg:
        port = cfg.metrics.port
        a_addr, b_addr = cfg.host("a").address, cfg.host("b").address
        protected_by(cfg_path, "a")
        client = Client(tmp_path / "mx.json", duration=20, prefix="m")
        a, b = scrape(a_addr, port), scrape(b_addr, port)
        assert one(a, "ftorch_role", role="primary", pair="mx", host="a") == 1
        assert one(b, "ftorch_role", role="backup", host="b") == 1
        assert one(a, "ftorch_protected") == one(b, "ftorch_protected") == 1
        assert one(a, "ftorch_channel_up") == one(b, "ftorch_channel_up") == 1
        assert one(a, "ftorch_generation") == one(b, "ftorch_generation") == 1
        assert 0 <= one(b, "ftorch_replication_lag_seconds") < 30
        assert one(a, "process_resident_memory_bytes") > 0
        sent = one(a, "ftorch_log_bytes_total", direction="sent")
        wait_until(lambda: one(scrape(a_addr, port), "ftorch_log_bytes_total", direction="sent")
                   > sent, 60, "the log bytes sent to grow")
        wait_until(lambda: one(scrape(a_addr, port), "ftorch_output_gate_delay_seconds_count")
                   > 0, 60, "released frames in the gate's histogram")
        assert client.result(timeout=120)["errors"] == []
        lab.kill_host(paths(cfg, "a").pid, domain_name(cfg, "a"))
        wait_until(lambda: side(cfg_path, "b").role == "live-alone", 120, "host B to go live")
        b = scrape(b_addr, port)
        assert one(b, "ftorch_failovers_total") == 1
        assert one(b, "ftorch_generation") == 2
        assert one(b, "ftorch_role", role="live-alone") == 1
        assert one(b, "ftorch_protected") == 0
