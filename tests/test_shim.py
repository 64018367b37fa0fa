"""The recorder's LD_PRELOAD shim: its inbound kick refuses a QEMU that lacks what it needs."""
from __future__ import annotations

import os
import subprocess

from ftorch.gate import shim


def run_with_shim(argv: list[str], kick: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LD_PRELOAD": str(shim.build()), "FTORCH_KICK": kick}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_a_binary_without_qemus_symbols_is_refused_with_the_kick_on():
    p = run_with_shim(["/bin/true"], "1")
    assert p.returncode == 78
    assert "does not export replay_mode" in p.stderr and "inbound_kick: false" in p.stderr
    assert run_with_shim(["/bin/true"], "0").returncode == 0


def test_qemu_starts_with_the_kick_on():
    p = run_with_shim(["/usr/bin/qemu-system-x86_64", "--version"], "1")
    assert p.returncode == 0 and p.stdout.startswith("QEMU emulator version 10.0")
