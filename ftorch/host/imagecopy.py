"""qcow2 images on this host: copies without their holes (QEMU punches holes where deleted
snapshots were, so the allocated part of a live image is far smaller than its length), and
`qemu-img check` after a QEMU was killed."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from ftorch.errors import FtorchError
from ftorch.host.proc import plain

HEADROOM = 16 << 20


class ImageCopyError(FtorchError):
    """An image could not be copied (no room, or an I/O error); the source is untouched."""


def data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(offset, length) of every data range of an open file, holes left out."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:   # only a hole is left
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end - start
        pos = end


def digest_ranges(f: BinaryIO, ranges: Iterable[tuple[int, int]]) -> str:
    """sha256 of the given (offset, length) ranges of an open file: the data of a sparse file,
    the same on both ends of a copy whatever the file systems made of the holes."""
    h = hashlib.sha256()
    for offset, length in ranges:
        f.seek(offset)
        left = length
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                raise ImageCopyError(f"{f.name} ends before {offset + length}")
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def allocated(path: str) -> int:
    """Bytes a file really occupies on disk."""
    return os.stat(path).st_blocks * 512


def copy_image(src: str, dst: str, progress: Callable[[int, int], None] | None = None,
               what: str = "the image", durable: bool = True) -> int:
    """Copy src to dst as a sparse file after checking dst's file system has room; return the
    bytes of data copied. durable: on disk before returning (not for a scratch copy)."""
    need = allocated(src)
    free = shutil.disk_usage(os.path.dirname(dst) or ".").free
    if free < need + HEADROOM:
        raise ImageCopyError(f"no room for {what} at {dst}: it needs {need >> 20} MiB, "
                             f"{free >> 20} MiB free")
    done = 0
    try:
        with open(src, "rb") as fi, open(dst, "wb") as fo:
            size = os.fstat(fi.fileno()).st_size
            for start, length in data_ranges(fi.fileno(), size):
                left = length
                while left:
                    n = os.copy_file_range(fi.fileno(), fo.fileno(), min(left, 8 << 20),
                                           start + length - left, start + length - left)
                    if n == 0:
                        raise OSError(errno.EIO, f"{src} ended early")
                    left -= n
                    done += n
                    if progress:
                        progress(done, need)
            fo.truncate(size)
            if durable:
                os.fsync(fo.fileno())
    except OSError as e:
        raise ImageCopyError(f"copying {what} to {dst} failed: {e.strerror or e}") from None
    return done


def check_image(path: str) -> None:
    """`qemu-img check`: raise on corruption (leaked clusters only waste space)."""
    p = subprocess.run(plain(["qemu-img", "check", "-f", "qcow2", "--output=json", path]),
                       capture_output=True, text=True)
    if p.returncode in (0, 3):
        return
    try:
        report = json.loads(p.stdout)
    except ValueError:
        report = {}
    raise ImageCopyError(f"{path}: qemu-img check found {report.get('corruptions', '?')} "
                              f"corruptions, {report.get('check-errors', '?')} check errors: "
                              f"{p.stderr.strip()[:200]}")
