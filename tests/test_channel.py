"""Logging channel end to end without QEMU: a growing log file, the sender, the receiver, the
spool and the pipe, over real TCP on loopback. What comes out of the pipe must be exactly the
version bytes and the log from byte 12 on, whatever happens to the connection."""
from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest
from channelkit import append, events, icount_of, insider, noise, sender_to_listener, wait

from ftorch.channel import trust
from ftorch.channel.feeder import IN_FLIGHT_MAX, Feeder, StreamStart
from ftorch.channel.logtail import LogTail
from ftorch.rr.replaylog import END, HEADER_SIZE, VERSION_BYTES, block_completions


def test_stream_arrives_exactly_and_ends(channel):
    log_path, feeder, reader, receiver, sender = channel
    body = events(3000)
    for i in range(0, len(body), 777):  # the recorder writes at arbitrary event cuts
        append(log_path, body[i:i + 777])
    append(log_path, bytes([14, 28]) + struct.pack(">q", 7) + bytes([END]))  # SHUTDOWN, clock, END
    # the recorded closing events never reach the backup; its feeder writes an END of its own,
    # after completions for the disk requests that may be in flight (30 completed: 0-29)
    expected = VERSION_BYTES + body + block_completions(30, IN_FLIGHT_MAX) + bytes([END])
    wait(lambda: sender.stats.finished and feeder.final and len(reader.data) >= len(expected))
    assert feeder.received_block == 30
    assert bytes(reader.data) == expected
    assert feeder.injected
    assert feeder.icount == icount_of(3000)
    assert sender.stats.acked_offset == HEADER_SIZE + len(body)
    assert sender.stats.wire_bytes < sender.stats.sent_bytes / 2   # deflated on the wire


def test_planned_switch_cut_ends_the_stream_after_what_is_in_the_file(channel):
    log_path, feeder, reader, receiver, sender = channel
    body = events(800)
    append(log_path, body + body[:3])          # a partial event after the last complete one
    offset, icount = sender.tail.cut_here(timeout=10)
    assert (offset, icount) == (HEADER_SIZE + len(body), icount_of(800))
    append(log_path, body[3:5] + events(50, start=800))   # recorded after the cut: never sent
    expected = VERSION_BYTES + body + block_completions(8, IN_FLIGHT_MAX) + bytes([END])
    # wait on the reader (the pipe's far end), not on the feeder: what it read is the assertion
    wait(lambda: sender.stats.finished and feeder.final and len(reader.data) >= len(expected))
    assert bytes(reader.data) == expected
    assert receiver.stats.ended and feeder.icount == icount_of(800)


def test_dropped_connection_resumes_from_last_ack(channel):
    log_path, feeder, reader, receiver, sender = channel
    first, second = events(1000), events(1000, start=1000)
    append(log_path, first)
    wait(lambda: feeder.received == HEADER_SIZE + len(first))
    connects = receiver.stats.connects
    sender.proxy.cut()  # the connection breaks under both agents' feet
    for i in range(0, len(second), 500):
        append(log_path, second[i:i + 500])
    wait(lambda: feeder.received == HEADER_SIZE + len(first) + len(second))
    wait(lambda: len(reader.data) == 4 + len(first) + len(second))
    assert bytes(reader.data) == VERSION_BYTES + first + second  # nothing lost, nothing twice
    assert receiver.stats.connects > connects and sender.stats.connects >= 2


def test_corrupt_frame_never_reaches_the_pipe(channel):
    log_path, feeder, reader, receiver, sender = channel
    first = events(500)
    append(log_path, first)
    wait(lambda: len(reader.data) == 4 + len(first))
    sender.corrupt_next.set()
    second = events(500, start=500)
    append(log_path, second)
    wait(lambda: receiver.stats.corrupt_frames == 1)
    wait(lambda: len(reader.data) == 4 + len(first) + len(second))
    assert bytes(reader.data) == VERSION_BYTES + first + second
    assert receiver.stats.connects >= 2
    assert "checksum mismatch" in receiver.stats.last_error


@pytest.mark.stalled_backup
def test_stalled_backup_does_not_stall_the_channel(channel):
    """Nobody reads the pipe (a backup QEMU that cannot keep up): the log still flows and is
    acknowledged into the backup's spool, far past what the pipe can hold."""
    log_path, feeder, reader, receiver, sender = channel
    body = events(400_000)  # ~2.6 MB, more than the 1 MiB pipe
    append(log_path, body)
    wait(lambda: sender.stats.acked_offset == HEADER_SIZE + len(body), timeout=60)
    assert feeder.received == HEADER_SIZE + len(body)
    assert feeder.offset < feeder.received  # the pipe is full; the rest waits in the spool
    reader.start()
    wait(lambda: len(reader.data) == 4 + len(body), timeout=60)
    assert bytes(reader.data) == VERSION_BYTES + body


def test_backup_of_another_recording_is_refused(tmp_path):
    """A backup whose spool holds another log resumes at an offset this log cannot match."""
    log_path = tmp_path / "rr.log"
    log_path.write_bytes(bytes(HEADER_SIZE) + events(100))
    tail = LogTail(str(log_path), max_chunk=4096)
    tail.start()
    wait(lambda: tail.head()[0] == HEADER_SIZE + len(events(100)))
    with pytest.raises(Exception, match="not a chunk boundary"):
        tail.icount_at(HEADER_SIZE + 3)
    tail.stop()


def test_stopping_a_worker_that_never_started_is_harmless(tmp_path):
    tail = LogTail(str(tmp_path / "none.log"))
    tail.stop()
    tail.stop()


def test_a_clone_stream_of_clock_reads_only_fills_half_the_pipe_and_counts_as_ready(tmp_path):
    """A paused recorder logs clock reads and no instructions: the backup must not wait for
    instructions that cannot come while the feeder waits for a reader (the clone deadlock)."""
    start = StreamStart(offset=5000, icount=10**9, block=0)
    feeder = Feeder(tmp_path / "replay.fifo", tmp_path / "rx.log", start=start)
    try:
        clock_read = bytes([29]) + (123).to_bytes(8, "big")   # CLOCK_VIRTUAL_RT, i64
        events = clock_read * (feeder.pipe_size // len(clock_read) + 1)
        assert not feeder.half_full()
        feeder.append(start.offset, events, start.icount)
        wait(feeder.half_full)
        assert feeder.icount == start.icount      # not one instruction fed
        fd = os.open(tmp_path / "replay.fifo", os.O_RDONLY | os.O_NONBLOCK)   # QEMU reads
        got = 0
        while got < 5 + len(events):                  # version bytes, throw-away event, events
            try:
                got += len(os.read(fd, 1 << 20))
            except BlockingIOError:
                time.sleep(0.01)
        os.close(fd)
        wait(lambda: feeder.offset == start.offset + len(events))
    finally:
        feeder.close()


def test_an_ack_beyond_what_was_sent_drops_the_connection_and_releases_nothing(tmp_path,
                                                                               pair_dir):
    """A peer that acknowledges log it was never sent (a confused or hostile backup) would make
    the primary release output nobody holds: the sender refuses it and reconnects."""
    from ftorch.channel.framing import Frame, Kind, encode
    acks: list[int] = []

    def impostor(srv: socket.socket) -> None:
        for _ in range(2):   # two sessions: the sender comes back after the refusal
            insider(srv, pair_dir, [encode(Frame(Kind.ACK, 1 << 40, 0))])

    with sender_to_listener(tmp_path, pair_dir, events(100),
                            on_ack=lambda o, _lease: acks.append(o)) as (srv, sender):
        threading.Thread(target=impostor, args=(srv,), daemon=True).start()
        wait(lambda: sender.stats.refused_acks >= 2 and sender.stats.connects >= 2)
        assert sender.stats.acked_offset == HEADER_SIZE and max(acks) == HEADER_SIZE


def test_silence_counts_from_the_connection_not_from_the_epoch(tmp_path, pair_dir):
    """The failover watch takes `connects > 0 and silent` for a dead peer; right after a
    connect, before the peer's HELLO, that must not hold (a primary once went on alone 2 ms
    after it started)."""
    with sender_to_listener(tmp_path, pair_dir, b"", timeout_s=30.0) as (srv, sender):
        conn, _ = srv.accept()   # accepts, never says HELLO
        wait(lambda: sender.stats.connects == 1)
        assert not sender.stats.live.silent() and sender.stats.live.silent_for() < 10
        conn.close()


def test_a_frozen_backup_that_still_accepts_connections_stays_silent(tmp_path, pair_dir):
    """A frozen host's kernel completes TCP connects; reconnecting to it must not make it look
    alive again, or the failover watch would never see the silence last a whole timeout."""
    with sender_to_listener(tmp_path, pair_dir, b"", timeout_s=0.3) as (srv, sender):
        conns = []
        threading.Thread(target=lambda: [conns.append(srv.accept()[0]) for _ in range(3)],
                         daemon=True).start()
        wait(lambda: sender.stats.connects >= 3)
        first = sender.stats.live.last_heard
        assert sender.stats.live.silent() and sender.stats.live.silent_for() > 2 * 0.3
        assert sender.stats.live.last_heard == first   # reconnects proved nothing
        for c in conns:
            c.close()


def test_a_backup_that_takes_no_data_is_found_silent_while_sending(tmp_path, pair_dir):
    """A cut-off backup stops taking data: the primary's send buffer fills and a plain sendall
    would block until the socket's timeout, so this side would find the silence later than the
    backup finds its own (a partition then shows a "streaming" primary beside a live backup).
    The sender keeps reading and judging while it waits to send."""
    from ftorch.channel.framing import Frame, Kind, encode
    tls = trust.context(pair_dir, server=True)

    def mute_backup(srv: socket.socket) -> None:
        # Every connection is taken: on a busy machine the sender may give up on a handshake
        # this thread was slow to answer, and it must find the next one answered too.
        kept = []
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return   # the test is over: its listener is closed
            try:
                conn = tls.wrap_socket(conn, server_side=True)
                conn.sendall(encode(Frame(Kind.HELLO, HEADER_SIZE, 0, b"t")))
            except OSError:
                continue
            kept.append(conn)   # then reads nothing, says nothing

    body = noise(3000)   # ~12 MB deflated or not: more than the socket buffers hold (4 MiB)
    with sender_to_listener(tmp_path, pair_dir, body, timeout_s=0.5) as (srv, sender):
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        threading.Thread(target=mute_backup, args=(srv,), daemon=True).start()
        wait(lambda: "takes no data" in sender.stats.last_error, timeout=60)
        assert sender.stats.live.silent() and sender.stats.sent_offset < HEADER_SIZE + len(body)


def test_space_of_what_the_backup_holds_goes_back_on_both_sides(channel):
    """Both files keep their size and offsets, lose the blocks behind what is done with, and
    the pipe still gets every byte (the channel fixture keeps 0 bytes: all is given back)."""
    log_path, feeder, reader, receiver, sender = channel
    body = events(600_000)   # ~4 MB
    append(log_path, body)
    wait(lambda: len(reader.data) == 4 + len(body), timeout=60)
    assert bytes(reader.data) == VERSION_BYTES + body
    spool = log_path.with_name("rx.log")

    def given_back(path) -> bool:
        return os.stat(path).st_blocks * 512 < len(body) / 2
    wait(lambda: given_back(log_path) and given_back(spool))   # each after its last ack/feed
    for path in (log_path, spool):
        assert os.stat(path).st_size >= HEADER_SIZE + len(body) - 4096, path


def test_the_backups_echoes_keep_the_primarys_lease_running(channel):
    """While the backup follows, its ACKs and BEATs echo the primary's heartbeat clock, and
    the lease under which output may leave stays ahead of now, also while data flows."""
    log_path, feeder, reader, receiver, sender = channel
    body = events(2000)
    for i in range(0, len(body), 500):
        append(log_path, body[i:i + 500])
        wait(lambda: sender.stats.lease_until > time.monotonic())
    for _ in range(20):
        time.sleep(0.05)
        assert sender.stats.lease_until > time.monotonic()
    assert sender.stats.lease_until <= time.monotonic() + sender.timeout_s


def test_acks_that_echo_old_or_future_heartbeats_renew_no_lease(tmp_path, pair_dir):
    """A primary that wakes from a freeze reads acks that waited in its socket: they echo
    heartbeats sent before it froze and must not extend its lease (gate/outputgate.py); an echo
    of a time not yet come (a confused peer) renews nothing either."""
    from ftorch.channel.framing import Frame, Kind, encode
    leases: list[float] = []
    old, future = time.monotonic() - 30, time.monotonic() + 30
    say = [encode(Frame(kind, HEADER_SIZE + 10, 0, block=int(echo * 1e6)))
           for kind, echo in ((Kind.ACK, old), (Kind.ACK, future), (Kind.BEAT, old))]
    say.append(encode(Frame(Kind.ACK, HEADER_SIZE + 20, 0)))   # read last: all were taken

    with sender_to_listener(tmp_path, pair_dir, events(100), timeout_s=5.0,
                            on_ack=lambda _o, lease: leases.append(lease)) as (srv, sender):
        threading.Thread(target=insider, args=(srv, pair_dir, say), daemon=True).start()
        wait(lambda: sender.stats.acked_offset == HEADER_SIZE + 20)
        hello_lease = leases[0]   # from the connection: at most its start + the timeout
        assert hello_lease <= time.monotonic() + 5.0
        assert set(leases) == {hello_lease}, leases
