"""Arbiter: the rules (pure) and the shared-path test-and-set (real files, real processes)."""
from __future__ import annotations

import errno
import multiprocessing
import os
import time
from contextlib import contextmanager

import pytest

from ftorch.arbiter.nfsclient import parse_url
from ftorch.arbiter.rules import (
    ArbiterError,
    Ownership,
    claim_target,
    decode,
)
from ftorch.arbiter.sharedlock import FolderFiles, SharedLock, Storage


def rec(gen: int, host: str) -> Ownership:
    return Ownership("p", gen, host, 100.0)


def test_record_round_trip_and_checks():
    r = rec(3, "a")
    assert decode(r.encode(), "p", 3, "x") == r
    with pytest.raises(ArbiterError, match="corrupt ownership record"):
        decode(b"\x00garbage", "p", 3, "gen-3")
    with pytest.raises(ArbiterError, match="belongs to pair 'p'.*not 'q'"):
        decode(r.encode(), "q", 3, "gen-3")
    with pytest.raises(ArbiterError, match="says generation 3, its name says 4"):
        decode(r.encode(), "p", 4, "gen-4")


def test_both_sides_race_for_the_one_generation_after_the_known_one():
    assert claim_target(rec(4, "a"), 4, "b", "a") == 5      # backup taking over
    assert claim_target(rec(4, "a"), 4, "a", "b") == 5      # primary going on alone: same target


def test_a_side_that_reads_after_its_peer_won_has_lost():
    # the peer already holds 5: claiming 6 would supersede it and make two live copies
    assert claim_target(rec(5, "a"), 4, "b", "a") is None
    assert claim_target(rec(5, "b"), 4, "a", "b") is None


def test_unknown_owner_or_missing_record_is_not_claimed():
    assert claim_target(rec(4, "c"), 4, "b", "a") is None
    assert claim_target(None, 4, "b", "a") is None


def _race(root: str, host: str, start: float, q) -> None:
    lock = SharedLock(__import__("pathlib").Path(root), "p")
    while time.time() < start:
        pass
    q.put((host, lock.claim(1, host, "race") is not None))


def test_exactly_one_winner_per_generation(tmp_path):
    SharedLock(tmp_path, "p").init()
    q = multiprocessing.Queue()
    start = time.time() + 0.5
    procs = [multiprocessing.Process(target=_race, args=(str(tmp_path), f"h{i}", start, q))
             for i in range(8)]
    for p in procs:
        p.start()
    results = [q.get(timeout=30) for _ in procs]
    for p in procs:
        p.join()
    winners = [h for h, won in results if won]
    assert len(winners) == 1
    assert SharedLock(tmp_path, "p").current().host == winners[0]
    assert not [f for f in os.listdir(tmp_path / "p") if f.startswith(".claim")]


def test_generations_grow_and_fence_the_old_owner(tmp_path):
    lock = SharedLock(tmp_path, "p")
    lock.init()
    assert lock.current() is None
    assert lock.claim(1, "a", "up") is not None
    assert lock.claim(1, "b", "late") is None          # the same generation is taken
    assert (lock.current().generation, lock.current().host) == (1, "a")
    assert lock.claim(2, "b", "failover").host == "b"
    assert (lock.current().generation, lock.current().host) == (2, "b")
    assert lock.current().generation == 2


def test_bad_shared_paths_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ArbiterError, match="lock folder missing"):
        SharedLock(tmp_path, "nope").current()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArbiterError, match="file is not a folder .shared storage not mounted"):
        SharedLock(tmp_path / "file", "p").claim(1, "a", "x")
    lock = SharedLock(tmp_path, "p", timeout_s=0.3)
    lock.init()
    (tmp_path / "p" / "gen-1").write_bytes(b"{not json")
    with pytest.raises(ArbiterError, match="corrupt ownership record"):
        lock.current()
    monkeypatch.setattr(os, "listdir", lambda _p: time.sleep(2) or [])
    with pytest.raises(ArbiterError, match="did not answer .* within 0.3 s"):
        lock.current()


class _LostReply(FolderFiles):
    """A server that links, then loses the reply: the client's retransmission (or the error
    it gets instead) says EEXIST or EIO, though the link is made."""

    def __init__(self, root, error: int) -> None:
        super().__init__(root)
        self.error = error

    def link(self, src: str, dst: str) -> None:
        super().link(src, dst)
        raise OSError(self.error, os.strerror(self.error))


@pytest.mark.parametrize("error", [errno.EEXIST, errno.EIO])
def test_a_lost_link_reply_still_wins_by_the_link_count(tmp_path, monkeypatch, error):
    lock = SharedLock(tmp_path, "p")
    lock.init()

    @contextmanager
    def lossy(_self):
        yield _LostReply(tmp_path, error)
    monkeypatch.setattr(Storage, "session", lossy)
    assert lock.claim(1, "a", "lossy").host == "a"
    assert lock.claim(1, "b", "late") is None          # a real EEXIST: the count stays 1
    assert lock.current().host == "a"
    assert os.listdir(tmp_path / "p") == ["gen-1"]


def test_reset_forgets_generations_and_a_missing_mount_is_not_made(tmp_path):
    with pytest.raises(ArbiterError, match="deep does not exist .shared storage not mounted"):
        SharedLock(tmp_path / "deep", "p").init()
    (tmp_path / "deep" / "er").mkdir(parents=True)
    lock = SharedLock(tmp_path / "deep" / "er", "p")
    lock.init()
    assert lock.claim(1, "a", "up") and lock.claim(2, "b", "failover")
    (tmp_path / "deep" / "er" / "p" / "keep.txt").write_text("operator's note")
    lock.reset()
    assert lock.current() is None
    assert os.listdir(tmp_path / "deep" / "er" / "p") == ["keep.txt"]


def test_nfs_urls_name_server_export_and_folder():
    assert parse_url("nfs://10.77.0.50/ftorch/lab") == ("10.77.0.50", "/ftorch", "/lab")
    assert parse_url("nfs://storage.example/export/") == ("storage.example", "/export", "/")
    s = Storage("nfs://10.77.0.50/ftorch/a/b", 2.0)
    assert s.folder == "/a/b" and SharedLock("nfs://h/e/a/b", "p").where == "nfs://h/e/a/b/p"
