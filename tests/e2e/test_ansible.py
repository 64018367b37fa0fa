"""The Ansible role, for real on this machine (`connection: local`): lint, syntax, two runs of
which the second changes nothing, and what it installed checked by the tools that own it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ANSIBLE = Path(__file__).resolve().parents[2] / "ansible"
UNIT = Path("/etc/systemd/system/ftorch-agent@.service")


def run(*cmd: str, timeout: float = 1200) -> str:
    p = subprocess.run(cmd, cwd=ANSIBLE, capture_output=True, text=True, timeout=timeout,
                       env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                            "HOME": "/root", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    assert p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-4000:]}{p.stderr[-2000:]}"
    return p.stdout


def recap(out: str) -> dict[str, int]:
    line = re.search(r"^localhost\s+:\s+(.*)$", out, re.M)
    assert line, out[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def test_the_playbook_is_valid_and_lint_clean():
    run("ansible-playbook", "-i", "inventory/example/hosts.yml", "site.yml", "--syntax-check")
    run("ansible-lint", "--nocolor", "site.yml")


def test_the_role_provisions_this_machine_and_a_second_run_changes_nothing():
    first = recap(run("ansible-playbook", "-i", "inventory/ci/hosts.yml", "site.yml"))
    assert first["failed"] == 0 and first["unreachable"] == 0
    second = recap(run("ansible-playbook", "-i", "inventory/ci/hosts.yml", "site.yml"))
    assert (second["changed"], second["failed"]) == (0, 0), second
    # what needs systemd as PID 1 (starting the agent) is checked by systemd's own verifier,
    # on an instance named as ftorch-host names it
    run("systemd-analyze", "verify", str(UNIT.with_name("ftorch-agent@var-lib-ftorch-demo.service")))
    assert "[Install]" not in UNIT.read_text()          # never started at boot
    # the firewall rules load into Debian's ruleset, the commands run, the shim is built
    run("nft", "-c", "-f", "/etc/nftables.conf")
    assert "--role" in run("/usr/local/bin/ftorch", "agent", "run", "--help")
    out = subprocess.run(["/usr/local/bin/ftorch-host"], input="{}\n", capture_output=True,
                         text=True, timeout=60)
    assert "usage" in out.stdout + out.stderr
    assert run("/opt/ftorch/venv/bin/python", "-m", "ftorch.gate.shim").startswith("present ")
