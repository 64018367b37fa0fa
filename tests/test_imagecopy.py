"""Sparse image copies: holes stay holes, data is copied exactly, no room is refused up front."""
from __future__ import annotations

import os
import shutil
from collections import namedtuple

import pytest

from ftorch.host.imagecopy import ImageCopyError, allocated, copy_image, data_ranges

MiB = 1 << 20


def sparse_file(path, pieces):
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)


def test_copy_keeps_data_and_holes(tmp_path):
    src, dst = tmp_path / "src.qcow2", tmp_path / "dst.qcow2"
    sparse_file(src, [(0, b"head" * 1024), (40 * MiB, os.urandom(MiB)), (64 * MiB - 5, b"tail!")])
    seen = []
    copied = copy_image(str(src), str(dst), lambda done, total: seen.append((done, total)))
    assert dst.read_bytes() == src.read_bytes()
    assert os.path.getsize(dst) == 64 * MiB
    assert allocated(str(dst)) < 4 * MiB          # the 60+ MiB of holes were not written
    assert copied == sum(n for _, n in data_ranges(os.open(src, os.O_RDONLY), 64 * MiB))
    assert seen and seen[-1][0] == copied


def test_no_room_is_refused_before_writing(tmp_path, monkeypatch):
    src, dst = tmp_path / "src.qcow2", tmp_path / "dst.qcow2"
    sparse_file(src, [(0, os.urandom(2 * MiB))])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage(100 * MiB, 99 * MiB, 1 * MiB))
    with pytest.raises(ImageCopyError, match=r"no room for the clone at .*dst.qcow2: it needs 2 MiB, "
                                             r"1 MiB free"):
        copy_image(str(src), str(dst), what="the clone")
    assert not dst.exists()
