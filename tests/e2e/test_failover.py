"""Failover, for real: SIGKILL the primary's agent and QEMU while a client writes over one TCP
connection; the backup must win the arbiter, go live on host B and the client carry on, with
every acknowledged record readable from the new primary."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ftorch import lab, pair
from ftorch.config import load
from ftorch.layout import domain_name, paths
from ftorch.virt import Host

from .lab_helpers import Client, ftorch, side, wait_until, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def ft_pair(tmp_path):
    cfg_path = write_config(tmp_path, "ft", failover={"enabled": True})
    cfg = load(cfg_path)
    try:
        ftorch("up", str(cfg_path), "--timeout", "240")
        yield cfg_path, cfg, tmp_path
    finally:
        ftorch("down", str(cfg_path), "--force", check=False)
        host = Host()
        for key in ("a", "b"):
            host.destroy(domain_name(cfg, key))
        lab.down()


def kill_host(cfg, key: str) -> None:
    """The host dies: its agent and its QEMU get SIGKILL, nothing shuts down cleanly."""
    agent_pid = int(paths(cfg, key).pid.read_text())
    qemu_pid = int(Path(f"/run/libvirt/qemu/{domain_name(cfg, key)}.pid").read_text())
    for pid in (agent_pid, qemu_pid):
        os.kill(pid, signal.SIGKILL)


def test_sigkill_primary_client_carries_on_over_the_same_connection(ft_pair):
    cfg_path, cfg, tmp = ft_pair
    pair.wait_caught_up(cfg, timeout=300)
    client = Client(tmp / "ft.json", duration=45, prefix="f", verify=True)
    released = side(cfg_path, "a")["gate"]["released"]
    wait_until(lambda: side(cfg_path, "a")["gate"]["released"] > released + 40, 60,
               "the client to be writing through the primary")
    killed_at = time.time()
    kill_host(cfg, "a")
    b = wait_until(lambda: (s := side(cfg_path, "b")).get("role") == "live-alone" and s, 180,
                   "host B to go live")
    assert b["failover"]["generation"] == 2
    res = client.result(timeout=400)
    assert res["errors"] == [], "the client's connection broke"
    assert res["mismatches"] == [], "an acknowledged record is missing or changed"
    acked_after = [t for t in res["ack_times"] if t > b["failover"]["live_at"]]
    assert acked_after, "the client wrote nothing through the new primary"
    assert any(t < killed_at for t in res["ack_times"])
    print(f"failover: detected {b['failover']['detected_at'] - killed_at:.2f} s after the kill, "
          f"replay {b['failover']['replay_s']:.2f} s, save {b['failover']['save_s']:.2f} s, "
          f"start {b['failover']['start_s']:.2f} s; {len(res['acked'])} records, "
          f"{len(acked_after)} after go-live")
