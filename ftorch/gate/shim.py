"""Build (once, cached by source hash) the LD_PRELOAD log-flush shim for recording QEMUs."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from ftorch.errors import FtorchError
from ftorch.host.proc import run

SOURCE = Path(__file__).with_name("shim") / "flushshim.c"
LIB_DIR = Path("/var/lib/ftorch/lib")


def target() -> Path:
    """Where this source's compiled shim lives."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    return LIB_DIR / f"flushshim-{digest}.so"


def build() -> Path:
    """Path of the compiled shim, compiling it if this source was never built here."""
    out = target()
    if not out.exists():
        LIB_DIR.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        run("gcc", "-O2", "-Wall", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE),
            "-ldl", "-lpthread", error=FtorchError)
        tmp.chmod(0o755)
        tmp.rename(out)
    return out


def main() -> None:
    """`python -m ftorch.gate.shim`: build the shim now (provisioning); says whether it did."""
    existed = target().exists()
    try:
        path = build()
    except FtorchError as e:
        sys.exit(f"ftorch: cannot build the log-flush shim: {e}")
    print(f"{'present' if existed else 'built'} {path}")


if __name__ == "__main__":
    main()
