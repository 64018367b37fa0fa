"""Re-protection for real: clone a running guest into a new backup (`ftorch protect`), and
protect again automatically after every failover, while one client keeps one TCP connection."""
from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from ftorch.config import PairConfig, load
from ftorch.host import lab
from ftorch.host.layout import domain_names, paths
from ftorch.host.virt import Host
from ftorch.ops import pair

from .lab_helpers import Client, ftorch, running_pair, side, small_disk, status, wait_until, write_config

pytestmark = pytest.mark.e2e


@contextmanager
def unprotected_pair(cfg_path: Path) -> Iterator[PairConfig]:
    cfg = load(cfg_path)
    try:
        lab.up()
        ftorch("up", str(cfg_path), "--unprotected")
        yield cfg
    finally:
        ftorch("down", str(cfg_path), "--force", check=False)
        for key in ("a", "b"):
            for name in domain_names(cfg, key):
                Host().destroy(name)
        lab.down()


def protected_by(cfg_path: Path, live: str, timeout: float = 300) -> dict:
    """Wait until host `live` is a protected primary and its peer a backup past the clone."""
    peer = "b" if live == "a" else "a"

    def ok():
        p, b = side(cfg_path, live), side(cfg_path, peer)
        return pair.protected(p, b) and (p, b)
    return wait_until(ok, timeout, f"host {live} to be protected by host {peer}")


def test_no_room_on_the_backup_host_rolls_back_and_the_guest_runs_on(tmp_path):
    cfg_path = write_config(tmp_path, "pr", failover={"enabled": True, "reprotect": False})
    host_dir = load(cfg_path).host("b").path
    with small_disk(host_dir, 40):
        with unprotected_pair(cfg_path):
            client = Client(tmp_path / "full.json", duration=40, prefix="d", verify=True)
            wait_until(lambda: side(cfg_path, "a").primary.gate.released > 50, 120,
                       "the client to write")
            r = ftorch("protect", str(cfg_path), check=False, timeout=600)
            assert r.returncode == 1 and "no room for the clone" in r.stderr, r.stderr
            a = side(cfg_path, "a")
            assert (a.role, a.mode, a.primary.gate.open) == ("primary", "unprotected", True)
            assert side(cfg_path, "b").role == "unreachable"     # the standby quit
            out = client.result(timeout=300)
            assert out["errors"] == [] and out["mismatches"] == [], "the running guest was harmed"


def _refused(cfg_path: Path, cause: str) -> None:
    """`ftorch protect` fails naming the cause; the guest runs on unprotected, the standby quits."""
    r = ftorch("protect", str(cfg_path), check=False, timeout=600)
    assert r.returncode == 1 and cause in r.stderr, r.stderr
    a = side(cfg_path, "a")
    assert (a.role, a.mode, a.primary.gate.open) == ("primary", "unprotected", True)
    wait_until(lambda: side(cfg_path, "b").role == "unreachable", 60, "the standby to quit")


def _versioned_emulator(host_dir: Path) -> tuple[Path, Path]:
    """An emulator on the host that answers `--version` as QEMU 9.2.4 while a marker file
    exists there, and is the real QEMU otherwise (libvirt runs it as the domain's emulator)."""
    host_dir.mkdir(parents=True, exist_ok=True)
    wrapper, marker = host_dir / "qemu-wrapper", host_dir / "pretend-qemu-9.2"
    wrapper.write_text(f"""#!/bin/sh
if [ -e {marker} ]; then echo 'QEMU emulator version 9.2.4 (Debian 1:9.2.4+ds-1)'; exit 0; fi
exec /usr/bin/qemu-system-x86_64 "$@"
""")
    wrapper.chmod(0o755)
    return wrapper, marker


def test_bad_clones_are_refused_then_a_good_one_protects_and_takes_over(tmp_path):
    cfg_path = write_config(tmp_path, "pr", failover={"enabled": True, "reprotect": False})
    wrapper, marker = _versioned_emulator(load(cfg_path).host("b").path)
    data = yaml.safe_load(cfg_path.read_text())
    data["hosts"]["b"]["emulator"] = str(wrapper)
    cfg_path.write_text(yaml.safe_dump(data))
    with unprotected_pair(cfg_path) as cfg:
        client = Client(tmp_path / "pr.json", duration=900, prefix="p", verify=True)
        wait_until(lambda: side(cfg_path, "a").primary.gate.released > 100, 120, "the client to write")
        ftorch("debug", "clone-fault", str(cfg_path), "missing-snapshot")
        _refused(cfg_path, "with a VM state")
        ftorch("debug", "clone-fault", str(cfg_path), "mismatched-snapshot")
        _refused(cfg_path, "wrong image")
        ftorch("debug", "clone-fault", str(cfg_path), "short-ram")
        _refused(cfg_path, "wrong file")
        marker.touch()   # host B's QEMU is now of another version
        try:
            _refused(cfg_path, "QEMU 9.2.4 is not supported")
        finally:
            marker.unlink()

        # the good clone goes the slow way, without a recorder waiting beside the guest: the
        # failover below proves that its backup replays too (every clone above had one)
        ftorch("debug", "clone-fault", str(cfg_path), "no-standby")
        res = json.loads(ftorch("protect", str(cfg_path), "--json", timeout=900).stdout)
        assert res["peer"] == "b" and res["pause_s"] < 5
        assert res["clone_via"] == "restart" and res["ram_bytes"] > 1 << 20
        # the image went over SSH without its holes and was checked there (send_image)
        assert len(res["image_sha256"]) == 64 and res["image_bytes"] > 1 << 20
        assert paths(cfg, "b").disk.stat().st_blocks * 512 <= res["image_bytes"] + (16 << 20), \
            "the copy on host B occupies more than the data sent: its holes were filled"
        p, b = protected_by(cfg_path, "a")
        assert b.backup.start_icount == res["icount"]
        pair.wait_caught_up(cfg, timeout=300)
        lab.kill_host(paths(cfg, "a").pid, domain_names(cfg, "a"))
        b = wait_until(lambda: (s := side(cfg_path, "b")).role in ("live-alone", "fenced")
                       and s, 180, "host B to go live")
        assert b.role == "live-alone", b.failover
        wait_until(lambda: side(cfg_path, "b").primary.net.frames_out > 10, 120,
                   "the guest to answer from host B")
        out = client.finish(timeout=600)
        assert out["errors"] == [] and out["mismatches"] == [], "the running guest was harmed"
        print(f"protect: paused {res['pause_s'] * 1e3:.0f} ms ({res['pause_steps']}), copy "
              f"{res['copy_s']:.2f} s, protected after {res['passed_s']:.2f} s; failover to the "
              f"clone: {len(out['acked'])} records intact")


def test_three_failovers_with_reprotection_keep_every_record(tmp_path):
    cfg_path = write_config(tmp_path, "rp", failover={"enabled": True, "reprotect": True,
                                                      "reprotect_interval_s": 2})
    with running_pair(cfg_path) as cfg:
        pair.wait_caught_up(cfg, timeout=300)
        client = Client(tmp_path / "rp.json", duration=1200, prefix="r", verify=True)
        wait_until(lambda: side(cfg_path, "a").primary.gate.released > 50, 120, "the client to write")
        live, times = "a", []
        for n in range(3):                      # A -> B -> A -> B
            peer = "b" if live == "a" else "a"
            if n:
                protected_by(cfg_path, live, timeout=150)
                # the clone moved the guest into the recorder waiting beside it (the short pause)
                assert side(cfg_path, live).reprotect.via == "standby"
                pair.wait_caught_up(cfg, timeout=300)
            lab.kill_host(paths(cfg, live).pid, domain_names(cfg, live))
            s = wait_until(lambda p=peer: (x := side(cfg_path, p)).role in
                           ("live-alone", "fenced") and x, 180, f"host {peer} to go live")
            assert s.role == "live-alone", s.failover
            assert s.failover.generation == n + 2
            times.append(s.failover)
            live = peer
        wait_until(lambda p=live: side(cfg_path, p).primary.net.frames_out > 10, 120,
                   f"the guest to answer from host {live}")
        out = client.finish(timeout=900)
        assert out["errors"] == [], "the client's connection broke"
        assert out["mismatches"] == [], "an acknowledged record is missing or changed"
        print(f"three failovers, {len(out['acked'])} records intact; generations "
              f"{[t.generation for t in times]}; status {status(cfg_path).hosts[live].role}")
