"""The guest NIC's bridge without QEMU or a tap: a unix socket plays QEMU's stream netdev and a
datagram socketpair plays the tap (one read, one frame, as a tap gives them)."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

from channelkit import wait

from ftorch.gate import lagbound
from ftorch.gate.announce import ETH_P_RARP, rarp_announce
from ftorch.gate.holder import InboundHold
from ftorch.gate.netbridge import LanPort, NetBridge


def frame(n: int) -> bytes:
    return bytes([n]) * 60


class FakeQemu:
    """QEMU's stream netdev: a listening unix socket; collects the length-prefixed frames."""

    def __init__(self, path: str) -> None:
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.frames: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.srv.accept()
        buf = b""
        while data := conn.recv(65536):
            buf += data
            while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
                n = struct.unpack(">I", buf[:4])[0]
                self.frames.append(buf[4:4 + n])
                buf = buf[4 + n:]


def test_frames_that_arrive_between_two_bridges_wait_in_the_port(tmp_path):
    """A clone restarts the recorder: the tap stays open, a frame the old bridge had read but
    not delivered and the frames that came while no bridge ran reach the new recorder, in
    order, once it may take them."""
    lan, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    port = LanPort(os.dup(tap.fileno()))
    q1 = FakeQemu(str(tmp_path / "q1.sock"))
    b1 = NetBridge(str(tmp_path / "q1.sock"), "unused", port=port)
    b1.start()
    lan.send(frame(1))
    wait(lambda: q1.frames == [frame(1)])
    b1.inbound_open.clear()             # as before a savevm: frames wait in the agent
    lan.send(frame(2))
    wait(lambda: [f for f, _ in port.held] == [frame(2)])
    assert b1.stop(keep_port=True) is port and port.fd is not None
    lan.send(frame(3))                  # nobody reads the tap now
    q2 = FakeQemu(str(tmp_path / "q2.sock"))
    b2 = NetBridge(str(tmp_path / "q2.sock"), "unused", port=port)
    b2.inbound_open.clear()
    b2.start()
    lan.send(frame(4))
    b2.inbound_open.set()               # the restarted guest runs
    wait(lambda: len(q2.frames) == 3)
    assert q2.frames == [frame(2), frame(3), frame(4)] and q1.frames == [frame(1)]
    assert b2.stop() is None and port.fd is None   # not kept: the tap is let go


def test_frames_queued_behind_a_held_frame_wait_max_hold_from_their_arrival(tmp_path):
    """The lag bound holds each frame at most max_hold_s from when it reached the host: a
    burst (a request, the client's retransmission, its ACKs) goes in together, not one
    max_hold_s after another (failovers showed 0.8 s stalls that way)."""
    max_hold = 1.0
    lan, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    q = FakeQemu(str(tmp_path / "q.sock"))
    hold = InboundHold(lambda: 5.0, lagbound.policy(0.5, max_hold))   # a backup far behind
    b = NetBridge(str(tmp_path / "q.sock"), "unused", port=LanPort(os.dup(tap.fileno())),
                  hold=hold)
    b.start()
    t0 = time.monotonic()
    for n in range(4):
        lan.send(frame(n))
    wait(lambda: len(q.frames) == 4)
    took = time.monotonic() - t0
    b.stop()
    assert q.frames == [frame(n) for n in range(4)]
    assert max_hold <= took < 2.5 * max_hold     # one after another would take 4 * max_hold
    assert hold.status().timeouts >= 1


def test_the_announcement_is_a_broadcast_rarp_from_the_guests_mac():
    f = rarp_announce("52:54:00:f7:00:01")
    mac = bytes.fromhex("525400f70001")
    assert len(f) == 60 and f[:6] == b"\xff" * 6 and f[6:12] == mac
    assert struct.unpack(">H", f[12:14])[0] == ETH_P_RARP
    htype, ptype, hlen, plen, op = struct.unpack(">HHBBH", f[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 3)
    assert f[22:28] == mac and f[32:38] == mac


def test_a_port_announces_on_the_lan(tmp_path):
    lan, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    port = LanPort(os.dup(tap.fileno()))
    port.announce("52:54:00:f7:00:01")
    assert lan.recv(100) == rarp_announce("52:54:00:f7:00:01")
    port.close()
    port.close()                         # idempotent
