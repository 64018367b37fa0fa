"""Waiting on a condition with a deadline, the one way every operation waits."""
from __future__ import annotations

import time
from collections.abc import Callable

from ftorch.errors import FtorchError


def wait_for(cond: Callable[[], bool], timeout: float, what: str | Callable[[], str],
             every: float = 0.2) -> None:
    """Poll cond until it holds; raise FtorchError naming `what` after timeout seconds (a
    callable `what` is asked then, so the error can say what cond saw last)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise FtorchError(f"timed out after {timeout:.0f} s waiting for {said}")
        time.sleep(every)
