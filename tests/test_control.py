"""The agent's control socket: root only, one bounded JSON line per request."""
import json
import os
import socket
import stat

from ftorch.agent.control import MAX_REQUEST, ControlServer


def ask(path, raw: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(raw)
        return json.loads(s.makefile("rb").readline())


def test_only_root_can_open_it_and_bad_requests_are_refused(tmp_path):
    path = tmp_path / "agent.sock"
    server = ControlServer(path, lambda req: {"echo": req["cmd"]})
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert ask(path, b'{"cmd": "status"}\n') == {"ok": True, "echo": "status"}
        for raw, why in ((b"x" * (MAX_REQUEST + 10) + b"\n", "over 65536 bytes"),
                         (b"status\n", "not a JSON line"),
                         (b'["status"]\n', "a JSON object with a string `cmd`"),
                         (b'{"cmd": 3}\n', "a JSON object with a string `cmd`")):
            reply = ask(path, raw)
            assert reply["ok"] is False and why in reply["error"], (raw[:20], reply)
    finally:
        server.close()
