"""A replicated pair, for real: QEMU record on host A, replay on host B, client on the LAN.

The tests share one pair and run in order; the last one shuts the primary down and checks the
backup replayed everything identically, so the disruptions before it must not have broken
determinism.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftorch.host import lab
from ftorch.host.layout import paths

from .lab_helpers import ROOT, Client, ftorch, running_pair, side, wait_until, write_config

pytestmark = pytest.mark.e2e
PAIR = "e2e"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pair")
    # these tests cut the channel on purpose to test its resume; no failover races here; 1 MiB
    # of log kept: both sides punch out what the backup holds. The inbound kick and the lag
    # bound are on (the defaults): the clean stop's identical replay checks the replay minds
    # neither
    cfg_path = write_config(tmp, PAIR, failover={"enabled": False}, limits={"log_keep_mib": 1})
    with running_pair(cfg_path) as cfg:
        yield cfg_path, cfg, tmp


def test_backup_follows_while_client_writes(pair):
    cfg_path, _, tmp = pair
    client = Client(tmp / "load.json", duration=30)
    # a writing client makes the guest record faster than its backup replays: the lag bound
    # makes the client's frames wait, and the backup catches up while the writes go on
    wait_until(lambda: side(cfg_path, "a").primary.hold.frames_held > 0, 240,
               "the lag bound to hold inbound frames back")
    wait_until(lambda: (b := side(cfg_path, "b").backup) is not None
               and b.guest in ("running", "paused") and b.lag_instructions < 50_000_000,
               240, "the backup to catch up with the primary")
    assert client.proc.poll() is None, "the client should still be writing"
    res = client.result(timeout=300)
    assert res["errors"] == [] and res["mismatches"] == []
    assert len(res["acked"]) > 30, "the client should have written for 30 s"
    a = side(cfg_path, "a")
    assert a.channel.state == "streaming"
    # the boot's log, most of what was sent, deflates ~12x; the client's frames go raw
    assert 0 < a.channel.wire_bytes < a.channel.sent_bytes / 3
    assert a.primary.staleness_s.samples > 0
    assert a.primary.gate.released > len(res["acked"]), "every reply passed the output gate"


PING_ONCE = """
import json, socket, sys, time
s = socket.create_connection(("10.77.0.10", 7000), timeout=60)
print("connected", flush=True)
sys.stdin.readline()                      # the test says when to send
t = time.monotonic()
s.sendall(b"PING\\n")
reply = s.makefile("rb").readline()
print(json.dumps({"reply": reply.decode().strip(), "at": time.monotonic()}), flush=True)
"""


def test_output_is_held_until_the_backup_acknowledges(pair):
    cfg_path, _, _ = pair
    client = subprocess.Popen(["ip", "netns", "exec", "ftorch-client", sys.executable, "-c",
                               PING_ONCE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "connected"
        ftorch("debug", "hold-acks", str(cfg_path), "true")
        client.stdin.write("go\n")
        client.stdin.flush()
        # the guest answers, but its reply waits in the gate: the backup has not acknowledged
        # the log up to it
        wait_until(lambda: side(cfg_path, "a").primary.gate.held > 0, 20, "the gate to hold a frame")
        assert client.poll() is None, "the reply left before the backup acknowledged the log"
        released_at = time.monotonic()  # CLOCK_MONOTONIC is shared with the client process
        ftorch("debug", "hold-acks", str(cfg_path), "false")
        out = json.loads(client.stdout.readline())
        assert out["reply"] == "PONG"
        assert out["at"] > released_at, "the reply arrived before the gate was released"
        wait_until(lambda: side(cfg_path, "a").primary.gate.held == 0, 20, "the gate to drain")
    finally:
        ftorch("debug", "hold-acks", str(cfg_path), "false", check=False)
        client.kill()


def test_logs_are_read_over_ssh(pair):
    cfg_path, _, _ = pair
    out = ftorch("logs", str(cfg_path), "b", "-n", "200").stdout
    assert "agent for e2e on host b is up as backup" in out
    assert "tick" in ftorch("logs", str(cfg_path), "a", "--which", "serial", "-n", "5").stdout


def test_corrupt_frame_is_rejected_and_stream_resumes(pair):
    cfg_path, _, tmp = pair
    before = side(cfg_path, "b").channel
    client = Client(tmp / "corrupt.json", duration=10, prefix="c")
    ftorch("debug", "corrupt-frame", str(cfg_path))
    b = wait_until(lambda: (s := side(cfg_path, "b")).channel.corrupt_frames == 1
                   and s.channel.connects > before.connects and s,
                   60, "the backup to reject the corrupt frame and the primary to reconnect")
    assert "checksum mismatch" in b.channel.last_error
    assert client.result(timeout=120)["errors"] == []
    wait_until(lambda: side(cfg_path, "b").backup.received_offset
               >= side(cfg_path, "a").primary.log_offset
               - 65536, 60, "the stream to catch up after the reconnect")


def test_channel_cut_and_restored(pair):
    cfg_path, cfg, tmp = pair
    before = side(cfg_path, "b").channel.connects
    lab.cut_link("a", False)
    try:
        wait_until(lambda: side(cfg_path, "b").channel.state != "streaming",
                   3 * cfg.channel.timeout_s + 10, "the backup to notice the cut")
    finally:
        lab.cut_link("a", True)
    wait_until(lambda: side(cfg_path, "b").channel.connects > before, 60,
               "the channel to reconnect")
    client = Client(tmp / "after-cut.json", duration=10, prefix="x")
    res = client.result(timeout=120)
    assert res["errors"] == [] and len(res["acked"]) > 0
    wait_until(lambda: side(cfg_path, "b").backup.received_offset
               >= side(cfg_path, "a").primary.log_offset
               - 65536, 60, "the stream to catch up after the cut")


def stranger(ns: str, target: str, port: int, source: str | None = None) -> dict[str, str]:
    cmd = ["ip", "netns", "exec", ns, sys.executable, str(Path(__file__).with_name("stranger.py")),
           target, str(port), PAIR, *([source] if source else [])]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(p.stdout)


def turned_away(attempts: dict[str, str]) -> bool:
    return all(r == "closed" or r.startswith("refused") for r in attempts.values())


def test_strangers_on_the_lan_are_refused_and_counted(pair):
    """Well-formed HELLO, DATA, END and ACK frames from the LAN and from host A's own address
    (where only TLS stands in the way), in clear and with a certificate of their own: all
    refused and counted by the backup; the primary listens to nobody; the pair streams on."""
    cfg_path, cfg, tmp = pair
    port, a_addr, b_addr = cfg.channel.port, cfg.host("a").address, cfg.host("b").address
    before_a, before_b = side(cfg_path, "a").channel, side(cfg_path, "b").channel
    client = Client(tmp / "strangers.json", duration=10, prefix="s")
    assert turned_away(stranger(lab.CLIENT_NS, b_addr, port))
    assert turned_away(stranger(lab.HOSTS[0].netns, b_addr, port, source=a_addr))
    assert stranger(lab.CLIENT_NS, a_addr, port) == {"clear": "connect: ConnectionRefusedError",
                                                     "tls": "connect: ConnectionRefusedError"}
    b = wait_until(lambda: (s := side(cfg_path, "b").channel).refused_peers
                   == before_b.refused_peers + 4 and s, 60, "the backup to count 4 refusals")
    assert b.connects == before_b.connects, "a stranger got a session"
    assert b.state == "streaming" and b.corrupt_frames == before_b.corrupt_frames
    res = client.result(timeout=120)
    assert res["errors"] == [] and res["mismatches"] == [] and len(res["acked"]) > 0
    a = side(cfg_path, "a").channel
    assert a.state == "streaming" and a.connects == before_a.connects
    assert a.refused_acks == before_a.refused_acks == 0


def test_clean_shutdown_backup_replays_identically(pair):
    cfg_path, cfg, _ = pair
    out = ftorch("down", str(cfg_path), "--json", "--timeout", "300")
    summary = json.loads(out.stdout)
    assert summary["backup"]["finished"], summary
    pa, pb = paths(cfg, "a"), paths(cfg, "b")
    # the primary's count from its log tail (the file itself has holes now: space given back)
    assert summary["primary"]["log_ended"]
    assert summary["backup"]["icount"] == summary["primary"]["icount"]
    assert os.stat(pa.rr_log).st_blocks * 512 < os.stat(pa.rr_log).st_size / 2
    assert os.stat(pb.spool).st_blocks * 512 < os.stat(pb.spool).st_size / 2
    serial_a, serial_b = pa.serial.read_bytes(), pb.serial.read_bytes()
    assert b"tick 30" in serial_a and b"kvsvc" in serial_a
    assert serial_a == serial_b
    cmp = subprocess.run(["qemu-img", "compare", str(pa.disk), str(pb.disk)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
