"""Running host commands with errors that name the command and its complaint."""
from __future__ import annotations

import subprocess

from ftorch.errors import FtorchError


def run(*cmd: str, error: type[FtorchError] = FtorchError, check: bool = True,
        input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run cmd; on failure raise `error` with the command and the first line of its stderr."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=input is None, input=input)
    except FileNotFoundError:
        raise error(f"{cmd[0]}: command not found (run `make setup`)") from None
    if check and p.returncode != 0:
        err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode(errors="replace")
        first = (err.strip().splitlines() or ["no error output"])[0]
        raise error(f"`{' '.join(cmd)}` failed ({p.returncode}): {first}")
    return p
