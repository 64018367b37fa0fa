"""The guest handle's two answers that must not depend on libvirtd being up: whether its QEMU
still runs (the kernel says, through a pidfd), and its domain found again on a new connection
after libvirtd restarted."""
import os
import subprocess

import libvirt
import pytest

from ftorch.host.virt import Guest


def bare_guest(pid_of) -> Guest:
    g = Guest.__new__(Guest)
    g.name, g.frozen, g._proc, g._host = "ftorch-kv-a", False, None, None
    g._pidfd = pid_of
    return g


def test_a_running_qemu_is_not_exited_and_a_killed_one_is():
    p = subprocess.Popen(["sleep", "60"])
    g = bare_guest(lambda: os.pidfd_open(p.pid))
    try:
        assert not g.exited()
        p.kill()
        p.wait()
        assert g.exited()
    finally:
        p.kill()
        p.wait()


def test_no_pid_file_means_exited():
    assert bare_guest(lambda: None).exited()


class Dom:
    def __init__(self, alive: bool, fail: bool) -> None:
        self.alive, self.fail, self.calls = alive, fail, 0

    def name(self) -> str:
        return "ftorch-kv-a"

    def connect(self):
        return self

    def isAlive(self) -> int:   # noqa: N802 (libvirt's name)
        return int(self.alive)

    def state(self):
        self.calls += 1
        if self.fail:
            raise libvirt.libvirtError("End of file while reading data: Input/output error")
        return (libvirt.VIR_DOMAIN_RUNNING, 1)


class Host:
    def __init__(self, new: Dom) -> None:
        self.new = new

    def conn(self):
        return self

    def lookupByName(self, name: str) -> Dom:   # noqa: N802
        return self.new


def test_a_call_on_a_dead_connection_is_made_again_on_a_new_one():
    new = Dom(alive=True, fail=False)
    g = Guest(Dom(alive=False, fail=True), Host(new))
    assert g.run_state() == "running" and new.calls == 1 and g._dom is new


def test_a_failure_on_a_live_connection_is_not_retried():
    old = Dom(alive=True, fail=True)
    g = Guest(old, Host(Dom(alive=True, fail=False)))
    with pytest.raises(Exception, match="cannot read its state"):
        g.run_state()
    assert old.calls == 1 and g._dom is old
