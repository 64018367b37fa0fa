import pytest

from ftorch.channel.framing import HEADER_SIZE, MAX_PAYLOAD, Frame, FrameDecoder, Kind, encode
from ftorch.errors import FrameError


def test_round_trip_in_any_split():
    frames = [Frame(Kind.DATA, 12, 100, b"abc" * 100, 5), Frame(Kind.ACK, 312, 90),
              Frame(Kind.BEAT, 312, 100, stamp=7), Frame(Kind.END, 312, 100)]
    wire = b"".join(encode(f) for f in frames)
    for step in (1, 7, len(wire)):
        dec, out = FrameDecoder(), []
        for i in range(0, len(wire), step):
            out += dec.feed(wire[i:i + step])
        assert out == frames


def test_corrupt_payload_is_detected():
    wire = bytearray(encode(Frame(Kind.DATA, 12, 5, b"\x00" * 64)))
    wire[HEADER_SIZE + 10] ^= 1
    with pytest.raises(FrameError, match="checksum mismatch"):
        FrameDecoder().feed(bytes(wire))


def test_corrupt_offset_is_detected():
    wire = bytearray(encode(Frame(Kind.DATA, 12, 5, b"x")))
    wire[6] ^= 0x40
    with pytest.raises(FrameError, match="checksum"):
        FrameDecoder().feed(bytes(wire))


def test_bad_magic_version_length():
    with pytest.raises(FrameError, match="magic"):
        FrameDecoder().feed(b"XX" + bytes(HEADER_SIZE))
    wire = bytearray(encode(Frame(Kind.ACK, 1, 2)))
    wire[2] = 9
    with pytest.raises(FrameError, match="version 9"):
        FrameDecoder().feed(bytes(wire))
    wire = bytearray(encode(Frame(Kind.ACK, 1, 2)))
    wire[36:40] = (MAX_PAYLOAD + 1).to_bytes(4, "big")
    with pytest.raises(FrameError, match="exceeds"):
        FrameDecoder().feed(bytes(wire))
    with pytest.raises(FrameError):
        encode(Frame(Kind.DATA, 0, 0, bytes(MAX_PAYLOAD + 1)))


def test_frame_end_offset():
    assert Frame(Kind.DATA, 100, 0, b"12345").end == 105
