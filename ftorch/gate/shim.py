"""Build (once, cached by source hash) the LD_PRELOAD log-flush shim for recording QEMUs."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ftorch.errors import FtorchError
from ftorch.host.proc import run

SOURCE = Path(__file__).with_name("shim") / "flushshim.c"
LIB_DIR = Path("/var/lib/ftorch/lib")


def build() -> Path:
    """Path of the compiled shim, compiling it if this source was never built here."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    out = LIB_DIR / f"flushshim-{digest}.so"
    if not out.exists():
        LIB_DIR.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        run("gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE),
            "-ldl", "-lpthread", error=FtorchError)
        tmp.chmod(0o755)
        tmp.rename(out)
    return out
