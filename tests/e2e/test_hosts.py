"""The host boundary for real: the CLI reaches each host's agent only over SSH (sshd in the host
namespaces), refuses hosts it cannot trust, says which host does not answer and why, and ships
images without their holes."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from ftorch.config import load
from ftorch.host import lab, labssh
from ftorch.rpc.hosts import Hosts

from .lab_helpers import ftorch, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def lab_up(tmp_path):
    lab.up()
    try:
        yield write_config(tmp_path, "hb")
    finally:
        lab.down()   # also puts back the keys and known_hosts a test changed (next lab up)


def _keys_and_domains_untouched(cfg_path: Path) -> None:
    """Nothing of the pair was started on either host."""
    cfg = load(cfg_path)
    for key in ("a", "b"):
        assert not (cfg.host(key).path / cfg.pair / "agent.pid").exists(), f"host {key} started"


def test_status_names_the_host_that_does_not_answer_and_why(lab_up):
    cfg_path = lab_up
    r = ftorch("status", str(cfg_path), check=False)
    assert r.returncode == 4
    assert "host a (root@10.77.1.1:22): agent not running" in r.stderr
    assert "host b (root@10.77.1.2:22): agent not running" in r.stderr
    labssh.stop_sshd("b")
    r = ftorch("status", str(cfg_path), "--json", check=False)
    assert r.returncode == 4
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2 and "host b (root@10.77.1.2:22): SSH connection refused" in lines[1]
    assert yaml.safe_load(r.stdout)["hosts"]["b"]["role"] == "unreachable"
    r = ftorch("up", str(cfg_path), check=False)
    assert r.returncode == 4 and "host b" in r.stderr and "SSH connection refused" in r.stderr
    _keys_and_domains_untouched(cfg_path)
    r = ftorch("logs", str(cfg_path), "a", check=False)   # the pair never ran there
    assert r.returncode == 1 and "host a (root@10.77.1.1:22): cannot read" in r.stderr
    assert "hb/agent.log" in r.stderr


def test_with_the_lab_down_status_says_to_bring_it_up(tmp_path):
    lab.down()
    r = ftorch("status", str(write_config(tmp_path, "hb")), check=False)
    assert r.returncode == 4
    assert "network namespace ftorch-ops missing" in r.stderr and "ftorch lab up" in r.stderr


def test_a_changed_host_key_is_refused_and_nothing_starts(lab_up):
    cfg_path = lab_up
    known = labssh.OPERATOR_DIR / "known_hosts"
    lines = known.read_text().splitlines()
    # host b now presents a key other than the one on record: host a's, as an impostor would
    key_a = lines[0].split(" ", 1)[1]
    known.write_text(f"{lines[0]}\n10.77.1.2 {key_a}\n")
    r = ftorch("up", str(cfg_path), check=False)
    assert r.returncode == 4, r.stderr
    assert "host b (root@10.77.1.2:22): host key mismatch" in r.stderr and "refused" in r.stderr
    known.write_text(f"{lines[0]}\n")   # host b not on record at all
    r = ftorch("status", str(cfg_path), check=False)
    assert r.returncode == 4 and "unknown host key: 10.77.1.2 is not in" in r.stderr
    _keys_and_domains_untouched(cfg_path)


def test_a_key_the_hosts_do_not_accept_is_refused(lab_up, tmp_path):
    cfg_path = lab_up
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)
    data = yaml.safe_load(cfg_path.read_text())
    data["ssh"]["identity"] = str(stranger)
    cfg_path.write_text(yaml.safe_dump(data))
    r = ftorch("up", str(cfg_path), check=False)
    assert r.returncode == 4 and f"SSH key {stranger} refused for user root" in r.stderr, r.stderr
    _keys_and_domains_untouched(cfg_path)


def test_exit_codes_for_a_bad_config_and_an_unsupported_qemu(lab_up, tmp_path):
    cfg_path = lab_up
    broken = tmp_path / "broken.yaml"
    broken.write_text("pair: x\nguest: [\n")
    r = ftorch("status", str(broken), check=False)
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    cfg = load(cfg_path)
    old = cfg.host("a").path / "old-qemu"
    old.write_text("#!/bin/sh\necho 'QEMU emulator version 9.2.4 (Debian 1:9.2.4+ds-1)'\n")
    old.chmod(0o755)
    data = yaml.safe_load(cfg_path.read_text())
    data["hosts"]["a"]["emulator"] = str(old)
    cfg_path.write_text(yaml.safe_dump(data))
    r = ftorch("up", str(cfg_path), check=False)
    assert r.returncode == 3 and "host a" in r.stderr and "QEMU 9.2.4 is not supported" in r.stderr
    _keys_and_domains_untouched(cfg_path)


def test_hosts_that_do_not_share_the_arbiters_storage_are_refused(lab_up):
    """A "shared" folder that only host A has (as if B's mount were missing): B cannot read
    the record A wrote, and nothing starts. The lab's NFS server is hidden from both hosts'
    files, and each reaches it only over the LAN."""
    cfg = load(lab_up)
    only_a = cfg.host("a").path / "arbiter"
    only_a.mkdir(exist_ok=True)
    data = yaml.safe_load(lab_up.read_text())
    data["shared_dir"] = str(only_a)
    lab_up.write_text(yaml.safe_dump(data))
    r = ftorch("up", str(lab_up), check=False)
    assert r.returncode == 1, r.stderr
    assert f"host b cannot read the arbiter's storage {only_a}" in r.stderr
    assert "does not exist (shared storage not mounted?)" in r.stderr
    _keys_and_domains_untouched(lab_up)
    with pytest.raises(Exception, match="No such file"):
        Hosts(cfg)("a").request("digest", path=str(lab.NFS.export_dir), ranges=[[0, 1]])


def test_hosts_see_only_their_own_folder_and_the_cli_sees_none(lab_up):
    cfg = load(lab_up)
    b_key = cfg.host("b").path / "ssh" / "id_ed25519"
    assert b_key.exists()   # it is there, seen from outside the lab
    with pytest.raises(Exception, match="No such file"):
        Hosts(cfg)("a").request("digest", path=str(b_key), ranges=[[0, 1]])
    with pytest.raises(Exception, match="No such file"):
        Hosts(cfg)("b").request("digest", path=str(labssh.OPERATOR_DIR / "id_ed25519"),
                                ranges=[[0, 1]])
    r = subprocess.run(labssh.operator_command(["cat", str(b_key)]), capture_output=True, text=True)
    assert r.returncode != 0 and "No such file" in r.stderr


def test_an_image_goes_over_ssh_without_its_holes_and_is_checked(lab_up, tmp_path):
    cfg = load(lab_up)
    src = tmp_path / "sparse.img"
    with open(src, "wb") as f:   # 64 MiB long, 3 MiB of data in three places
        for at in (0, 20 << 20, 63 << 20):
            f.seek(at)
            f.write(hashlib.sha256(str(at).encode()).digest() * (1 << 15))
        f.truncate(64 << 20)
    dst = cfg.host("b").path / "copy.img"
    progress: list[tuple[int, int]] = []
    sent = Hosts(cfg)("b").send_image(str(src), str(dst), lambda d, t: progress.append((d, t)))
    assert sent.data_bytes == 3 << 20 and progress[-1] == (3 << 20, 3 << 20)
    assert dst.read_bytes() == src.read_bytes()
    assert dst.stat().st_blocks * 512 <= (3 << 20) + (1 << 20), "the holes were filled"
    assert sent.sha256 == hashlib.sha256(b"".join(
        src.read_bytes()[at:at + (1 << 20)] for at in (0, 20 << 20, 63 << 20))).hexdigest()
    dst.unlink()
