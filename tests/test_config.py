from pathlib import Path

import pytest
import yaml

from ftorch.config import load, parse
from ftorch.errors import ConfigError, VersionError
from ftorch.host.virt import check_qemu_version

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/lab.yaml"


def base() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_config_loads():
    cfg = load(EXAMPLE)
    assert cfg.pair == "demo" and cfg.host("b").address == "10.77.0.2"
    assert cfg.peer("a") == "b" and cfg.channel.port == 7400
    assert cfg.host("b").ssh_address == "10.77.1.2" and cfg.host("b").ssh.user == "root"
    assert not cfg.debug.faults and "pair: demo" in cfg.text
    assert cfg.shared_dir == "nfs://10.77.0.50/ftorch/lab"


def test_two_real_hosts_example_loads():
    cfg = load(EXAMPLE.with_name("two-hosts.yaml"))
    assert cfg.host("a").ssh_address == "198.51.100.11" and cfg.host("a").address == "192.0.2.11"
    assert cfg.ssh.netns == "" and cfg.ssh.agent_identity.startswith("/")


def test_ssh_defaults_to_the_lan_address():
    data = base()
    del data["hosts"]["a"]["ssh"]
    h = parse(data).host("a")
    assert h.ssh_address == h.address and (h.ssh.port, h.ssh.user) == (22, "root")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("guest"), r"^guest: required field is missing$"),
    (lambda d: d["guest"].pop("ip"), r"^guest\.ip: required field is missing$"),
    (lambda d: d["guest"].update(ip="10.77.0.10"), r"guest\.ip: .* needs a prefix length"),
    (lambda d: d["guest"].update(memory_mib="lots"), r"guest\.memory_mib: expected int"),
    (lambda d: d["guest"].update(mac="00:11:22:33:44:55"), r"guest\.mac: .*52:54:00"),
    (lambda d: d["hosts"].pop("b"), r"hosts: needs exactly the two hosts"),
    (lambda d: d["hosts"]["a"].update(address="host-a"), r"hosts\.a\.address: 'host-a' is not"),
    (lambda d: d["hosts"]["a"].update(dir="relative"), r"hosts\.a\.dir: must be an absolute"),
    (lambda d: d["channel"].update(port=70000), r"channel\.port: 70000 is not a TCP port"),
    (lambda d: d["channel"].update(timeout_s=0.1), r"channel\.timeout_s: .* at least 3 heartbeats"),
    (lambda d: d["channel"].update(colour="red"), r"channel\.colour: unknown field"),
    (lambda d: d.update(pair="Demo Pair"), r"^pair: 'Demo Pair' must be lowercase"),
    (lambda d: d.update(extra=1), r"^extra: unknown top-level field"),
    (lambda d: d["replay"].update(margin_instructions=-5), r"replay\.margin_instructions: must be positive"),
    (lambda d: d.update(lag={"bound_s": 0}), r"lag\.bound_s: must be positive"),
    (lambda d: d.update(lag={"max_hold_s": -1}), r"lag\.max_hold_s: must be positive"),
    (lambda d: d.update(lag={"max_slowdown": 1.0}), r"lag\.max_slowdown must be above 0 and below 1"),
    (lambda d: d["hosts"]["b"].update(address="10.77.0.1"),
     r"hosts\.a and hosts\.b have one address \(10\.77\.0\.1\): primary and backup must run"),
    (lambda d: d["hosts"]["b"].update(name="host-a"), r"have one name \(host-a\)"),
    (lambda d: d.update(replay={"icount_shift": "11"}), r"replay\.icount_shift: \"auto\" or a"),
    (lambda d: d["hosts"]["b"]["ssh"].update(address="10.77.1.1"), r"have one SSH address"),
    (lambda d: d.update(lag={"hold": True}), r"lag\.hold: unknown field"),
    (lambda d: d["hosts"]["a"]["ssh"].update(port=0), r"hosts\.a\.ssh\.port: 0 is not a TCP port"),
    (lambda d: d["hosts"]["a"]["ssh"].update(address="mgmt-a"), r"hosts\.a\.ssh\.address: 'mgmt-a'"),
    (lambda d: d["hosts"]["b"].update(ssh="root@b"), r"hosts\.b\.ssh: expected a mapping"),
    (lambda d: d["hosts"]["b"]["ssh"].update(key="k"), r"hosts\.b\.ssh\.key: unknown field"),
    (lambda d: d["ssh"].update(connect_timeout_s=0), r"ssh\.connect_timeout_s: must be positive"),
    (lambda d: d.update(debug={"faults": "yes"}), r"debug\.faults: expected true or false"),
    (lambda d: d.update(shared_dir="arbiter"), r"shared_dir: must be an absolute path .* or nfs://"),
    (lambda d: d.update(shared_dir="nfs://10.77.0.50"), r"shared_dir: .* no export named"),
    (lambda d: d.update(shared_dir="nfs:///ftorch"), r"shared_dir: .* expected nfs://SERVER"),
    (lambda d: d.update(shared_dir="nfs://s:2050/x"), r"shared_dir: .* ports .* not supported"),
    (lambda d: d.update(shared_dir="nfs://s/x/../y"), r"shared_dir: .* no export named"),
])
def test_config_errors_name_the_field(mutate, message):
    data = base()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        parse(data)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pair: demo\nguest: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load(bad)


def test_qemu_version_check():
    assert check_qemu_version({"qemu": {"major": 10, "minor": 0, "micro": 2}}) == "10.0.2"
    with pytest.raises(VersionError, match="QEMU 7.2.0 is not supported.*bookworm-backports"):
        check_qemu_version({"qemu": {"major": 7, "minor": 2, "micro": 0}})


def test_qemu_version_is_read_from_the_hosts_emulator(tmp_path):
    from ftorch.host.virt import check_emulator, parse_qemu_version
    out = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
    assert parse_qemu_version(out) == {"qemu": {"major": 10, "minor": 0, "micro": 2}}
    fake = tmp_path / "qemu-old"
    fake.write_text("#!/bin/sh\necho 'QEMU emulator version 9.2.4 (Debian)'\n")
    fake.chmod(0o755)
    with pytest.raises(VersionError, match=r"host b: .*qemu-old: QEMU 9\.2\.4 is not supported"):
        check_emulator(str(fake), "b")
    with pytest.raises(VersionError, match="host b: cannot run QEMU /nonexistent"):
        check_emulator("/nonexistent", "b")
    assert check_emulator("/usr/bin/qemu-system-x86_64", "a").startswith("10.0.")


def test_the_inbound_kick_needs_qemus_exported_symbols(tmp_path):
    from ftorch.host.virt import KICK_SYMBOLS, _missing_symbols
    assert _missing_symbols("/usr/bin/qemu-system-x86_64", KICK_SYMBOLS) == []
    assert _missing_symbols("/bin/true", KICK_SYMBOLS) == list(KICK_SYMBOLS)
    script = tmp_path / "qemu-wrapper"   # a wrapper: the shim checks the real binary at load
    script.write_text("#!/bin/sh\nexec /usr/bin/qemu-system-x86_64 \"$@\"\n")
    assert _missing_symbols(str(script), KICK_SYMBOLS) == []
