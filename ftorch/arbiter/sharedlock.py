"""Test-and-set with a growing generation on a shared path, using only what NFS guarantees.

A claim of generation N writes the record to a private temp file, then `link()`s it to `gen-N`.
link() is atomic and fails if `gen-N` exists: exactly one claimant wins each generation. On NFS
a lost reply can make a successful link() look failed (or the retry fail with EEXIST), so the
winner is decided by the temp file's link count, as nfs(5) recommends for lock files. Every
operation runs under a deadline: a hung mount means "cannot confirm", never a hung agent.
"""
from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ftorch.arbiter.rules import ArbiterError, Ownership, decode

GEN_RE = re.compile(r"^gen-(\d+)$")
T = TypeVar("T")


class SharedLock:
    def __init__(self, root: Path, pair: str, timeout_s: float = 2.0) -> None:
        self.dir = root / pair
        self.pair = pair
        self.timeout_s = timeout_s

    def _io(self, fn: Callable[[], T], what: str) -> T:
        """Run fn with a deadline; map OS errors and hangs to ArbiterError.

        A thread per call (not a pool): a call stuck on a dead mount leaks only its own thread,
        and it stays correct in forked children."""
        box: dict[str, object] = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # handed to the caller below
                box["error"] = e

        t = threading.Thread(target=run, name="sharedlock", daemon=True)
        t.start()
        t.join(self.timeout_s)
        if t.is_alive():
            raise ArbiterError(f"shared path {self.dir} did not answer {what} within "
                               f"{self.timeout_s} s (mount hung or unreachable)")
        err = box.get("error")
        if isinstance(err, OSError):
            raise ArbiterError(f"shared path {self.dir}: {what} failed: {err.strerror or err}")
        if isinstance(err, BaseException):
            raise err
        return box["value"]  # type: ignore[return-value]

    def _generations(self) -> list[int]:
        return sorted(int(m.group(1)) for name in os.listdir(self.dir) if (m := GEN_RE.match(name)))

    def current(self) -> Ownership | None:
        """The newest ownership record, or None if the pair was never claimed."""
        def read() -> Ownership | None:
            if not self.dir.is_dir():
                raise FileNotFoundError(2, "lock folder missing (run `ftorch up` to create it)")
            gens = self._generations()
            if not gens:
                return None
            path = self.dir / f"gen-{gens[-1]}"
            return decode(path.read_bytes(), self.pair, gens[-1], str(path))
        return self._io(read, "reading ownership")

    def init(self) -> None:
        """Create the pair's lock folder (idempotent)."""
        self._io(lambda: self.dir.mkdir(parents=True, exist_ok=True), "creating the lock folder")

    def claim(self, generation: int, host: str, reason: str) -> Ownership | None:
        """Try to become owner at `generation`; the record if this host won, None if it lost."""
        rec = Ownership(self.pair, generation, host, time.time(), reason)

        def attempt() -> bool:
            tmp = self.dir / f".claim-{generation}-{host}-{os.getpid()}"
            tmp.write_bytes(rec.encode())  # close() flushes it to the server (close-to-open)
            try:
                try:
                    os.link(tmp, self.dir / f"gen-{generation}")
                except FileExistsError:
                    pass
                return os.stat(tmp).st_nlink == 2
            finally:
                tmp.unlink()
        return rec if self._io(attempt, f"claiming generation {generation}") else None
