"""The transport's compound operations against an in-process carrier: the far side is the real
request server (`rpc/serve.py`), the files are local. SSH itself is tested end to end."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ftorch.errors import AgentUnreachable, VersionError
from ftorch.rpc.serve import handle
from ftorch.rpc.transport import HostTransport, ImageSendError, Progress, RemoteError


class Local(HostTransport):
    """A host that is this process: requests go straight to the request server."""

    key = "b"

    def __init__(self, free: int | None = None, corrupt: bool = False, fill: bool = False):
        self.free, self.corrupt, self.fill = free, corrupt, fill

    @property
    def label(self) -> str:
        return "host b (local)"

    def request(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        reply = handle(json.dumps({"op": op, **args}).encode())
        if not reply.pop("ok"):
            raise RemoteError(f"{self.label}: {reply['error']}", reply["exit_code"])
        if op in ("free", "prepare") and self.free is not None:
            reply["free"] = self.free
        return reply

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        Path(remote).write_bytes(data)

    def put_ranges(self, local: str, remote: str, ranges: list[tuple[int, int]], size: int,
                   progress: Progress | None) -> None:
        with open(local, "rb") as src, open(remote, "wb") as dst:
            if self.fill:
                dst.write(b"\0" * size)   # a carrier that writes the holes out
            for start, length in ranges:
                src.seek(start)
                dst.seek(start)
                data = src.read(length)
                dst.write(bytes([data[0] ^ 1]) + data[1:] if self.corrupt else data)
            dst.truncate(size)

    def read_bytes(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        with open(remote, "rb") as f:
            f.seek(offset if offset >= 0 else max(0, os.fstat(f.fileno()).st_size + offset))
            return f.read(limit)

    def close(self) -> None:
        pass


@pytest.fixture
def sparse(tmp_path: Path) -> Path:
    p = tmp_path / "src.img"
    with open(p, "wb") as f:
        f.write(b"x" * 65536)
        f.seek(32 << 20)
        f.write(b"y" * 65536)
        f.truncate(64 << 20)
    return p


def test_an_image_is_sent_sparse_and_checked(sparse: Path, tmp_path: Path):
    sent = Local().send_image(str(sparse), str(tmp_path / "dst.img"))
    assert sent.data_bytes == 2 * 65536 and sent.allocated < 1 << 20
    assert (tmp_path / "dst.img").read_bytes() == sparse.read_bytes()


def test_no_room_is_refused_before_anything_is_sent(sparse: Path, tmp_path: Path):
    with pytest.raises(ImageSendError, match=r"no room for the clone on host b \(local\)"):
        Local(free=1 << 20).send_image(str(sparse), str(tmp_path / "dst.img"), what="the clone")
    assert not (tmp_path / "dst.img").exists()


def test_a_copy_that_differs_or_fills_its_holes_is_refused(sparse: Path, tmp_path: Path):
    with pytest.raises(ImageSendError, match="does not match the original"):
        Local(corrupt=True).send_image(str(sparse), str(tmp_path / "a.img"))
    with pytest.raises(ImageSendError, match="is not sparse: it occupies 64 MiB"):
        Local(fill=True).send_image(str(sparse), str(tmp_path / "b.img"))


def test_an_agent_that_does_not_answer_is_unreachable_and_its_errors_are_its_own(tmp_path):
    t = Local()
    with pytest.raises(AgentUnreachable, match="host b \\(local\\): agent not running"):
        t.call_agent(str(tmp_path), "status")
    with pytest.raises(VersionError, match="host b: cannot run QEMU") as e:
        t.check_emulator(str(tmp_path / "no-qemu"))
    assert e.value.exit_code == 3


def test_tail_reads_the_last_lines(tmp_path: Path):
    log = tmp_path / "agent.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert Local().tail(str(log), 3) == ["line 997", "line 998", "line 999"]
    assert Local().tail(str(log), 2, limit=30) == ["line 998", "line 999"]


def test_a_pair_folder_without_room_is_refused_before_any_copy(tmp_path):
    boot = tmp_path / "vmlinuz"
    boot.write_bytes(b"k" * 4096)
    where = tmp_path / "there"
    with pytest.raises(ImageSendError, match=r"no room for the clone on host b \(local\) at "
                       r".*: it needs 64 MiB, 10 MiB free"):
        Local(free=10 << 20).prepare_pair(str(where), {"vmlinuz": boot}, "pair: p\n",
                                          {"channel.key": b"k"}, room=(64 << 20) - 4096,
                                          what="the clone")
    assert list(where.iterdir()) == []      # made afresh, and nothing copied into it
