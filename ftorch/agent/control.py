"""Agent control socket: one JSON request line, one JSON reply line, over a unix socket."""
from __future__ import annotations

import json
import logging
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftorch.errors import AgentUnreachable, FtorchError

log = logging.getLogger("ftorch.control")
Handler = Callable[[dict[str, Any]], dict[str, Any]]


def call(path: Path, cmd: str, timeout: float = 10.0, **args: Any) -> dict[str, Any]:
    """Send one command to the agent at path; raise AgentUnreachable or FtorchError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            line = s.makefile("rb").readline()
    except (OSError, TimeoutError) as e:
        raise AgentUnreachable(f"agent at {path} did not answer {cmd!r}: {e}") from None
    if not line:
        raise AgentUnreachable(f"agent at {path} closed the connection on {cmd!r}")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise FtorchError(reply.get("error", "agent error"))
    return reply


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        if path.exists():
            path.unlink()

        class _H(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    req = json.loads(self.rfile.readline())
                    reply = {"ok": True, **handler(req)}
                except FtorchError as e:
                    reply = {"ok": False, "error": str(e)}
                except Exception as e:  # the socket must answer, whatever broke
                    log.exception("control command failed")
                    reply = {"ok": False, "error": f"internal error: {e!r}"}
                self.wfile.write(json.dumps(reply).encode() + b"\n")

        self._server = socketserver.ThreadingUnixStreamServer(str(path), _H)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="control", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
