"""What one host (or the operator's machine) can ask of another, whatever carries it.

A carrier implements four primitives (a request to `ftorch-host` on the far side, writing bytes,
writing a sparse file, reading bytes); everything else here is built on them, so the SSH
carrier and any other share one meaning of "prepare a pair's folder" or "send an image".
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftorch.errors import AgentUnreachable, FtorchError, VersionError
from ftorch.host.imagecopy import HEADROOM, data_ranges, digest_ranges

Progress = Callable[[int, int], None]


class HostUnreachable(AgentUnreachable):
    """The host itself could not be reached or would not let us in (exit 4)."""


class RemoteError(FtorchError):
    """The far side refused or failed a request; carries its exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ImageSendError(FtorchError):
    """An image could not be sent (no room, I/O error, or the copy does not match)."""


@dataclass(frozen=True)
class Probe:
    agent: bool       # an agent of the pair answers on this host
    domain: bool      # one of the pair's domains asked about runs on this host


@dataclass(frozen=True)
class SentImage:
    data_bytes: int   # bytes of data sent (holes are not sent)
    allocated: int    # what the copy occupies on the far side
    sha256: str       # of the data ranges, equal on both sides


class HostTransport(ABC):
    """One host as seen from here. `key` is the host's name in the pair ('a' or 'b')."""

    key: str

    @property
    @abstractmethod
    def label(self) -> str:
        """How errors name the host, e.g. `host a (root@10.77.1.1:22)`."""

    @abstractmethod
    def request(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        """Run one `ftorch-host` request there; raise HostUnreachable or RemoteError."""

    @abstractmethod
    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        """Write a whole file there."""

    @abstractmethod
    def put_ranges(self, local: str, remote: str, ranges: list[tuple[int, int]], size: int,
                   progress: Progress | None) -> None:
        """Write the given ranges of a local file to a new file there of `size` bytes."""

    @abstractmethod
    def read_bytes(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        """Read up to `limit` bytes of a file there from `offset` (negative: from the end)."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the connection (a later request opens a new one)."""

    # --- built on the primitives ---------------------------------------------------------

    def call_agent(self, pair_dir: str, cmd: str, timeout: float = 10.0,
                   **args: Any) -> dict[str, Any]:
        """One command to the pair's agent on that host; its reply, or AgentUnreachable /
        FtorchError with the agent's own message."""
        try:
            r = self.request("agent", timeout=timeout + 5,
                             socket_path=str(Path(pair_dir) / "agent.sock"),
                             request={"cmd": cmd, **args}, wait=timeout)
        except RemoteError as e:
            if e.exit_code == 4:
                raise AgentUnreachable(str(e)) from None
            raise
        reply = r["reply"]
        if not reply.get("ok"):
            raise FtorchError(reply.get("error", "agent error"))
        return reply

    def probe(self, pair_dir: str, domains: tuple[str, ...] = ()) -> Probe:
        """Whether an agent of the pair answers there, and any of `domains` runs."""
        r = self.request("probe", pair_dir=pair_dir, domains=list(domains))
        return Probe(agent=bool(r["agent"]), domain=bool(r["domain"]))

    def prepare_pair(self, pair_dir: str, files: dict[str, Path], config_text: str,
                     secrets: dict[str, bytes], room: int = 0, what: str = "the pair") -> None:
        """A fresh pair folder there holding `files` (name there -> local path) and the
        pair's config as `pair.yaml`, all owned by the QEMU user, and `secrets` (name there ->
        content, e.g. the channel credential) kept 0600 and root's. `room`: bytes that must be
        free besides the files, checked once the old folder is gone and before any copy."""
        free = int(self.request("prepare", pair_dir=pair_dir)["free"])
        need = room + sum(p.stat().st_size for p in files.values())
        if free < need:
            raise ImageSendError(f"no room for {what} on {self.label} at {pair_dir}: it needs "
                                 f"{need >> 20} MiB, {free >> 20} MiB free")
        sent = []
        for name, local in files.items():
            dst = f"{pair_dir}/{name}"
            self.send_image(str(local), dst, what=f"{name} for {self.label}")
            sent.append(dst)
        self.put_bytes(config_text.encode(), f"{pair_dir}/pair.yaml", mode=0o600)
        for name, data in secrets.items():
            self.put_bytes(data, f"{pair_dir}/{name}", mode=0o600)
        self.request("own", paths=[pair_dir, *sent])

    def start_agent(self, pair_dir: str, key: str, role: str, mode: str = "protected") -> None:
        self.request("start-agent", config=f"{pair_dir}/pair.yaml", key=key, role=role,
                     mode=mode, log=f"{pair_dir}/agent.log")

    def send_image(self, local: str, remote: str, progress: Progress | None = None,
                   what: str = "the image", reserve: int = 0) -> SentImage:
        """Copy a file there without its holes, after a room check (the data, and `reserve`
        bytes left over), and check the copy: the same data (sha256 of the data ranges) and no
        more room than the data needs."""
        with open(local, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            ranges = list(data_ranges(f.fileno(), size))
        need = sum(n for _, n in ranges)
        free = int(self.request("free", path=os.path.dirname(remote))["free"])
        if free < need + HEADROOM + reserve:
            keep = f" and {reserve >> 20} MiB must stay free" if reserve else ""
            raise ImageSendError(f"no room for {what} on {self.label} at {remote}: it needs "
                                 f"{need >> 20} MiB{keep}, {free >> 20} MiB free")
        try:
            self.put_ranges(local, remote, ranges, size, progress)
        except OSError as e:
            raise ImageSendError(f"sending {what} to {self.label} failed: {e}") from None
        theirs = self.request("digest", timeout=120, path=remote, ranges=ranges)
        with open(local, "rb") as f:
            ours = digest_ranges(f, ranges)
        if theirs["sha256"] != ours or theirs["size"] != size:
            raise ImageSendError(f"{what} on {self.label} does not match the original "
                                 f"(size {theirs['size']} vs {size})")
        if theirs["allocated"] > need + HEADROOM:
            raise ImageSendError(f"{what} on {self.label} is not sparse: it occupies "
                                 f"{theirs['allocated'] >> 20} MiB for {need >> 20} MiB of data")
        return SentImage(need, int(theirs["allocated"]), ours)

    def tail(self, remote: str, lines: int, limit: int = 1 << 20) -> list[str]:
        """The last `lines` lines of a text file there (a log), read from its last `limit`
        bytes."""
        text = self.read_bytes(remote, -limit, limit).decode(errors="replace")
        return text.splitlines()[-lines:] if lines > 0 else []

    def check_emulator(self, path: str, kick: bool = True) -> str:
        try:
            return str(self.request("check-emulator", path=path, host=self.key,
                                    kick=kick)["version"])
        except RemoteError as e:
            if e.exit_code == VersionError.exit_code:
                raise VersionError(str(e)) from None
            raise

    def destroy_domain(self, name: str, ram_file: str = "") -> bool:
        """Destroy the domain if it runs; ram_file: also remove the name of the RAM file a
        backup's domains map (a killed agent leaves it)."""
        return bool(self.request("destroy-domain", name=name, ram_file=ram_file)["destroyed"])

    def reset_ownership(self, shared_dir: str, pair: str) -> str:
        """Start the pair's ownership afresh at generation 1 (host a); the record written."""
        return str(self.request("reset-ownership", shared_dir=shared_dir, pair=pair)["record"])

    def read_ownership(self, shared_dir: str, pair: str) -> str | None:
        """The pair's newest ownership record as this host reads it (None: no record)."""
        return self.request("read-ownership", shared_dir=shared_dir, pair=pair)["record"]
