import json
import lzma
import random
import struct
from pathlib import Path

import pytest

from ftorch.errors import LogFormatError
from ftorch.rr.replaylog import (
    ASYNC_NET,
    CLOCK_HOST,
    END,
    HEADER_SIZE,
    INSTRUCTION,
    MAX_ARRAY,
    MAX_BLOCK_JUMP,
    REPLAY_VERSION,
    LogParser,
    block_completions,
    check_header,
    scan_file,
)

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def real_log() -> bytes:
    return lzma.decompress((FIX / "boot.rr.xz").read_bytes())


def test_real_log_total_equals_qemu_count(real_log):
    expected = json.loads((FIX / "boot.json").read_text())["icount"]
    check_header(real_log[:HEADER_SIZE])
    p = LogParser()
    assert p.feed(real_log[HEADER_SIZE:]) == len(real_log) - HEADER_SIZE
    assert p.icount == expected
    assert p.ended and p.pending == 0
    assert p.closing_at is not None and p.closing_at < p.offset  # SHUTDOWN, clocks, END
    assert p.counts[8] > 0, "the fixture should hold disk (ASYNC_BLOCK) events"
    # QEMU numbers disk requests from 0 and completed them in order in this recording
    assert p.next_block == p.counts[8] and p.first_open_block == p.next_block
    assert p.blocks_out_of_order == 0


def test_block_completions_tracked_in_and_out_of_order():
    p = LogParser(next_block=5)
    p.feed(block_completions(5, 2))
    assert (p.next_block, p.first_open_block) == (7, 7)
    p.feed(block_completions(9, 1))            # 7 and 8 overtaken: still open
    assert (p.next_block, p.first_open_block, p.blocks_out_of_order) == (10, 7, 1)
    p.feed(block_completions(7, 1))
    assert p.first_open_block == 8
    p.feed(block_completions(8, 1))
    assert p.first_open_block == 10 and not p.open_blocks
    assert block_completions(3, 2) == b"\x08" + (3).to_bytes(8, "big") + b"\x08" + (4).to_bytes(8, "big")


def test_split_feeding_gives_same_boundaries(real_log):
    body = real_log[HEADER_SIZE:HEADER_SIZE + 400_000]
    whole = LogParser()
    whole.feed(body)
    rng = random.Random(7)
    p, pos, boundaries = LogParser(), 0, []
    while pos < len(body):
        n = rng.randint(1, 3000)
        p.feed(body[pos:pos + n])
        boundaries.append((p.offset, p.icount))
        pos += n
    assert (p.offset, p.icount) == (whole.offset, whole.icount)
    # every boundary is a real event boundary: re-parsing up to it leaves nothing pending
    for off, ic in rng.sample(boundaries, 20):
        q = LogParser()
        q.feed(body[:off - HEADER_SIZE])
        assert (q.offset, q.icount, q.pending) == (off, ic, 0)


def test_partial_event_is_held_back():
    p = LogParser()
    assert p.feed(bytes([INSTRUCTION, 0, 0])) == 0
    assert p.pending == 3 and p.offset == HEADER_SIZE
    p.feed(bytes([1, 0]))
    assert (p.offset, p.icount, p.pending) == (HEADER_SIZE + 5, 256, 0)


def test_the_last_host_clock_read_dates_the_position():
    clock = bytes([CLOCK_HOST]) + struct.pack(">q", 1_795_000_000_123_456_000)
    later = bytes([CLOCK_HOST]) + struct.pack(">q", 1_795_000_000_200_000_000)
    p = LogParser()
    assert p.host_clock_ns is None
    p.feed(clock + bytes([INSTRUCTION, 0, 0, 0, 9]) + later[:5])   # the second read is partial
    assert p.host_clock_ns == 1_795_000_000_123_456_000 and p.icount == 9
    p.feed(later[5:])
    assert p.host_clock_ns == 1_795_000_000_200_000_000


def test_real_log_host_clock_is_the_wall_clock_of_the_recording(real_log):
    p = LogParser()
    p.feed(real_log[HEADER_SIZE:])
    # the fixture was recorded in November 2026; its last read is its end
    assert 1_795_000_000 < p.host_clock_ns / 1e9 < 1_796_000_000


def test_net_event_payload_and_frames():
    frame = b"\xaa" * 60
    ev = bytes([ASYNC_NET, 3]) + struct.pack(">II", 0, len(frame)) + frame
    p = LogParser()
    p.net_frames = []
    p.feed(ev[:20])
    assert p.net_frames == []
    p.feed(ev[20:])
    assert p.net_frames == [frame] and p.pending == 0


def test_header_errors():
    with pytest.raises(LogFormatError, match="still running or was killed"):
        check_header(bytes(12))
    with pytest.raises(LogFormatError, match="not the supported"):
        check_header(struct.pack(">I", 0xE0200B) + bytes(8))
    with pytest.raises(LogFormatError, match="truncated"):
        check_header(struct.pack(">I", REPLAY_VERSION))


def test_garbage_and_data_after_end():
    with pytest.raises(LogFormatError, match="unknown replay event kind 200"):
        LogParser().feed(bytes([200]))
    with pytest.raises(LogFormatError, match="after the END"):
        LogParser().feed(bytes([END, INSTRUCTION]))


def test_scan_file_reports_truncation(tmp_path, real_log):
    f = tmp_path / "cut.log"
    f.write_bytes(real_log[:100_003])
    with pytest.raises(LogFormatError, match="ends inside an event|no END event"):
        scan_file(str(f))
    f.write_bytes(real_log)
    assert scan_file(str(f)).ended


def test_impossible_block_ids_and_lengths_are_corruption_not_allocation():
    p = LogParser()
    p.feed(block_completions(0, 3))
    with pytest.raises(LogFormatError, match=r"disk completion 1099511627776 .* corrupt log"):
        p.feed(block_completions(1 << 40, 1))          # would have allocated 2^40 open ids
    ok = LogParser()
    ok.feed(block_completions(MAX_BLOCK_JUMP, 1))      # a completion that overtook the others
    assert ok.first_open_block == 0 and len(ok.open_blocks) == MAX_BLOCK_JUMP
    for kind, head in ((9, bytes([0]) + struct.pack(">I", 0)), (23, b""), (27, struct.pack(">I", 0))):
        event = bytes([kind]) + head + struct.pack(">I", MAX_ARRAY + 1)   # length only
        with pytest.raises(LogFormatError, match="over 1048576 bytes: corrupt log"):
            LogParser().feed(event)
    audio = bytes([26]) + struct.pack(">QQ", 1 << 40, 0)
    with pytest.raises(LogFormatError, match="audio event of 1099511627776 samples"):
        LogParser().feed(audio)
