"""Log space behind what is done with gets back to the filesystem; offsets and the rest stay."""
import os

from ftorch.host.space import BLOCK, STEP, Reclaimer, reclaimable


def test_what_may_go():
    mib = 1 << 20
    assert reclaimable(done=10 * mib, end=20 * mib, keep=4 * mib, punched=0) == (BLOCK, 10 * mib)
    assert reclaimable(done=10 * mib, end=12 * mib, keep=4 * mib, punched=0) == (BLOCK, 8 * mib)
    assert reclaimable(done=10 * mib, end=12 * mib, keep=4 * mib, punched=8 * mib) is None
    assert reclaimable(done=STEP, end=100 * mib, keep=0, punched=0) is None   # < a step yet
    assert reclaimable(done=10 * mib + 5, end=99 * mib, keep=0, punched=0)[1] % BLOCK == 0


def test_the_file_keeps_its_size_and_what_was_not_done(tmp_path):
    p = tmp_path / "rr.log"
    data = os.urandom(8 << 20)
    p.write_bytes(data)
    fd = os.open(p, os.O_RDWR)
    try:
        r = Reclaimer(fd, keep=1 << 20, what="test log")
        before = os.fstat(fd).st_blocks
        r.done_to(done=6 << 20, end=len(data))
        assert not r.failed and r.punched == 6 << 20
        assert os.fstat(fd).st_size == len(data)
        assert os.fstat(fd).st_blocks < before * 0.4
        got = p.read_bytes()
        assert got[:BLOCK] == data[:BLOCK]                 # the header's block stays
        assert got[BLOCK:6 << 20] == bytes((6 << 20) - BLOCK)
        assert got[6 << 20:] == data[6 << 20:]
    finally:
        os.close(fd)
