"""The arbiter's rules: ownership records and who may be live. Pure: no files, no clocks.

Ownership of a pair is a sequence of generations; generation N belongs to whoever created the
record `gen-N` first on the shared path (see sharedlock.py). The generation only grows and is
the fencing token: every live copy knows its own, and a copy that sees a higher one has lost.

Leases close the window between a primary's last confirmation and a backup's win: a primary
releases output only until `confirmed_at + lease_s`; a backup that wins at `won_at` releases
nothing before `won_at + lease_s`, by which time any primary confirmation made before the win
has expired. Both sides use the same lease from the pair's config.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .errors import FtorchError

RECORD_VERSION = 1


class ArbiterError(FtorchError):
    """The shared lock cannot be read or trusted: nobody may go live on it."""


@dataclass(frozen=True)
class Ownership:
    pair: str
    generation: int
    host: str
    since: float        # wall clock of the claim
    reason: str = ""

    def encode(self) -> bytes:
        return json.dumps({"version": RECORD_VERSION, **asdict(self)}, sort_keys=True).encode()


def decode(data: bytes, pair: str, generation: int, where: str) -> Ownership:
    """Parse and check one ownership record; any doubt is an ArbiterError naming the file."""
    try:
        doc = json.loads(data)
        rec = Ownership(pair=str(doc["pair"]), generation=int(doc["generation"]),
                        host=str(doc["host"]), since=float(doc["since"]),
                        reason=str(doc.get("reason", "")))
        version = doc.get("version")
    except (ValueError, KeyError, TypeError):
        raise ArbiterError(f"{where}: corrupt ownership record ({len(data)} bytes); "
                           "move it aside only after checking which host runs the guest") from None
    if version != RECORD_VERSION:
        raise ArbiterError(f"{where}: ownership record version {version!r}, expected {RECORD_VERSION}")
    if rec.pair != pair:
        raise ArbiterError(f"{where}: belongs to pair {rec.pair!r}, not {pair!r}: two pairs share "
                           "one lock path")
    if rec.generation != generation:
        raise ArbiterError(f"{where}: says generation {rec.generation}, its name says {generation}")
    return rec


@dataclass(frozen=True)
class Verdict:
    may_release: bool
    reason: str


def primary_may_release(me: str, my_generation: int, current: Ownership | None,
                        confirmed_at: float | None, now: float, lease_s: float) -> Verdict:
    """May a live copy release output now? Only while it holds the newest generation and its
    last confirmation of that is younger than the lease."""
    if current is None or confirmed_at is None:
        return Verdict(False, "ownership not confirmed on the shared path")
    if current.generation != my_generation or current.host != me:
        return Verdict(False, f"generation {current.generation} belongs to {current.host}: "
                              "this copy is fenced")
    if now - confirmed_at > lease_s:
        return Verdict(False, f"last confirmation {now - confirmed_at:.2f} s ago exceeds the "
                              f"{lease_s} s lease")
    return Verdict(True, f"owner of generation {my_generation}")


def backup_may_release(won_at: float, now: float, lease_s: float) -> Verdict:
    """A new owner waits out the old owner's possible lease before its first output."""
    if now - won_at < lease_s:
        return Verdict(False, f"waiting {lease_s - (now - won_at):.2f} s for the old lease to expire")
    return Verdict(True, "old owner's lease expired")


def claim_target(current: Ownership | None, known: int, me: str, peer: str) -> int | None:
    """The generation to race for when the channel goes quiet, or None if this host has lost.

    Both sides race for the one generation after `known`, the generation they operated under
    together. Never "the current one + 1": a side that reads the record after its peer won
    would then claim the next generation and supersede the winner (two live copies; seen in
    the partition test). A current generation past `known` means the race is already decided.
    """
    if current is None or current.host not in (me, peer) or current.generation != known:
        return None
    return known + 1
