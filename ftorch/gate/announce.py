"""The frame that tells a LAN where a MAC address now lives (what QEMU's announce-self sends).

Pure. A RARP request from the guest's MAC, broadcast: every bridge and switch on the way learns
the MAC on the port it came in through, so the guest's traffic turns towards the host that sent
it. A go-live sends one from the new host's tap before the guest runs there, so that the
client's retransmissions queue at the host that is about to serve them.
"""
from __future__ import annotations

import struct

ETH_P_RARP = 0x8035
MIN_FRAME = 60      # an Ethernet frame without its FCS is padded to this


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return bytes(int(p, 16) for p in parts)


def rarp_announce(mac: str) -> bytes:
    """Broadcast RARP 'reverse request' from and about `mac` (RFC 903), as QEMU builds it."""
    m = mac_bytes(mac)
    frame = b"\xff" * 6 + m + struct.pack(">H", ETH_P_RARP) \
        + struct.pack(">HHBBH", 1, 0x0800, 6, 4, 3) + m + bytes(4) + m + bytes(4)
    return frame.ljust(MIN_FRAME, b"\0")
