"""Agent control socket: one JSON request line, one JSON reply line, over a unix socket that
only root on this host can open; other hosts and the operator reach it through `ftorch-host`
over SSH (rpc/serve.py)."""
from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftorch.errors import FtorchError

log = logging.getLogger("ftorch.control")
Handler = Callable[[dict[str, Any]], dict[str, Any]]
MAX_REQUEST = 64 << 10   # a command line is a few hundred bytes; nothing legitimate is larger


def _request(line: bytes) -> dict[str, Any]:
    """One request line as a command, or FtorchError saying what is wrong with it."""
    if len(line) > MAX_REQUEST:
        raise FtorchError(f"request refused: over {MAX_REQUEST} bytes")
    try:
        req = json.loads(line)
    except ValueError:
        raise FtorchError("request refused: not a JSON line") from None
    if not isinstance(req, dict) or not isinstance(req.get("cmd"), str):
        raise FtorchError("request refused: a JSON object with a string `cmd` is expected")
    return req


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        if path.exists():
            path.unlink()

        class _H(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    reply = {"ok": True, **handler(_request(self.rfile.readline(MAX_REQUEST + 1)))}
                except FtorchError as e:
                    reply = {"ok": False, "error": str(e)}
                except Exception as e:  # the socket must answer, whatever broke
                    log.exception("control command failed")
                    reply = {"ok": False, "error": f"internal error: {e!r}"}
                self.wfile.write(json.dumps(reply).encode() + b"\n")

        old = os.umask(0o077)   # only root (the agent's user) may connect, from the start
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(path), _H)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="control", daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
