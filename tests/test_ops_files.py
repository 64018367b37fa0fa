"""The Prometheus files real users copy (ops/prometheus/) are valid, and every alert and
recording rule behaves as its unit tests say (promtool, from Debian's prometheus package)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

OPS = Path(__file__).resolve().parents[1] / "ops" / "prometheus"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool missing: install Debian's prometheus (`make setup`)", pytrace=False)
    p = subprocess.run([tool, *args], cwd=OPS, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"promtool {' '.join(args)}:\n{p.stdout}{p.stderr}"
    return p.stdout + p.stderr


def test_the_scrape_config_and_its_rules_are_valid():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "rules", *map(str, sorted(OPS.glob("rules/*.yml"))))


def test_the_alert_and_recording_rules_pass_their_unit_tests():
    assert "SUCCESS" in promtool("test", "rules", "tests/ftorch_test.yml")
