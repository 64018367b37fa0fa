"""Host requests over SSH with paramiko: the one module that imports it.

One connection per host endpoint, reused by every request (each request is a new exec channel
running `ftorch-host`), reopened when it drops. Host keys are checked against a known_hosts
file and an unknown or changed key is refused: an agent must never stream a guest's log to, or
take orders from, a machine that is not the one configured.
"""
from __future__ import annotations

import ctypes
import json
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

import paramiko

from ftorch.rpc.transport import HostTransport, HostUnreachable, Progress, RemoteError

CLONE_NEWNET = 0x40000000
REMOTE_COMMAND = "ftorch-host"
CHUNK = 1 << 20
# A host that died (or a link that went) must not look alive: SSH keepalives every
# KEEPALIVE_S, and the kernel drops a connection whose data stays unacknowledged for
# DEAD_AFTER_S, so a pooled connection to a dead host fails within seconds, not minutes.
KEEPALIVE_S = 2
DEAD_AFTER_S = 6


@dataclass(frozen=True)
class Endpoint:
    key: str                 # the host's name in the pair
    address: str
    port: int
    user: str
    identity: str            # private key file, on the machine that connects
    known_hosts: str         # the host keys it accepts
    timeout: float = 5.0     # to connect and to authenticate
    netns: str = ""          # lab only: the network namespace the connection starts from

    @property
    def label(self) -> str:
        return f"host {self.key} ({self.user}@{self.address}:{self.port})"


def _connect_from_netns(netns: str, address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection made inside a named network namespace (the lab's management LAN),
    while this process stays where it is: setns() in a thread of its own changes only that
    thread, and a socket keeps the namespace it was made in."""
    box: dict[str, Any] = {}

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        except OSError as e:
            box["error"] = OSError(e.errno, f"network namespace {netns} missing ({e.strerror}); "
                                            "in the lab: `ftorch lab up`")
            return
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                box["error"] = OSError(err, f"setns {netns}: {os.strerror(err)}")
                return
            box["sock"] = socket.create_connection((address, port), timeout=timeout)
        except OSError as e:
            box["error"] = e
        finally:
            os.close(fd)

    t = threading.Thread(target=run, name=f"connect-{netns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


@dataclass
class _Session:
    chan: paramiko.Channel
    out: Any                 # the channel's stdout as a file: one reply per line


class SshTransport(HostTransport):
    def __init__(self, ep: Endpoint) -> None:
        self.ep = ep
        self.key = ep.key
        self._client: paramiko.SSHClient | None = None
        self._idle: list[_Session] = []      # `ftorch-host` sessions waiting for a request
        self._lock = threading.Lock()

    @property
    def label(self) -> str:
        return self.ep.label

    def _fail(self, why: str) -> HostUnreachable:
        return HostUnreachable(f"{self.label}: {why}")

    def _connect(self) -> paramiko.SSHClient:
        ep = self.ep
        if not os.path.exists(ep.identity):
            raise self._fail(f"SSH identity {ep.identity} does not exist")
        if not os.path.exists(ep.known_hosts):
            raise self._fail(f"known_hosts file {ep.known_hosts} does not exist")
        client = paramiko.SSHClient()
        client.load_host_keys(ep.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            sock = (_connect_from_netns(ep.netns, ep.address, ep.port, ep.timeout) if ep.netns
                    else socket.create_connection((ep.address, ep.port), timeout=ep.timeout))
        except ConnectionRefusedError:
            raise self._fail("SSH connection refused (is sshd running there?)") from None
        except TimeoutError:
            raise self._fail(f"no answer on the SSH port within {ep.timeout:.0f} s") from None
        except OSError as e:
            raise self._fail(f"cannot connect: {e.strerror or e}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, DEAD_AFTER_S * 1000)
        try:
            client.connect(ep.address, port=ep.port, username=ep.user, key_filename=ep.identity,
                           sock=sock, timeout=ep.timeout, banner_timeout=ep.timeout,
                           auth_timeout=ep.timeout, allow_agent=False, look_for_keys=False)
        except paramiko.BadHostKeyException:
            sock.close()
            raise self._fail(f"host key mismatch: {ep.known_hosts} holds another key for "
                             f"{ep.address} (the host was reinstalled, or someone is in "
                             "between); refused") from None
        except paramiko.AuthenticationException:
            sock.close()
            raise self._fail(f"SSH key {ep.identity} refused for user {ep.user}") from None
        except paramiko.SSHException as e:
            sock.close()
            if "known_hosts" in str(e):
                raise self._fail(f"unknown host key: {ep.address} is not in {ep.known_hosts}; "
                                 "refused") from None
            raise self._fail(f"SSH failed: {e}") from None
        except OSError as e:
            sock.close()
            raise self._fail(f"SSH failed: {e.strerror or e}") from None
        t = client.get_transport()
        if t is not None:
            t.set_keepalive(KEEPALIVE_S)
        return client

    def _session(self) -> paramiko.SSHClient:
        with self._lock:
            t = self._client.get_transport() if self._client else None
            if t is None or not t.is_active():
                if self._client is not None:
                    self._client.close()
                self._idle.clear()
                self._client = self._connect()
            return self._client

    def _take(self) -> _Session:
        """An idle `ftorch-host` session, or a new one."""
        client = self._session()
        with self._lock:
            while self._idle:
                s = self._idle.pop()
                if not (s.chan.closed or s.chan.eof_received):
                    return s
        try:
            transport = client.get_transport()
            assert transport is not None
            chan = transport.open_session(timeout=self.ep.timeout)
            chan.exec_command(REMOTE_COMMAND)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise self._fail(f"SSH session failed: {e}") from None
        return _Session(chan, chan.makefile("rb"))

    def request(self, op: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        s = self._take()
        try:
            s.chan.settimeout(timeout)
            s.chan.sendall(json.dumps({"op": op, **args}).encode() + b"\n")
            line = s.out.readline()
        except TimeoutError:
            self.close()   # the connection itself is suspect: the next request opens a new one
            raise RemoteError(f"{self.label}: no answer to {op!r} within {timeout:.0f} s") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            s.chan.close()
            self.close()
            raise self._fail(f"connection lost during {op!r}: {e}") from None
        if not line:
            status = s.chan.recv_exit_status() if s.chan.exit_status_ready() else -1
            s.chan.close()
            if status == 127:
                raise RemoteError(f"{self.label}: {REMOTE_COMMAND} not found: is ftorch installed "
                                  "there (and on PATH for SSH sessions)?")
            raise RemoteError(f"{self.label}: {REMOTE_COMMAND} ended without answering {op!r} "
                              f"(exit {status})")
        with self._lock:
            self._idle.append(s)
        try:
            reply = json.loads(line)
        except ValueError:
            raise RemoteError(f"{self.label}: unreadable answer to {op!r}: {line[:80]!r}") from None
        if not reply.get("ok"):
            raise RemoteError(f"{self.label}: {reply.get('error')}", int(reply.get("exit_code", 1)))
        reply.pop("ok", None)
        return reply

    def _sftp(self) -> paramiko.SFTPClient:
        try:
            return self._session().open_sftp()
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.close()
            raise self._fail(f"SFTP failed: {e}") from None

    def put_bytes(self, data: bytes, remote: str, mode: int = 0o644) -> None:
        with self._sftp() as sftp, sftp.open(remote, "wb") as f:
            f.chmod(mode)
            f.write(data)

    def put_ranges(self, local: str, remote: str, ranges: list[tuple[int, int]], size: int,
                   progress: Progress | None) -> None:
        total, done = sum(n for _, n in ranges), 0
        with self._sftp() as sftp, open(local, "rb") as src, sftp.open(remote, "wb") as dst:
            dst.set_pipelined(True)
            for start, length in ranges:
                src.seek(start)
                dst.seek(start)
                left = length
                while left:
                    chunk = src.read(min(left, CHUNK))
                    if not chunk:
                        raise OSError(f"{local} ended early")
                    dst.write(chunk)
                    left -= len(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
            dst.truncate(size)

    def read_bytes(self, remote: str, offset: int = 0, limit: int = 1 << 20) -> bytes:
        try:
            with self._sftp() as sftp, sftp.open(remote, "rb") as f:
                f.seek(offset if offset >= 0 else max(0, f.stat().st_size + offset))
                return f.read(limit)
        except OSError as e:
            raise RemoteError(f"{self.label}: cannot read {remote}: {e.strerror or e}") from None

    def close(self) -> None:
        with self._lock:
            self._idle.clear()
            if self._client is not None:
                self._client.close()
                self._client = None


_pool: dict[Endpoint, SshTransport] = {}
_pool_lock = threading.Lock()


def close_all() -> None:
    """Close every connection of this process (the lab calls it when it tears its hosts down)."""
    with _pool_lock:
        for t in _pool.values():
            t.close()


def connect(ep: Endpoint) -> SshTransport:
    """The one transport of this process to that endpoint (connected on first use)."""
    with _pool_lock:
        if ep not in _pool:
            _pool[ep] = SshTransport(ep)
        return _pool[ep]
