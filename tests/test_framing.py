import zlib

import pytest

from ftorch.channel.framing import HEADER_SIZE, MAX_PAYLOAD, DataEncoder, Frame, FrameDecoder, Kind, encode
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


def _idle_log(n: int) -> bytes:
    """Events as an idle guest's log has them: instruction counts, clock reads, checkpoints."""
    out = bytearray()
    for i in range(n):
        out += bytes([0]) + (40000 + i % 7).to_bytes(4, "big")
        out += bytes([28]) + (1_700_000_000_000_000_000 + i * 4_000_123).to_bytes(8, "big")
        out += bytes([32])
    return bytes(out)


def test_deflated_data_arrives_as_the_data_it_stands_for():
    enc, dec = DataEncoder(), FrameDecoder()
    frames = [Frame(Kind.DATA, 12 + 1400 * i, i, _idle_log(100)[1400 * i % 700:][:1400], 5, 3)
              for i in range(20)]
    wire = b"".join(enc.encode(f, private=False) for f in frames)
    assert len(wire) < sum(len(f.payload) for f in frames) / 3
    out = []
    for i in range(0, len(wire), 13):
        out += dec.feed(wire[i:i + 13])
    assert out == frames


def test_network_input_goes_raw_and_outside_the_deflate_stream():
    enc, dec = DataEncoder(), FrameDecoder()
    secret = Frame(Kind.DATA, 12, 1, b"password=hunter2" * 4)
    probe = Frame(Kind.DATA, 76, 2, b"password=hunter2" * 4)
    raw = enc.encode(secret, private=True)
    assert raw == encode(secret) and b"hunter2" in raw
    # the probe does not compress against the secret: it never entered the stream
    fresh = DataEncoder().encode(probe, private=False)
    assert enc.encode(probe, private=False) == fresh
    assert dec.feed(raw + fresh) == [secret, probe]


def test_deflated_frame_out_of_its_stream_is_refused():
    enc = DataEncoder()
    enc.encode(Frame(Kind.DATA, 12, 1, _idle_log(50)), private=False)
    later = enc.encode(Frame(Kind.DATA, 762, 2, _idle_log(50)), private=False)
    with pytest.raises(FrameError, match="does not inflate"):
        FrameDecoder().feed(later)   # refers back into a window this decoder never saw


def test_deflate_bomb_and_ended_stream_are_refused():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    packed = bomb.compress(bytes(MAX_PAYLOAD + 10)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(FrameError, match="inflates past"):
        FrameDecoder().feed(encode(Frame(Kind.ZDATA, 12, 0, packed)))
    final = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    packed = final.compress(b"abc") + final.flush()
    with pytest.raises(FrameError, match="ends the session"):
        FrameDecoder().feed(encode(Frame(Kind.ZDATA, 12, 0, packed)))
