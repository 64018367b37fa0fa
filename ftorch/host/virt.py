"""The one place that imports libvirt: connection, domains, QMP, and the version check."""
from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from ftorch.errors import VersionError, VirtError
from ftorch.host.proc import plain

URI = "qemu:///system"
# QEMU versions whose record/replay behaviour ftorch was tested with (docs/qemu-notes.md).
SUPPORTED_QEMU = {(10, 0)}


def _quiet(_ctx: Any, _err: Any) -> None:
    """libvirt prints every error to stderr by default; ftorch reports them itself."""


libvirt.registerErrorHandler(_quiet, None)

_events_started = threading.Lock()


def _serve_events() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()   # waits for the next event, without the GIL


def _event_loop() -> None:
    """libvirt delivers domain events only to connections opened after an event loop is
    registered: do it once, before the first connection, with a thread to run it."""
    if _events_started.acquire(blocking=False):
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_serve_events, name="libvirt-events", daemon=True).start()


def check_qemu_version(version: dict[str, Any]) -> str:
    """Raise VersionError unless a `query-version` answer is a supported QEMU; return it as text."""
    q = version.get("qemu", {})
    major, minor, micro = q.get("major"), q.get("minor"), q.get("micro")
    text = f"{major}.{minor}.{micro}"
    if (major, minor) not in SUPPORTED_QEMU:
        wanted = ", ".join(f"{a}.{b}" for a, b in sorted(SUPPORTED_QEMU))
        raise VersionError(f"QEMU {text} is not supported (record/replay tested with {wanted}); "
                           "install qemu-system-x86 from bookworm-backports")
    return text


def parse_qemu_version(text: str) -> dict[str, Any]:
    """`qemu-system-x86_64 --version` output as a `query-version` answer (None parts if odd)."""
    m = re.search(r"QEMU emulator version (\d+)\.(\d+)\.(\d+)", text)
    major, minor, micro = (int(g) for g in m.groups()) if m else (None, None, None)
    return {"qemu": {"major": major, "minor": minor, "micro": micro}}


# What the shim's inbound kick looks up in QEMU at run time (gate/shim/flushshim.c)
KICK_SYMBOLS = ("replay_mode", "replay_has_events", "bql_locked", "async_run_on_cpu",
                "cpus_queue")


def check_emulator(path: str, host: str, kick: bool = True) -> str:
    """Raise VersionError unless the QEMU binary at path is a supported version and, with the
    inbound kick on, exports the symbols it needs; return the version."""
    try:
        out = subprocess.run(plain([path, "--version"]), capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VersionError(f"host {host}: cannot run QEMU {path}: {e}") from None
    try:
        version = check_qemu_version(parse_qemu_version(out))
    except VersionError as e:
        raise VersionError(f"host {host}: {path}: {e}") from None
    missing = _missing_symbols(path, KICK_SYMBOLS) if kick else []
    if missing:
        raise VersionError(f"host {host}: {path} does not export {', '.join(missing)}, which the "
                           "inbound kick needs (Debian's QEMU 10.0 build exports them); use that "
                           "build, or set replay.inbound_kick: false and accept inbound frames "
                           "waiting up to ~1 s")
    return version


def _missing_symbols(path: str, names: tuple[str, ...]) -> list[str]:
    """The names the ELF binary at path does not export; none for a wrapper script (the shim
    itself refuses to start a recorder that lacks them)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return []
    except OSError as e:
        raise VersionError(f"cannot read {path}: {e}") from None
    try:
        out = subprocess.run(plain(["nm", "-D", "--defined-only", path]), capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise VersionError(f"cannot list the symbols of {path} (nm, from binutils): {e}") from None
    have = {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}
    return [n for n in names if n not in have]


@dataclass
class ReplayInfo:
    mode: str
    icount: int


class Guest:
    """One libvirt domain with typed QMP helpers."""

    def __init__(self, dom: libvirt.virDomain, host: Host | None = None) -> None:
        self._dom = dom
        self._host = host     # to find the domain again on a new connection (libvirtd restarted)
        self.name = dom.name()
        self.frozen = False   # SIGSTOPped by freeze(): its monitor cannot answer
        self._proc: int | None = None   # a pidfd of its QEMU, once exited() has asked

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            os.close(self._proc)

    def _call(self, fn: Callable[[libvirt.virDomain], Any]) -> Any:
        """fn(domain); if libvirtd has restarted since the domain was found, once more on a
        new connection (QEMU outlives libvirtd: the old handle is dead, the guest is not)."""
        try:
            return fn(self._dom)
        except libvirt.libvirtError:
            if self._host is None or self._connected():
                raise
        try:
            self._dom = self._host.conn().lookupByName(self.name)
        except VirtError as e:
            raise libvirt.libvirtError(str(e)) from None
        return fn(self._dom)

    def _connected(self) -> bool:
        try:
            return bool(self._dom.connect().isAlive())
        except libvirt.libvirtError:
            return False

    def exited(self) -> bool:
        """Whether its QEMU process has ended, asked of the kernel (a pidfd), not of libvirtd,
        which may be restarting: a restart is not the guest's death."""
        if self._proc is None:
            self._proc = self._pidfd()
            if self._proc is None:
                return True   # no pid file (libvirt cleaned up after it) or no such process
        return bool(select.select([self._proc], [], [], 0)[0])

    def qmp(self, command: str, **arguments: Any) -> Any:
        """Run one QMP command through libvirt; return its `return` value."""
        if self.frozen:   # libvirt would wait for the reply without end
            raise VirtError(f"{self.name}: QMP {command} not sent: QEMU is frozen "
                            "(its host's disk is full)")
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            reply = json.loads(self._call(
                lambda d: libvirt_qemu.qemuMonitorCommand(d, json.dumps(msg), 0)))
        except libvirt.libvirtError as e:
            raise VirtError(f"{self.name}: QMP {command} failed: {e.get_error_message()}") from None
        if "error" in reply:
            raise VirtError(f"{self.name}: QMP {command} refused: {reply['error'].get('desc')}")
        return reply.get("return")

    def on_pause(self, callback: Callable[[], None]) -> int:
        """Call `callback` (on libvirt's event thread) each time QEMU pauses: a replay-break
        hit says so at once instead of waiting for the next poll. Returns the watch's id."""
        def lifecycle(_conn: Any, _dom: Any, event: int, _detail: int, _opaque: Any) -> None:
            if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
                callback()
        try:
            return self._dom.connect().domainEventRegisterAny(
                self._dom, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, lifecycle, None)
        except libvirt.libvirtError as e:
            raise VirtError(f"{self.name}: cannot watch its pauses: {e.get_error_message()}") from None

    def stop_watching(self, watch: int) -> None:
        try:
            self._dom.connect().domainEventDeregisterAny(watch)
        except libvirt.libvirtError:
            pass   # the connection is gone, and the watch with it

    def replay(self) -> ReplayInfo:
        r = self.qmp("query-replay")
        return ReplayInfo(r["mode"], int(r.get("icount", 0)))

    def status(self) -> str:
        """QEMU run state: running, paused, shutdown, ..."""
        return self.qmp("query-status")["status"]

    def run_state(self) -> str:
        """running / paused / other, from libvirt's cached state: no monitor round-trip."""
        try:
            state, _ = self._call(lambda d: d.state())
        except libvirt.libvirtError as e:
            raise VirtError(f"{self.name}: cannot read its state: {e.get_error_message()}") from None
        return {libvirt.VIR_DOMAIN_RUNNING: "running",
                libvirt.VIR_DOMAIN_PAUSED: "paused"}.get(state, "other")

    def is_active(self) -> bool:
        try:
            return bool(self._call(lambda d: d.isActive()))
        except libvirt.libvirtError:
            return False

    def freeze(self) -> None:
        """Stop every thread of QEMU (SIGSTOP), as a host that stops scheduling it would.

        Not QMP `stop`: a recorder stopped and continued can write a log its replay parts
        from (docs/qemu-notes.md, "Stop/cont of the recorder breaks replay too"), while a
        recorder the host does not run for a while records nothing at all meanwhile."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self._signal(signal.SIGCONT)
            self.frozen = False

    def _signal(self, sig: signal.Signals) -> None:
        fd = self._pidfd()
        if fd is None:
            raise VirtError(f"{self.name}: cannot send {sig.name}: its QEMU is not running")
        try:
            signal.pidfd_send_signal(fd, sig)
        except OSError as e:
            raise VirtError(f"{self.name}: cannot send {sig.name}: {e}") from None
        finally:
            os.close(fd)

    def _pidfd(self) -> int | None:
        try:
            return os.pidfd_open(int(Path(f"/run/libvirt/qemu/{self.name}.pid").read_text()))
        except (OSError, ValueError):
            return None   # gone already, or no pid file

    def stop_gracefully(self) -> None:
        """SIGTERM only: QEMU exits cleanly and a recorder writes its log header."""
        if self.frozen:   # a stopped process keeps the SIGTERM pending
            self.thaw()
        try:
            self._call(lambda d: d.destroyFlags(libvirt.VIR_DOMAIN_DESTROY_GRACEFUL))
        except libvirt.libvirtError as e:
            if self.is_active():
                raise VirtError(f"{self.name}: graceful stop failed: {e.get_error_message()}") from None

    def savevm(self, tag: str, tries: int = 20) -> None:
        """stop + savevm (the guest stays paused). QEMU refuses while record/replay events are
        pending ("Try once more later"): let it run a moment and retry."""
        out = ""
        for _ in range(tries):
            self.qmp("stop")
            out = (self.qmp("human-monitor-command", **{"command-line": f"savevm {tag}"})
                   or "").strip()
            if not out:
                return
            if "Try once more later" not in out:
                break
            self.qmp("cont")
            time.sleep(0.01)   # let the vCPU reach a checkpoint, where queued events are handled
        raise VirtError(f"{self.name}: savevm {tag} refused: {out}")

    def snapshots(self) -> list[str]:
        """Names of the internal snapshots in the guest's images."""
        names: list[str] = []
        for dev in self.qmp("query-block"):
            for snap in dev.get("inserted", {}).get("image", {}).get("snapshots", []):
                if snap["name"] not in names:
                    names.append(snap["name"])
        return names

    def share_ram(self, shared: bool) -> None:
        """Whether a saved or loaded state leaves out RAM that another QEMU maps too
        (`x-ignore-shared`): both ends of a state must agree, or its stream does not parse."""
        self.qmp("migrate-set-capabilities",
                 capabilities=[{"capability": "x-ignore-shared", "state": shared}])

    def delvm(self, tag: str) -> None:
        """Delete an internal snapshot (also while the guest runs: QEMU frees its clusters)."""
        out = (self.qmp("human-monitor-command", **{"command-line": f"delvm {tag}"}) or "").strip()
        if out:
            raise VirtError(f"{self.name}: delvm {tag} refused: {out}")

    def kill_now(self) -> None:
        """SIGKILL the QEMU process, then let libvirt clean up. Only for a QEMU whose state is
        already safe on disk (after savevm): a replaying QEMU takes ~1.6 s to exit on SIGTERM."""
        self.kill_and_wait()
        self.destroy()

    def kill_and_wait(self, timeout: float = 10.0) -> bool:
        """SIGKILL the QEMU process and wait until it has exited (its files, the disk image
        among them, are closed then), without libvirt's clean-up, which polls every 200 ms:
        destroy() afterwards does that. Returns whether it exited in time."""
        fd = self._pidfd()
        if fd is None:
            return not self.is_active()
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            return bool(select.select([fd], [], [], timeout)[0])
        except OSError:
            return True   # it exited between the two calls
        finally:
            os.close(fd)

    def load_state(self, sock_path: str, chunks: Iterable[bytes], timeout: float) -> None:
        """Load a VM state (a migration stream) into this QEMU, started with `-incoming defer`:
        it listens on a unix socket at sock_path and stays paused once the state is in, its
        disk images active (their metadata read again: they may have changed since it opened
        them)."""
        Path(sock_path).unlink(missing_ok=True)
        self.qmp("migrate-incoming", uri=f"unix:{sock_path}")
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(sock_path)
            for chunk in chunks:
                s.sendall(chunk)
        while time.monotonic() < deadline:   # QEMU exits if the load fails: qmp() raises
            if self.status() != "inmigrate":
                # started with -S, QEMU 10.0 keeps the images inactive (stale metadata) until
                # `cont`; activate them now, so that the paused guest's images are current
                self.qmp("blockdev-set-active", active=True)
                return
            time.sleep(0.002)
        raise VirtError(f"{self.name}: the VM state did not load within {timeout:.0f} s")

    def destroy(self) -> None:
        """Kill the domain; a domain already gone is not an error (idempotent stop)."""
        try:
            self._call(lambda d: d.destroy())
        except libvirt.libvirtError:
            if self.is_active():
                raise


class Host:
    """A libvirt connection, reopened when it drops."""

    def __init__(self, uri: str = URI) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None

    def conn(self) -> libvirt.virConnect:
        if self._conn is None or not self._conn.isAlive():
            _event_loop()
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                raise VirtError(f"cannot connect to libvirtd at {self.uri}: "
                                f"{e.get_error_message()} (is libvirtd running?)") from None
        return self._conn

    def start(self, xml: str, paused: bool = False) -> Guest:
        """Create a transient domain from XML (never persistent: agents decide where it runs)."""
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        try:
            return Guest(self.conn().createXML(xml, flags), self)
        except libvirt.libvirtError as e:
            raise VirtError(f"libvirt refused to start the domain: {e.get_error_message()}") from None

    def lookup(self, name: str) -> Guest | None:
        try:
            return Guest(self.conn().lookupByName(name), self)
        except libvirt.libvirtError:
            return None

    def destroy(self, name: str) -> bool:
        """Destroy a domain by name if it exists; return whether it did."""
        guest = self.lookup(name)
        if guest is None or not guest.is_active():
            return False
        guest.destroy()
        return True

    def wait_gone(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            g = self.lookup(name)
            if g is None or not g.is_active():
                return True
            time.sleep(0.05)
        return False
