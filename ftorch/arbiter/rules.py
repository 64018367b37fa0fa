"""The arbiter's rules: ownership records and who may be live. Pure: no files, no clocks.

Ownership of a pair is a sequence of generations; generation N belongs to whoever created the
record `gen-N` first on the shared path (see sharedlock.py). The generation only grows and is
the fencing token: every live copy knows its own, and a copy that sees a higher one has lost.

No lease is needed on top: a primary releases a frame only once the backup has acknowledged the
log before it (the output gate), so whatever it emits the backup has replayed, and it closes
its gate the moment the channel goes silent, before it races.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from ftorch.errors import FtorchError

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
        return self.text().encode()

    def text(self) -> str:
        """The record as stored, for comparing what two hosts read."""
        return json.dumps({"version": RECORD_VERSION, **asdict(self)}, sort_keys=True)


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
