"""The recorder's LD_PRELOAD shim: its inbound kick refuses a QEMU that lacks what it needs."""
from __future__ import annotations

import os
import shutil
import subprocess

from ftorch.gate import shim


def run_with_shim(argv: list[str], kick: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LD_PRELOAD": str(shim.build()), "FTORCH_KICK": kick}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_a_qemu_without_the_symbols_is_refused_with_the_kick_on(tmp_path):
    fake = tmp_path / "qemu-system-x86_64"      # a QEMU by name, without QEMU's exports
    shutil.copy("/bin/true", fake)
    p = run_with_shim([str(fake)], "1")
    assert p.returncode == 78
    assert "does not export replay_mode" in p.stderr and "inbound_kick: false" in p.stderr
    assert run_with_shim([str(fake)], "0").returncode == 0


def test_other_processes_on_the_way_to_qemu_are_left_alone(tmp_path):
    assert run_with_shim(["/bin/true"], "1").returncode == 0
    wrapper = tmp_path / "qemu-wrapper"          # how a host may point at its QEMU
    wrapper.write_text('#!/bin/sh\nexec /usr/bin/qemu-system-x86_64 "$@"\n')
    wrapper.chmod(0o755)
    p = run_with_shim([str(wrapper), "--version"], "1")
    assert p.returncode == 0 and p.stdout.startswith("QEMU emulator version 10.0")


def test_qemu_starts_with_the_kick_on():
    p = run_with_shim(["/usr/bin/qemu-system-x86_64", "--version"], "1")
    assert p.returncode == 0 and p.stdout.startswith("QEMU emulator version 10.0")
