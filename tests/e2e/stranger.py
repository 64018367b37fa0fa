"""A stranger on the LAN who knows the channel protocol: it sends well-formed frames (HELLO,
DATA with a valid CRC, END, an ACK past any log) to a channel port, in clear and over TLS with a
credential of its own. Prints what became of each attempt as one JSON line.

Usage: stranger.py HOST PORT PAIR [SOURCE]   (SOURCE: the address to connect from)
"""
from __future__ import annotations

import json
import socket
import ssl
import sys
import tempfile
from pathlib import Path

from ftorch.channel import trust
from ftorch.channel.framing import Frame, Kind, encode

FRAMES = [Frame(Kind.HELLO, 12, 0, b""), Frame(Kind.DATA, 12, 10**9, bytes([0, 0, 0, 1, 0])),
          Frame(Kind.END, 17, 10**9), Frame(Kind.ACK, 1 << 40, 0)]


def attempt(target: tuple[str, int], source: str | None, tls: ssl.SSLContext | None,
            pair: str) -> str:
    frames = [Frame(f.kind, f.offset, f.icount, pair.encode() if f.kind == Kind.HELLO else
                    f.payload) for f in FRAMES]
    try:
        raw = socket.create_connection(target, timeout=10,
                                       source_address=(source, 0) if source else None)
    except OSError as e:
        return f"connect: {type(e).__name__}"
    try:
        s = tls.wrap_socket(raw) if tls else raw
        for f in frames:
            s.sendall(encode(f))
        reply = s.recv(65536)
        return "answered" if reply else "closed"
    except (OSError, ssl.SSLError) as e:
        return f"refused: {type(e).__name__}"
    finally:
        raw.close()


def main() -> None:
    host, port, pair = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    source = sys.argv[4] if len(sys.argv) > 4 else None
    with tempfile.TemporaryDirectory() as d:
        trust.write_credential(Path(d), trust.new_credential(pair))
        own = trust.context(Path(d), server=False)
        print(json.dumps({"clear": attempt((host, port), source, None, pair),
                          "tls": attempt((host, port), source, own, pair)}), flush=True)


if __name__ == "__main__":
    main()
