"""Standby recorders (agent/standby.py) against a fake libvirt host: who gets the waiting
recorder, and what happens when it refuses a state."""
import threading
from pathlib import Path

import pytest

from ftorch.agent import standby
from ftorch.config import load
from ftorch.errors import FtorchError, VirtError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "lab.yaml"


class FakeGuest:
    def __init__(self, name: str, refuses: bool = False) -> None:
        self.name, self.refuses = name, refuses
        self.active, self.shared, self.loaded = True, [], b""

    def is_active(self) -> bool:
        return self.active

    def destroy(self) -> None:
        self.active = False

    def share_ram(self, shared: bool) -> None:
        self.shared.append(shared)

    def load_state(self, sock: str, chunks, timeout: float) -> None:
        if self.refuses:
            raise VirtError(f"{self.name}: the VM state did not load")
        self.loaded = b"".join(chunks)


class FakeHost:
    def __init__(self, refuse: bool = False, fail_start: bool = False) -> None:
        self.started: list[FakeGuest] = []
        self.refuse, self.fail_start = refuse, fail_start
        self.gate = threading.Event()
        self.gate.set()

    def start(self, xml: str, paused: bool = False) -> FakeGuest:
        self.gate.wait(5)
        if self.fail_start:
            raise VirtError("libvirt refused to start the domain: no")
        assert paused and "<qemu:arg value=\"-incoming\"/>" in xml
        name = xml.split("<name>")[1].split("</name>")[0]
        self.started.append(FakeGuest(name, self.refuse))
        return self.started[-1]

    def wait_gone(self, name: str, timeout: float) -> bool:
        return True


@pytest.fixture(autouse=True)
def no_shim(monkeypatch):
    monkeypatch.setattr(standby, "build_shim", lambda: Path("/shim.so"))


def test_a_spare_waits_in_the_other_slot_and_is_taken_once():
    cfg, host = load(EXAMPLE), FakeHost()
    spare = standby.Spare(cfg, "a", host, slot=True)
    spare.start()
    guest = spare.take(timeout=5)
    assert guest is not None and guest.name.endswith("-a-standby")
    assert spare.take(timeout=0) is None     # taken: nobody else gets it
    spare.close()
    assert guest.active                      # the taker owns it now


def test_a_spare_closed_while_it_starts_is_destroyed_when_it_comes_up():
    cfg, host = load(EXAMPLE), FakeHost()
    host.gate.clear()                        # libvirt is slow to start it
    spare = standby.Spare(cfg, "a", host, slot=False)
    spare.start()
    spare.close()
    host.gate.set()
    spare._thread.join(5)
    assert len(host.started) == 1 and not host.started[0].active


def test_a_spare_that_cannot_start_says_why_and_none_is_taken():
    cfg = load(EXAMPLE)
    spare = standby.Spare(cfg, "a", FakeHost(fail_start=True), slot=True)
    spare.start()
    assert spare.take(timeout=5) is None and "refused to start" in spare.error


def test_a_lean_state_goes_into_the_waiting_recorder_with_the_capability_around_the_load():
    cfg, host = load(EXAMPLE), FakeHost()
    waiting = FakeGuest("w")
    got, via = standby.load_anywhere(cfg, "a", host, True, waiting, "/s", lambda: [b"QEVM", b"x"],
                                     lean=True, what="clone")
    assert (got, via) == (waiting, "standby") and waiting.loaded == b"QEVMx"
    assert waiting.shared == [True, False] and host.started == []   # its own states: whole again


def test_a_refused_state_goes_into_a_recorder_started_for_it():
    cfg, host = load(EXAMPLE), FakeHost()
    waiting = FakeGuest("w", refuses=True)
    got, via = standby.load_anywhere(cfg, "b", host, True, waiting, "/s", lambda: [b"QEVM"],
                                     lean=False, what="go-live")
    assert via == "restart" and got is host.started[0] and got.loaded == b"QEVM"
    assert not waiting.active and waiting.shared == []   # destroyed; a whole state: no capability


def test_a_state_nobody_takes_raises_and_leaves_no_recorder_running():
    cfg, host = load(EXAMPLE), FakeHost(refuse=True)
    with pytest.raises(FtorchError, match="did not load"):
        standby.load_anywhere(cfg, "a", host, False, None, "/s", lambda: [b"QEVM"], lean=True,
                              what="clone")
    assert [g.active for g in host.started] == [False]
