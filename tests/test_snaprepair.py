import struct

from ftorch.rr.snapshot import (
    SECTION_FOOTER,
    SECTION_FULL,
    ReplaySection,
    decode_section,
    encode_fields,
    find_section,
)

# what the go-live snapshot of a failover held (read from a real one, docs/qemu-notes.md)
GOLIVE = ReplaySection(1795632755094663000, 30130274123, 6294077035, 0, 13874892, 8, 1,
                       (1 << 64) - 1, 1101, 1101)


def section(sid: int, fields: bytes, version: int = 3) -> bytes:
    return (bytes([SECTION_FULL]) + struct.pack(">I", sid) + b"\x06replay" + struct.pack(">II", 0, version)
            + fields + bytes([SECTION_FOOTER]) + struct.pack(">I", sid))


def test_finds_the_real_section_not_lookalikes():
    fields = encode_fields(GOLIVE)
    ram = b"\x00" * 100 + b"\x04abcd\x06replay" + b"\x11" * 200    # the name inside guest memory
    bad_footer = section(7, fields)[:-5] + b"\x7f" + b"\x00" * 4
    buf = ram + bad_footer + section(9, fields) + b"\x04" + b"\x00" * 30
    at = find_section(buf)
    assert at == len(ram) + len(bad_footer)
    assert decode_section(buf, at) == GOLIVE
    assert find_section(ram + section(9, fields, version=2)) is None


def test_fresh_recording_clears_only_the_reader_state():
    fresh = GOLIVE.fresh_recording()
    assert (fresh.has_unread_data, fresh.data_kind, fresh.read_event_id, fresh.instruction_count) == (
        0, 0xFFFFFFFF, (1 << 64) - 1, 0)
    kept = ("clock_host", "clock_virtual_rt", "current_icount", "current_event", "file_offset",
            "block_request_id")
    assert all(getattr(fresh, k) == getattr(GOLIVE, k) for k in kept)
    buf = section(3, encode_fields(fresh))
    assert decode_section(buf, find_section(buf)) == fresh
