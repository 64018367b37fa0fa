"""The one socket question both ends of the logging channel ask."""
from __future__ import annotations

import select
import socket
import ssl


def readable(sock: socket.socket, timeout: float) -> bool:
    """Something to read within `timeout` seconds (0: now)."""
    # a TLS socket may hold decrypted bytes that select cannot see
    return (isinstance(sock, ssl.SSLSocket) and sock.pending()) \
        or bool(select.select([sock], [], [], timeout)[0])
