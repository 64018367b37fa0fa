"""An NFSv4 client in user space: Debian's libnfs (libnfs13) through ctypes, for the arbiter.

Why libnfs: a host without the kernel's NFS client (the lab's kernel has none) still reaches
the shared storage, and every call has a deadline of its own (`nfs_set_timeout`), so a dead or
hung server fails a call instead of hanging the agent in an uninterruptible kernel wait. No
maintained Python NFS client on PyPI speaks NFSv4 (pyNFS is a server test suite); libnfs is
packaged by Debian, and its sync API is a dozen C calls.

One `NfsSession` is one connection and mount, used by one thread, closed after one arbiter
operation: a call abandoned at its deadline leaves nothing that a later call would share.
Errors come back as OSError with the server's errno, as the same calls on a mount would.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import math
import os
from urllib.parse import urlsplit

from ftorch.errors import FtorchError

NFS_V4 = 4
LIBRARY = "libnfs.so.13"


class NfsUrlError(FtorchError):
    """An nfs:// address that names no server or export."""


def parse_url(url: str) -> tuple[str, str, str]:
    """nfs://SERVER/EXPORT[/DIR...] -> (server, export, folder inside it). The export is the
    first path component (the server's NFSv4 pseudo path)."""
    parts = urlsplit(url)
    if parts.scheme != "nfs" or not parts.hostname:
        raise NfsUrlError(f"{url!r}: expected nfs://SERVER/EXPORT[/DIR]")
    if parts.query or parts.fragment or parts.port or parts.username:
        raise NfsUrlError(f"{url!r}: options, ports and users are not supported "
                          "(NFSv4 on port 2049, AUTH_SYS as root)")
    names = [p for p in parts.path.split("/") if p]
    if not names or any(p in (".", "..") for p in names):
        raise NfsUrlError(f"{url!r}: no export named after the server (nfs://SERVER/EXPORT)")
    return parts.hostname, "/" + names[0], "/" + "/".join(names[1:])


class _Stat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks",
        "atime", "mtime", "ctime", "atime_nsec", "mtime_nsec", "ctime_nsec", "used")]


class _Dirent(ctypes.Structure):
    pass


_Dirent._fields_ = [("next", ctypes.POINTER(_Dirent)), ("name", ctypes.c_char_p)]

_lib: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError as e:
            raise OSError(errno.ENOSYS, f"{LIBRARY} is not installed ({e}): the arbiter needs "
                          "Debian's libnfs13 to reach an nfs:// shared_dir") from None
        vp, cp, i, u64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint64
        pp = ctypes.POINTER(ctypes.c_void_p)
        for name, res, args in (
                ("nfs_init_context", vp, []), ("nfs_destroy_context", None, [vp]),
                ("nfs_get_error", cp, [vp]), ("nfs_set_version", i, [vp, i]),
                ("nfs_set_timeout", None, [vp, i]), ("nfs_set_autoreconnect", None, [vp, i]),
                ("nfs_set_dircache", None, [vp, i]), ("nfs_mount", i, [vp, cp, cp]),
                ("nfs_create", i, [vp, cp, i, i, pp]), ("nfs_open", i, [vp, cp, i, pp]),
                ("nfs_write", i, [vp, vp, u64, cp]), ("nfs_read", i, [vp, vp, u64, cp]),
                ("nfs_close", i, [vp, vp]), ("nfs_fsync", i, [vp, vp]),
                ("nfs_stat64", i, [vp, cp, ctypes.POINTER(_Stat)]),
                ("nfs_link", i, [vp, cp, cp]), ("nfs_unlink", i, [vp, cp]),
                ("nfs_mkdir", i, [vp, cp]), ("nfs_opendir", i, [vp, cp, pp]),
                ("nfs_readdir", ctypes.POINTER(_Dirent), [vp, vp]),
                ("nfs_closedir", None, [vp, vp])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _lib = lib
    return _lib


class NfsSession:
    """One mount of `server:export` with a deadline on every call. Paths are the export's."""

    def __init__(self, server: str, export: str, timeout_s: float) -> None:
        self.where = f"nfs://{server}{export}"
        self._lib = _library()
        self._ctx = self._lib.nfs_init_context()
        if not self._ctx:
            raise OSError(errno.ENOMEM, "libnfs could not make a context")
        # libnfs takes whole seconds; never less than one
        self._lib.nfs_set_timeout(self._ctx, 1000 * max(1, math.ceil(timeout_s)))
        self._lib.nfs_set_autoreconnect(self._ctx, 0)   # the arbiter's caller decides on retries
        self._lib.nfs_set_dircache(self._ctx, 0)        # a listing must be the server's, now
        self._check(self._lib.nfs_set_version(self._ctx, NFS_V4), "choosing NFSv4")
        self._check(self._lib.nfs_mount(self._ctx, server.encode(), export.encode()), "mount")

    def close(self) -> None:
        if self._ctx:
            self._lib.nfs_destroy_context(self._ctx)
            self._ctx = None

    def __enter__(self) -> NfsSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, rc: int, what: str, path: str = "") -> int:
        if rc < 0:
            detail = (self._lib.nfs_get_error(self._ctx) or b"").decode(errors="replace")
            where = f"{self.where}{path}" if path else self.where
            raise OSError(-rc, f"{what} {where}: {detail or os.strerror(-rc)}", path or None)
        return rc

    def listdir(self, path: str) -> list[str]:
        d = ctypes.c_void_p()
        self._check(self._lib.nfs_opendir(self._ctx, path.encode(), ctypes.byref(d)), "opendir",
                    path)
        try:
            names = []
            while ent := self._lib.nfs_readdir(self._ctx, d):
                name = ent.contents.name.decode(errors="replace")
                if name not in (".", ".."):
                    names.append(name)
            return names
        finally:
            self._lib.nfs_closedir(self._ctx, d)

    def nlink(self, path: str) -> int:
        st = _Stat()
        self._check(self._lib.nfs_stat64(self._ctx, path.encode(), ctypes.byref(st)), "stat",
                    path)
        return int(st.nlink)

    def is_dir(self, path: str) -> bool:
        st = _Stat()
        rc = self._lib.nfs_stat64(self._ctx, path.encode(), ctypes.byref(st))
        if rc == -errno.ENOENT:
            return False
        self._check(rc, "stat", path)
        return (st.mode & 0o170000) == 0o040000

    def write_new(self, path: str, data: bytes) -> None:
        """Create (or truncate) `path` with `data`, committed to the server's disk."""
        fh = ctypes.c_void_p()
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self._check(self._lib.nfs_create(self._ctx, path.encode(), flags, 0o644,
                                         ctypes.byref(fh)), "create", path)
        try:
            done = 0
            while done < len(data):
                done += self._check(self._lib.nfs_write(self._ctx, fh, len(data) - done,
                                                        data[done:]), "write", path)
            self._check(self._lib.nfs_fsync(self._ctx, fh), "fsync", path)
        finally:
            self._lib.nfs_close(self._ctx, fh)

    def read(self, path: str, limit: int = 1 << 16) -> bytes:
        fh = ctypes.c_void_p()
        self._check(self._lib.nfs_open(self._ctx, path.encode(), os.O_RDONLY, ctypes.byref(fh)),
                    "open", path)
        try:
            out = bytearray()
            buf = ctypes.create_string_buffer(limit)
            while len(out) < limit:
                n = self._check(self._lib.nfs_read(self._ctx, fh, limit - len(out), buf),
                                "read", path)
                if n == 0:
                    return bytes(out)
                out += buf.raw[:n]
            raise OSError(errno.EFBIG, f"{path} on {self.where} is over {limit} bytes", path)
        finally:
            self._lib.nfs_close(self._ctx, fh)

    def link(self, src: str, dst: str) -> None:
        self._check(self._lib.nfs_link(self._ctx, src.encode(), dst.encode()), "link", dst)

    def unlink(self, path: str) -> None:
        self._check(self._lib.nfs_unlink(self._ctx, path.encode()), "unlink", path)

    def mkdir(self, path: str) -> None:
        self._check(self._lib.nfs_mkdir(self._ctx, path.encode()), "mkdir", path)
