"""Standby recorders: a recording QEMU waiting, paused, for a saved state (`-incoming defer`).

Starting a recorder through libvirt takes 0.4-0.9 s (docs/qemu-notes.md), and both a go-live
and a clone need one while the guest is paused. So each host keeps one waiting where it will be
needed: a backup beside its replay (for the go-live), a primary running alone beside its
recorder (for the next clone). Every host has two slots for the guest's domain, the usual one
and `-standby` (own name, log, NIC socket and console: host/layout.py); the waiting recorder
takes the slot the running QEMU does not, and the two map one RAM file, so a state can leave
the RAM out (`x-ignore-shared`) and load in a few milliseconds.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

from ftorch.config import PairConfig
from ftorch.errors import FtorchError, VirtError
from ftorch.gate.shim import build as build_shim
from ftorch.host.layout import domain_name, guest_spec
from ftorch.host.virt import Guest, Host
from ftorch.rr.domain import GuestSpec, Mode, render

log = logging.getLogger("ftorch.standby")
LOAD_TIMEOUT_S = 60.0
SPARE_WAIT_S = 30.0   # a clone waits this long for a recorder still starting (before its pause)


def recorder_spec(cfg: PairConfig, key: str, loadvm: str | None = None,
                  standby: bool = False, incoming: bool = False) -> GuestSpec:
    """A recording QEMU for host key, with the log-flush shim unless replay.flush_us is 0.
    standby: in the `-standby` slot; incoming: waiting for a state."""
    shim = str(build_shim()) if cfg.replay.flush_us else None   # 0: QEMU's own 4 KiB
    return guest_spec(cfg, key, Mode.RECORD, shim, loadvm, standby, incoming)


def start_standby(cfg: PairConfig, key: str, host: Host, slot: bool) -> Guest:
    """A recorder in slot (True: `-standby`) waiting for a state; raises FtorchError."""
    return host.start(render(recorder_spec(cfg, key, standby=slot, incoming=True)), paused=True)


def leave_ram_out(guest: Guest, what: str) -> bool:
    """Leave the RAM file guest maps out of its next saved state (`x-ignore-shared`): whoever
    takes the state maps that file too, or gets a copy. Returns whether QEMU agreed (if not,
    the state carries the RAM, slower but whole)."""
    try:
        guest.share_ram(True)
        return True
    except FtorchError as e:
        log.warning("%s: the state carries the guest's RAM (%s)", what, e)
        return False


def load_state(recorder: Guest, sock: str, chunks: Iterable[bytes], lean: bool) -> None:
    """Load a saved state into a waiting recorder; it stays paused, its images current.
    lean: the state leaves out the RAM the recorder maps (both ends of a state must agree,
    or its stream does not parse). The recorder's own later states carry the RAM again (a
    clone's snapshot goes to another host). A recorder that refuses the state is destroyed."""
    try:
        if lean:
            recorder.share_ram(True)
        recorder.load_state(sock, chunks, timeout=LOAD_TIMEOUT_S)
        if lean:
            recorder.share_ram(False)
    except BaseException:
        recorder.destroy()
        raise


def load_anywhere(cfg: PairConfig, key: str, host: Host, slot: bool, waiting: Guest | None,
                  sock: str, chunks: Callable[[], Iterable[bytes]], lean: bool,
                  what: str) -> tuple[Guest, str]:
    """Load a saved state into `waiting`, or, if there is none or it refuses the state, into a
    recorder started now in the same slot. Returns the recorder and which way it went
    ("standby" or "restart"); raises FtorchError when neither took it."""
    if waiting is not None:
        try:
            load_state(waiting, sock, chunks(), lean)
            return waiting, "standby"
        except FtorchError as e:   # the state is whole on disk: another recorder takes it
            log.error("%s: the standby recorder did not take the state (%s); starting a "
                      "recorder for it", what, e)
    name = domain_name(cfg, key, slot)
    if not host.wait_gone(name, timeout=30):
        raise VirtError(f"{what}: the domain {name} did not go away")
    recorder = start_standby(cfg, key, host, slot)
    load_state(recorder, sock, chunks(), lean)
    return recorder, "restart"


class Spare:
    """A standby recorder started in the background, in the slot the running guest does not
    use, once the domain that held that slot is gone."""

    def __init__(self, cfg: PairConfig, key: str, host: Host, slot: bool) -> None:
        self.cfg, self.key, self.host, self.slot = cfg, key, host, slot
        self.guest: Guest | None = None
        self.error: str | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._start, name="spare", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _start(self) -> None:
        t0 = time.monotonic()
        name = domain_name(self.cfg, self.key, self.slot)
        try:
            if not self.host.wait_gone(name, timeout=60):
                raise VirtError(f"the domain {name} did not go away")
            guest = start_standby(self.cfg, self.key, self.host, self.slot)
        except FtorchError as e:
            self.error = str(e)
            log.warning("no standby recorder beside the guest (a clone will restart the "
                        "recorder, a longer pause): %s", e)
            self._done.set()
            return
        with self._lock:
            closed, self.guest = self._closed, guest
        if closed:
            guest.destroy()
        else:
            log.info("standby recorder %s waiting (started in %.2f s)", name,
                     time.monotonic() - t0)
        self._done.set()

    def take(self, timeout: float) -> Guest | None:
        """The waiting recorder, now the caller's (None: none came up in time, or it died)."""
        self._done.wait(timeout)
        with self._lock:
            guest, self.guest, self._closed = self.guest, None, True
        return guest if guest is not None and guest.is_active() else None

    def close(self) -> None:
        with self._lock:
            guest, self.guest, self._closed = self.guest, None, True
        if guest is not None:
            guest.destroy()
