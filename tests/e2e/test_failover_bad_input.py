"""Bad input at the moment of failover: a log stream cut inside a frame, a corrupt ownership
record, a stopped storage server. Each gives a clear error, and never two live copies."""
from __future__ import annotations

import pytest

from ftorch.host import lab
from ftorch.host.layout import domain_names, paths
from ftorch.ops import pair

from .lab_helpers import Client, arbiter_folder, running_pair, side, wait_until, write_config

pytestmark = pytest.mark.e2e
SETTLED = ("live-alone", "fenced")


@pytest.fixture
def ft_pair(tmp_path, request):
    # a pair name of its own per test: its hosts' folders (agent logs) outlive the next test
    # (one run saw a backup not catch up in 300 s here, and its logs were overwritten)
    name = f"bad-{request.node.name.split('_')[1][:8]}"
    cfg_path = write_config(tmp_path, name, failover={"enabled": True, "reprotect": False})
    with running_pair(cfg_path) as cfg:
        pair.wait_caught_up(cfg, timeout=300)
        yield cfg_path, cfg, tmp_path


def kill_a(cfg) -> None:
    lab.kill_host(paths(cfg, "a").pid, domain_names(cfg, "a"))


def test_stream_cut_inside_a_frame_goes_live_at_the_last_whole_frame(ft_pair):
    cfg_path, cfg, tmp = ft_pair
    client = Client(tmp / "cut.json", duration=30, prefix="c", verify=True)
    wait_until(lambda: side(cfg_path, "a").primary.gate.released > 60, 90, "the client to write")
    cut = pair.agent_call(cfg, "a", "inject", timeout=40, what="truncate-frame")
    kill_a(cfg)
    b = wait_until(lambda: (s := side(cfg_path, "b")).role in SETTLED and s, 180,
                   "host B to settle")
    assert b.role == "live-alone", b.failover
    assert b.failover.stream["partial_dropped"] == cut["sent"]   # never fed
    assert b.failover.final_icount == cut["icount"]      # live exactly before it
    res = client.result(timeout=300)
    assert res["errors"] == [] and res["mismatches"] == []


def test_corrupt_ownership_record_fences_both_sides_in_a_partition(ft_pair):
    cfg_path, cfg, tmp = ft_pair
    # written on the NFS server's disk (it keeps no attributes cached: examples/lab.yaml)
    (arbiter_folder(cfg) / "gen-1").write_bytes(b"\x00garbage")
    lab.cut_link("a", False)      # host A loses the LAN, and with it the channel and storage
    try:
        roles = wait_until(lambda: (r := {k: side(cfg_path, k) for k in "ab"})
                           and all(s.role in SETTLED for s in r.values()) and r,
                           120, "both sides to settle")
    finally:
        lab.cut_link("a", True)
    for key, s in roles.items():
        assert s.role == "fenced", f"host {key} acted on a corrupt ownership record"
    b = roles["b"].failover.error
    assert "corrupt ownership record" in b and f"{cfg.shared_dir}/{cfg.pair}/gen-1" in b
    assert "arbiter" in roles["a"].failover.error         # the storage is out of its reach
    assert side(cfg_path, "a").role == "fenced"             # the link is back: still fenced


def test_stopped_storage_server_means_nobody_goes_live(ft_pair):
    cfg_path, cfg, tmp = ft_pair
    lab.NFS.stop()                                          # the arbiter's NFS server is down
    try:
        kill_a(cfg)
        b = wait_until(lambda: (s := side(cfg_path, "b")).role in SETTLED and s, 120,
                       "host B to settle")
    finally:
        lab.NFS.start()
    assert b.role == "fenced", "the backup went live without the arbiter"
    assert cfg.shared_dir in b.failover.error and "failed" in b.failover.error, b.failover.error
