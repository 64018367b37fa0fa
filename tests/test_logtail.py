import struct
import time

import pytest

from ftorch.channel.logtail import LogTail
from ftorch.errors import LogFormatError
from ftorch.rr.replaylog import CLOCK_HOST, HEADER_SIZE, INSTRUCTION, block_completions


def instr(n: int) -> bytes:
    return bytes([INSTRUCTION]) + struct.pack(">I", n)


def wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def tail(tmp_path):
    path = tmp_path / "rr.log"
    body = instr(100) + block_completions(0, 2) + instr(50) + block_completions(2, 1) + instr(7)
    path.write_bytes(bytes(HEADER_SIZE) + body)
    t = LogTail(str(path), base_icount=1000)   # a recorder started from a snapshot at 1000
    t.start()
    wait(lambda: t.head()[0] == HEADER_SIZE + len(body))
    yield t, body
    t.stop()


def test_snapshot_offset_becomes_a_chunk_boundary_with_its_count(tail):
    t, body = tail
    assert t.icount_at(HEADER_SIZE) == 1000
    mid = HEADER_SIZE + 5 + 18 + 5                     # after 100 + 50 instructions, blocks 0-1
    assert t.boundary_at(mid, timeout=5) == (1150, 2)
    assert t.icount_at(mid) == 1150
    rest = t.chunk_at(mid, timeout=1)
    assert rest.end == HEADER_SIZE + len(body) and rest.icount == 1157 and rest.block == 3
    assert t.boundary_at(mid, timeout=5) == (1150, 2)  # already a boundary: same answer


def test_offset_inside_an_event_is_refused(tail):
    t, _ = tail
    with pytest.raises(LogFormatError, match="not an event boundary"):
        t.boundary_at(HEADER_SIZE + 3, timeout=5)


def test_the_index_keeps_only_what_the_backup_has_not_acknowledged(tmp_path):
    path = tmp_path / "rr.log"
    path.write_bytes(bytes(HEADER_SIZE) + b"".join(instr(i + 1) for i in range(200)))
    t = LogTail(str(path), max_chunk=10)   # all there at the start: two events a chunk
    t.start()
    try:
        wait(lambda: t.head()[0] == HEADER_SIZE + 200 * 5)
        assert t.indexed == 100
        acked = HEADER_SIZE + 150 * 5
        t.forget_before(acked)
        assert t.indexed == 26                     # 50 events unacked, and the chunk before
        assert t.icount_at(acked) == sum(range(1, 151))   # a resume there is still checked
        assert t.chunk_at(acked, timeout=1).offset == acked
        with pytest.raises(LogFormatError, match="acknowledged earlier"):
            t.chunk_at(HEADER_SIZE, timeout=1)
    finally:
        t.stop()


def clock(seconds: float) -> bytes:
    return bytes([CLOCK_HOST]) + struct.pack(">q", int(seconds * 1e9))


def test_chunks_carry_when_the_primary_recorded_them_not_when_the_tail_read_them(tmp_path):
    path = tmp_path / "rr.log"
    first = clock(1000.0) + instr(10) + clock(1000.5) + instr(20)
    second = instr(5) + clock(1001.25) + instr(1)
    path.write_bytes(bytes(HEADER_SIZE) + first + second)
    t = LogTail(str(path), max_chunk=len(first))
    t.start()
    try:
        wait(lambda: t.head()[0] == HEADER_SIZE + len(first + second))
        a = t.chunk_at(HEADER_SIZE, timeout=1)
        b = t.chunk_at(a.end, timeout=1)
        assert (a.icount, a.recorded_at) == (30, 1000.5)
        assert (b.icount, b.recorded_at) == (36, 1001.25)
        # a snapshot's offset inside the second chunk: its head is dated by the first chunk's
        # last read (no read in between), its rest keeps the chunk's date
        assert t.boundary_at(a.end + 5, timeout=5) == (35, 0)
        head = t.chunk_at(a.end, timeout=1)
        assert (head.icount, head.recorded_at) == (35, 1000.5)
        assert t.chunk_at(head.end, timeout=1).recorded_at == 1001.25
    finally:
        t.stop()


def test_a_log_with_no_clock_read_yet_counts_from_when_it_was_read(tmp_path):
    path = tmp_path / "rr.log"
    path.write_bytes(bytes(HEADER_SIZE) + instr(3))
    before = time.time()
    t = LogTail(str(path))
    t.start()
    try:
        wait(lambda: t.head()[0] == HEADER_SIZE + 5)
        assert before <= t.chunk_at(HEADER_SIZE, timeout=1).recorded_at <= time.time()
    finally:
        t.stop()
