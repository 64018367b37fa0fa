"""Only the pair's two agents can speak on the logging channel (channel/trust.py): a stranger's
HELLO, DATA, END and ACK are refused before they change anything, counted, and cannot hold the
session slot; the HELLO's identity is always checked. Real TLS over loopback TCP."""
from __future__ import annotations

import os
import socket
import ssl
import threading

import pytest
from channelkit import append, events, sender_to_listener, wait

from ftorch.channel import trust
from ftorch.channel.framing import Frame, FrameDecoder, Kind, encode
from ftorch.channel.receiver import MAX_PENDING
from ftorch.errors import ChannelError
from ftorch.rr.replaylog import HEADER_SIZE, VERSION_BYTES


def stranger_frames(at: int) -> bytes:
    """What a stranger who knows the protocol would send: all well formed, valid CRCs."""
    return b"".join(encode(f) for f in (
        Frame(Kind.HELLO, at, 0, b"t"), Frame(Kind.DATA, at, 10**9, events(5)),
        Frame(Kind.END, at, 10**9), Frame(Kind.ACK, 1 << 40, 0)))


def streamed(channel, n: int) -> bytes:
    log_path, feeder, reader, receiver, sender = channel
    body = events(n)
    append(log_path, body)
    wait(lambda: len(reader.data) == 4 + len(body))
    return body


def connect_from(address: str, to: tuple[str, int]) -> socket.socket:
    return socket.create_connection(to, source_address=(address, 0))


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.2"])
def test_a_stranger_in_clear_is_refused_and_changes_nothing(channel, source):
    """From the primary's address (refused by TLS) and from another (refused unheard)."""
    log_path, feeder, reader, receiver, sender = channel
    body = streamed(channel, 300)
    with connect_from(source, receiver.bind) as s:
        s.sendall(stranger_frames(feeder.received))
        wait(lambda: receiver.stats.refused_peers == 1)
    more = events(300, start=300)
    append(log_path, more)
    wait(lambda: len(reader.data) == 4 + len(body) + len(more))
    assert bytes(reader.data) == VERSION_BYTES + body + more
    assert not receiver.stats.ended and receiver.stats.connects == 1
    assert source in receiver.stats.last_refused


def test_a_stranger_with_a_certificate_of_its_own_is_refused(channel, tmp_path):
    log_path, feeder, reader, receiver, sender = channel
    streamed(channel, 100)
    own = tmp_path / "stranger"
    own.mkdir()
    trust.write_credential(own, trust.new_credential("t"))   # same pair name, other key
    ctx = trust.context(own, server=False)
    with connect_from("127.0.0.1", receiver.bind) as raw, \
            pytest.raises((ssl.SSLError, ConnectionError)):
        with ctx.wrap_socket(raw) as s:
            s.sendall(stranger_frames(feeder.received))
            s.recv(1)   # TLS 1.3: the server's refusal of the client's certificate shows here
    wait(lambda: receiver.stats.refused_peers == 1)
    assert sender.stats.connects == 1 and receiver.stats.connects == 1


def test_silent_strangers_cannot_hold_the_slot_against_the_primary(channel):
    """More silent connections than may authenticate at once, from another address: closed
    unheard, and not one of the primary's reconnects is turned away."""
    log_path, feeder, reader, receiver, sender = channel
    body = streamed(channel, 200)
    silent = [connect_from("127.0.0.2", receiver.bind) for _ in range(MAX_PENDING + 2)]
    try:
        wait(lambda: receiver.stats.refused_peers == MAX_PENDING + 2)
        sender.proxy.cut()
        more = events(200, start=200)
        append(log_path, more)
        wait(lambda: len(reader.data) == 4 + len(body) + len(more))
        assert bytes(reader.data) == VERSION_BYTES + body + more
        assert receiver.stats.connects == 2      # none of the primary's connections was refused
        assert receiver.stats.refused_peers == MAX_PENDING + 2
        assert "127.0.0.2" in receiver.stats.last_refused
    finally:
        for s in silent:
            s.close()


def test_the_primary_refuses_a_listener_without_the_credential(tmp_path, pair_dir):
    """A stranger at the backup's address (or a port taken by someone else) gets no log."""
    own = tmp_path / "stranger"
    own.mkdir()
    trust.write_credential(own, trust.new_credential("t"))
    ctx = trust.context(own, server=True)
    got = []

    def impostor(srv: socket.socket) -> None:
        for _ in range(2):
            conn, _ = srv.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as s:
                    s.sendall(encode(Frame(Kind.HELLO, HEADER_SIZE, 0, b"t")))
                    got.append(s.recv(65536))
            except (ssl.SSLError, OSError):
                pass

    with sender_to_listener(tmp_path, pair_dir, events(100)) as (srv, sender):
        threading.Thread(target=impostor, args=(srv,), daemon=True).start()
        wait(lambda: sender.stats.refused_peers >= 2)
        assert sender.stats.sent_bytes == 0 and sender.stats.acked_offset == 0 and not any(got)
        assert "did not prove" not in sender.stats.last_refused   # the raw cause, for the log


def test_a_hello_at_the_stream_start_is_checked_too(tmp_path, pair_dir):
    """The backup of another recording says offset 12 with a wrong instruction count: refused
    (the start of a log is no exception to the identity check)."""
    tls = trust.context(pair_dir, server=True)
    with sender_to_listener(tmp_path, pair_dir, events(100), base_icount=5000) as (srv, sender):
        conn, _ = srv.accept()
        with tls.wrap_socket(conn, server_side=True) as s:
            s.sendall(encode(Frame(Kind.HELLO, HEADER_SIZE, 0, b"t")))
            dec = FrameDecoder()
            while data := s.recv(65536):
                assert not [f for f in dec.feed(data) if f.kind == Kind.DATA]
        assert sender.stats.acked_offset == 0 and sender.stats.sent_bytes == 0


def test_a_key_others_can_read_is_refused(pair_dir):
    os.chmod(pair_dir / trust.KEY_FILE, 0o644)
    with pytest.raises(ChannelError, match="must be 0600"):
        trust.context(pair_dir, server=True)


def test_a_missing_credential_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(ChannelError, match=f"{tmp_path}.*ftorch up"):
        trust.context(tmp_path, server=False)
    with pytest.raises(ChannelError, match="ftorch up"):
        trust.read_credential(tmp_path)
