"""A named daemon thread with a stop flag: the shape of every long-running agent component."""
from __future__ import annotations

import threading


class Worker:
    """Subclasses implement `_run`, checking `self._stop`; `_wake` unblocks a waiting `_run`."""

    thread_name = "worker"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Idempotent, and safe on a worker that was never started."""
        self._stop.set()
        self._wake()
        if self._thread.ident is not None:
            self._thread.join(timeout=timeout)

    def _wake(self) -> None:
        """Override when `_run` blocks on something other than `self._stop`."""

    def _run(self) -> None:
        raise NotImplementedError
