"""The arbiter against a real NFS server: nfs-ganesha in a namespace of this test's own, reached
through libnfs from processes in that namespace (the lab's kernel has no NFS client)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ftorch.host.labnfs import NfsServer
from ftorch.host.proc import run

pytestmark = pytest.mark.e2e
NETNS = f"ftorch-nfs-t{os.getpid()}"
ADDRESS = "10.77.9.1"
TREE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One arbiter operation, run in the server's namespace: prints its result as JSON, or the
# ArbiterError's message, and how long it took.
OP = """
import json, sys, time
from ftorch.arbiter.rules import ArbiterError
from ftorch.arbiter.sharedlock import SharedLock
url, pair, op = sys.argv[1:4]
args, start = json.loads(sys.argv[4]), float(sys.argv[5])
lock = SharedLock(url, pair, timeout_s=2.0)
while time.time() < start:
    pass
t = time.monotonic()
try:
    r = getattr(lock, op)(*args)
    out = {"ok": True, "host": getattr(r, "host", None), "generation": getattr(r, "generation", None)}
except ArbiterError as e:
    out = {"ok": False, "error": str(e)}
out["took"] = time.monotonic() - t
print(json.dumps(out))
"""


def in_ns(url: str, pair: str, op: str, *args: object, start: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", NETNS, sys.executable, "-c", OP, url, pair,
                             op, json.dumps(list(args)), str(start)],
                            stdout=subprocess.PIPE, text=True, env={**os.environ,
                                                                    "PYTHONPATH": TREE})


def op(url: str, pair: str, name: str, *args: object) -> dict:
    p = in_ns(url, pair, name, *args)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 0, f"{name} crashed"
    return json.loads(out)


@pytest.fixture
def server(tmp_path):
    run("ip", "netns", "add", NETNS)
    try:
        run("ip", "-n", NETNS, "link", "set", "lo", "up")
        run("ip", "-n", NETNS, "addr", "add", f"{ADDRESS}/32", "dev", "lo")
        srv = NfsServer(NETNS, ADDRESS, tmp_path / "nfs")
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()
    finally:
        run("ip", "netns", "del", NETNS)


def test_exactly_one_winner_per_generation_over_nfs(server):
    url = server.url + "/lab"
    assert op(url, "p", "init")["ok"]                        # makes /lab/p on the server
    start = time.time() + 1.5                                # all 8 started, then race
    procs = [in_ns(url, "p", "claim", 1, f"h{i}", "race", start=start) for i in range(8)]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    winners = [r["host"] for r in results if r["ok"] and r["host"]]
    assert all(r["ok"] for r in results), results
    assert len(winners) == 1, results
    cur = op(url, "p", "current")
    assert (cur["host"], cur["generation"]) == (winners[0], 1)
    # on the server's disk: the record, and no claimant's temp file left behind
    assert sorted(os.listdir(server.export_dir / "lab" / "p")) == ["gen-1"]
    assert op(url, "p", "claim", 2, "h9", "next")["host"] == "h9"
    assert op(url, "p", "current")["generation"] == 2
    assert op(url, "p", "reset")["ok"] and op(url, "p", "current")["host"] is None


def test_a_stopped_server_is_an_error_not_a_hang(server):
    url = server.url + "/lab"
    assert op(url, "p", "init")["ok"]
    server.stop()
    r = op(url, "p", "claim", 1, "a", "x")
    assert not r["ok"] and "claiming generation 1 failed" in r["error"], r
    assert r["took"] < 2.5


def test_a_hung_server_is_an_error_within_the_deadline(server):
    url = server.url + "/lab"
    assert op(url, "p", "init")["ok"]
    server.signal(signal.SIGSTOP)
    try:
        r = op(url, "p", "current")
    finally:
        server.signal(signal.SIGCONT)
    assert not r["ok"] and "did not answer reading ownership within 2.0 s" in r["error"], r
    assert r["took"] < 2.5
    assert op(url, "p", "claim", 1, "a", "thawed")["host"] == "a"   # and it serves again


def test_a_missing_export_or_folder_is_named(server):
    r = op(f"nfs://{ADDRESS}/nowhere/lab", "p", "current")
    assert not r["ok"] and f"nfs://{ADDRESS}/nowhere" in r["error"], r
    r = op(server.url + "/lab", "p", "current")
    assert not r["ok"] and "lock folder missing" in r["error"], r
