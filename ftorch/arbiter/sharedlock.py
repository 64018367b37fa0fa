"""Test-and-set with a growing generation on shared storage, using only what NFS guarantees.

A claim of generation N writes the record to a private temp file, then `link()`s it to `gen-N`.
link() is atomic and fails if `gen-N` exists: exactly one claimant wins each generation. On NFS
a lost reply can make a successful link() look failed (or the retry fail with EEXIST), so the
winner is decided by the temp file's link count, as nfs(5) recommends for lock files. Every
operation runs under a deadline: a hung server means "cannot confirm", never a hung agent.

The storage is a folder (a kernel mount on a real host: `shared_dir: /mnt/ftorch`) or an NFSv4
server reached without a mount (`shared_dir: nfs://server/export/dir`, arbiter/nfsclient.py).
"""
from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from ftorch.arbiter.nfsclient import NfsSession, parse_url
from ftorch.arbiter.rules import ArbiterError, Ownership, decode

GEN_RE = re.compile(r"^gen-(\d+)$")
CLAIM_PREFIX = ".claim-"
T = TypeVar("T")


class Files(Protocol):
    """The file operations the lock needs, on paths relative to the storage's root."""

    def listdir(self, path: str) -> list[str]: ...
    def read(self, path: str) -> bytes: ...
    def write_new(self, path: str, data: bytes) -> None: ...
    def link(self, src: str, dst: str) -> None: ...
    def nlink(self, path: str) -> int: ...
    def unlink(self, path: str) -> None: ...
    def mkdir(self, path: str) -> None: ...
    def is_dir(self, path: str) -> bool: ...


class FolderFiles:
    """A local folder, or an NFS share the kernel mounts there (close-to-open consistency: a
    file written and closed is on the server before link() names it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self._p(path))

    def read(self, path: str) -> bytes:
        return self._p(path).read_bytes()

    def write_new(self, path: str, data: bytes) -> None:
        fd = os.open(self._p(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    def link(self, src: str, dst: str) -> None:
        os.link(self._p(src), self._p(dst))

    def nlink(self, path: str) -> int:
        return os.stat(self._p(path)).st_nlink

    def unlink(self, path: str) -> None:
        os.unlink(self._p(path))

    def mkdir(self, path: str) -> None:
        os.mkdir(self._p(path))

    def is_dir(self, path: str) -> bool:
        return self._p(path).is_dir()


class Storage:
    """Where the pair's records live: opens a session of file operations per lock operation."""

    def __init__(self, shared_dir: str, timeout_s: float) -> None:
        self.where = shared_dir.rstrip("/")
        self._nfs = parse_url(shared_dir) if shared_dir.startswith("nfs:") else None
        self.timeout_s = timeout_s

    @property
    def folder(self) -> str:
        """The lock folders' parent, as the sessions' paths name it."""
        return self._nfs[2] if self._nfs else "/"

    @contextmanager
    def session(self) -> Iterator[Files]:
        if self._nfs is None:
            # never made here: a folder made where a mount is missing would be this host's
            # own arbiter, and each host would win its own race
            if not os.path.isdir(self.where):
                what = "is not a folder" if os.path.exists(self.where) else "does not exist"
                raise FileNotFoundError(2, f"{self.where} {what} (shared storage not mounted?)")
            yield FolderFiles(Path(self.where))
            return
        server, export, _ = self._nfs
        with NfsSession(server, export, self.timeout_s) as s:
            yield s


class SharedLock:
    def __init__(self, shared_dir: str | Path, pair: str, timeout_s: float = 2.0) -> None:
        self.storage = Storage(str(shared_dir), timeout_s)
        self.pair = pair
        self.timeout_s = timeout_s
        self.where = f"{self.storage.where}/{pair}"      # for messages
        self._dir = f"{self.storage.folder.rstrip('/')}/{pair}"

    def _io(self, fn: Callable[[Files], T], what: str) -> T:
        """Run fn on a fresh session with a deadline; map OS errors and hangs to ArbiterError.

        A thread per call (not a pool), each with its own session: a call stuck on a dead server
        leaks only its own thread and connection, and it stays correct in forked children."""
        box: dict[str, object] = {}

        def run() -> None:
            try:
                with self.storage.session() as files:
                    box["value"] = fn(files)
            except BaseException as e:  # handed to the caller below
                box["error"] = e

        t = threading.Thread(target=run, name="sharedlock", daemon=True)
        t.start()
        t.join(self.timeout_s)
        if t.is_alive():
            raise ArbiterError(f"shared storage {self.where} did not answer {what} within "
                               f"{self.timeout_s} s (server or mount hung or unreachable)")
        err = box.get("error")
        if isinstance(err, OSError):
            raise ArbiterError(f"shared storage {self.where}: {what} failed: "
                               f"{err.strerror or err}")
        if isinstance(err, BaseException):
            raise err
        return box["value"]  # type: ignore[return-value]

    def _generations(self, files: Files) -> list[int]:
        return sorted(int(m.group(1)) for name in files.listdir(self._dir)
                      if (m := GEN_RE.match(name)))

    def current(self) -> Ownership | None:
        """The newest ownership record, or None if the pair was never claimed."""
        def read(files: Files) -> Ownership | None:
            if not files.is_dir(self._dir):
                raise FileNotFoundError(2, "lock folder missing (run `ftorch up` to create it)")
            gens = self._generations(files)
            if not gens:
                return None
            return decode(files.read(f"{self._dir}/gen-{gens[-1]}"), self.pair, gens[-1],
                          f"{self.where}/gen-{gens[-1]}")
        return self._io(read, "reading ownership")

    def init(self) -> None:
        """Create the pair's lock folder and its parents (idempotent)."""
        def mkdirs(files: Files) -> None:
            path = ""
            for name in self._dir.strip("/").split("/"):
                path += "/" + name
                if not files.is_dir(path):
                    try:
                        files.mkdir(path)
                    except FileExistsError:   # made by the other host meanwhile
                        pass
        self._io(mkdirs, "creating the lock folder")

    def reset(self) -> None:
        """Forget every generation (a new run of the pair; the caller made sure none runs)."""
        def clear(files: Files) -> None:
            if not files.is_dir(self._dir):
                return
            for name in files.listdir(self._dir):
                if GEN_RE.match(name) or name.startswith(CLAIM_PREFIX):
                    files.unlink(f"{self._dir}/{name}")
        self._io(clear, "clearing the ownership records")

    def claim(self, generation: int, host: str, reason: str) -> Ownership | None:
        """Try to become owner at `generation`; the record if this host won, None if it lost."""
        rec = Ownership(self.pair, generation, host, time.time(), reason)

        def attempt(files: Files) -> bool:
            tmp = f"{self._dir}/{CLAIM_PREFIX}{generation}-{host}-{os.getpid()}-" \
                  f"{secrets.token_hex(4)}"
            files.write_new(tmp, rec.encode())  # on the server before link() names it
            try:
                try:
                    files.link(tmp, f"{self._dir}/gen-{generation}")
                except OSError:   # taken, or our own link whose reply was lost: the count says
                    pass
                return files.nlink(tmp) == 2
            finally:
                files.unlink(tmp)
        return rec if self._io(attempt, f"claiming generation {generation}") else None
