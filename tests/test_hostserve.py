"""The far side of host requests (`ftorch-host`): every bad request is an answer, not a crash."""
import json
import os
import subprocess
import sys

import pytest

from ftorch.rpc import serve
from ftorch.rpc.serve import MAX_REQUEST, handle


def test_unknown_or_malformed_requests_are_answered_with_a_usage_error():
    for raw in (b'{"op": "format-disk"}', b"[1, 2]", b"not json", b'{"op": "free"}',
                b'{"op": "free", "path": "/", "extra": 1}'):
        reply = handle(raw)
        assert reply["ok"] is False and reply["exit_code"] == 2, (raw, reply)


def test_an_agent_that_is_not_running_is_exit_4_naming_the_socket(tmp_path):
    reply = handle(json.dumps({"op": "agent", "socket_path": str(tmp_path / "agent.sock"),
                               "request": {"cmd": "status"}, "wait": 1}).encode())
    assert reply["exit_code"] == 4 and "agent not running" in reply["error"]
    assert str(tmp_path / "agent.sock") in reply["error"]


def test_a_frozen_agent_counts_as_there_and_a_dead_one_does_not(tmp_path, monkeypatch):
    """A host's agent that takes the connection and says nothing (SIGSTOPped, overloaded) may
    still run the pair: a re-protection must not clear its folder; one whose socket has no
    listener (killed) is gone."""
    import socket
    monkeypatch.setattr("ftorch.host.virt.Host.lookup", lambda self, name: None)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "agent.sock"))
        listener.listen(1)   # the kernel accepts for it; it never reads
        assert serve._probe(str(tmp_path), []) == {"agent": True, "domain": False}
    assert serve._probe(str(tmp_path), []) == {"agent": False, "domain": False}


def test_prepare_keeps_the_last_agent_log_and_empties_the_folder(tmp_path):
    d = tmp_path / "pair"
    d.mkdir()
    (d / "agent.log").write_text("why it ended\n")
    (d / "rr.log").write_text("old log")
    assert handle(json.dumps({"op": "prepare", "pair_dir": str(d)}).encode())["ok"]
    assert sorted(os.listdir(d)) == ["agent.log.1"]
    assert (d / "agent.log.1").read_text() == "why it ended\n"


def test_digest_covers_the_ranges_and_reports_the_allocation(tmp_path):
    f = tmp_path / "sparse"
    with open(f, "wb") as out:
        out.write(b"a" * 4096)
        out.truncate(1 << 20)
    r = handle(json.dumps({"op": "digest", "path": str(f), "ranges": [[0, 4096]]}).encode())
    import hashlib
    assert r["sha256"] == hashlib.sha256(b"a" * 4096).hexdigest()
    assert r["size"] == 1 << 20 and r["allocated"] < 1 << 20


def test_the_stream_answers_line_by_line_and_stops_at_an_oversized_request(tmp_path):
    reqs = (json.dumps({"op": "free", "path": str(tmp_path)}) + "\n") * 2
    reqs += "x" * (MAX_REQUEST + 10) + "\n" + json.dumps({"op": "free", "path": "/"}) + "\n"
    p = subprocess.run([sys.executable, "-m", "ftorch.rpc.serve"], input=reqs.encode(),
                       capture_output=True, timeout=30)
    replies = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r["ok"] for r in replies] == [True, True, False]
    assert replies[-1]["error"] == "request too large"


def test_under_systemd_the_agent_starts_as_an_instance_of_the_provisioned_unit(tmp_path,
                                                                               monkeypatch):
    import subprocess as sp
    unit, running, pair = tmp_path / "ftorch-agent@.service", tmp_path / "run-systemd", tmp_path / "p"
    unit.write_text("[Service]\n")
    running.mkdir()
    pair.mkdir()
    monkeypatch.setattr(serve, "AGENT_UNIT", unit)
    monkeypatch.setattr(serve, "SYSTEMD_RUNNING", running)
    calls = []

    def fake(cmd, **kw):
        calls.append(list(cmd))
        out = {"systemd-escape": "ftorch-agent@tmp-p.service\n", "systemctl": "4242\n"}[cmd[0]]
        return sp.CompletedProcess(cmd, 0, out, "")
    monkeypatch.setattr(serve.subprocess, "run", fake)
    got = serve._start_agent(str(pair / "pair.yaml"), "b", "backup", "protected", "unused")
    assert got == {"pid": 4242, "unit": "ftorch-agent@tmp-p.service"}
    assert (pair / "agent.env").read_text() == "FTORCH_HOST=b\nFTORCH_ROLE=backup\nFTORCH_MODE=protected\n"
    assert calls[0] == ["systemd-escape", "--path", "--template=ftorch-agent@.service", str(pair)]
    assert ["systemctl", "start", "ftorch-agent@tmp-p.service"] in calls
    with pytest.raises(serve.Refused, match="not a plain word"):
        serve.agent_env("b\nFTORCH_MODE=x", "backup", "protected")


def test_destroy_domain_removes_only_a_ram_file_of_ftorchs():
    for path in ("/etc/passwd", "/dev/shm/../etc/x", "/dev/shm/other.ram"):
        reply = handle(json.dumps({"op": "destroy-domain", "name": "ftorch-x-a",
                                   "ram_file": path}).encode())
        assert not reply["ok"] and reply["exit_code"] == 2 and path in reply["error"], reply
