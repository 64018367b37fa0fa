"""Helpers for the logging channel's tests: a synthetic log, a pipe reader, a cuttable proxy."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ftorch.channel import trust
from ftorch.channel.logtail import LogTail
from ftorch.channel.sender import Sender
from ftorch.rr.replaylog import HEADER_SIZE, INSTRUCTION, block_completions  # noqa: I001


def events(n: int, start: int = 0) -> bytes:
    """n INSTRUCTION events of 1000 + i instructions, plus a CLOCK event every 10 and a disk
    completion (number i // 100) every 100."""
    out = bytearray()
    for i in range(start, start + n):
        out += bytes([INSTRUCTION]) + struct.pack(">I", 1000 + i)
        if i % 10 == 0:
            out += bytes([28]) + struct.pack(">q", i)
        if i % 100 == 0:
            out += block_completions(i // 100, 1)
    return bytes(out)


def noise(n: int, size: int = 4096) -> bytes:
    """n RANDOM events of `size` random bytes each: log that no deflate makes smaller."""
    return b"".join(bytes([27]) + struct.pack(">II", 0, size) + os.urandom(size)
                    for _ in range(n))


def icount_of(n: int) -> int:
    return sum(1000 + i for i in range(n))


class PipeReader(threading.Thread):
    def __init__(self, fifo: Path) -> None:
        super().__init__(daemon=True)
        self.fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        self.data = bytearray()
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            try:
                chunk = os.read(self.fd, 65536)
                self.data += chunk
            except BlockingIOError:
                time.sleep(0.002)


class Proxy(threading.Thread):
    """TCP forwarder between sender and receiver whose connections the test can cut."""

    def __init__(self, target: int) -> None:
        super().__init__(daemon=True)
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.target = target
        self.socks: list[socket.socket] = []

    def run(self) -> None:
        while True:
            try:
                a, _ = self.srv.accept()
            except OSError:
                return
            b = socket.create_connection(("127.0.0.1", self.target))
            self.socks += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    @staticmethod
    def _pump(x: socket.socket, y: socket.socket) -> None:
        try:
            while data := x.recv(65536):
                y.sendall(data)
        except OSError:
            pass
        for s in (x, y):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.socks.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


@contextmanager
def sender_to_listener(tmp: Path, pair_dir: Path, body: bytes, base_icount: int = 0,
                       timeout_s: float = 2.0, **kw) -> Iterator[tuple[socket.socket, Sender]]:
    """A primary's sender (the pair's credential) streaming a log of `body` to a listening
    socket the test plays the far side on."""
    log_path = tmp / "rr.log"
    log_path.write_bytes(bytes(HEADER_SIZE) + body)
    srv = socket.create_server(("127.0.0.1", 0))
    tail = LogTail(str(log_path), max_chunk=4096, base_icount=base_icount)
    tail.start()
    sender = Sender(tail, srv.getsockname(), "t", heartbeat_s=0.1, timeout_s=timeout_s,
                    tls=trust.context(pair_dir, server=False), **kw)
    sender.start()
    try:
        yield srv, sender
    finally:
        sender.stop()
        tail.stop()
        srv.close()


def insider(srv: socket.socket, pair_dir: Path, say: list[bytes]) -> None:
    """A far side that holds the pair's credential: one session that says HELLO, waits for the
    first DATA frame, sends `say`, then reads until the sender hangs up."""
    from ftorch.channel.framing import Frame, FrameDecoder, Kind, encode
    conn, _ = srv.accept()
    with trust.context(pair_dir, server=True).wrap_socket(conn, server_side=True) as conn:
        conn.sendall(encode(Frame(Kind.HELLO, HEADER_SIZE, 0, b"t")))
        dec = FrameDecoder()
        while not any(f.kind == Kind.DATA for f in dec.feed(conn.recv(65536))):
            pass
        for data in say:
            conn.sendall(data)
        while conn.recv(65536):
            pass
