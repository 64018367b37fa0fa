"""`ftorch status --watch`: the sparkline and the refresh loop, without a pair."""
from __future__ import annotations

import io
import json

from rich.console import Console
from rich.text import Text
from test_status import BACKUP, PRIMARY

from ftorch.ops.pair import PairStatus
from ftorch.ops.watch import BARS, sparkline, watch


def test_the_sparkline_scales_to_the_largest_value_and_leaves_gaps():
    assert sparkline([0.0, 0.5, 1.0, None, 0.25]) == BARS[0] + BARS[4] + BARS[7] + " " + BARS[2]
    assert sparkline([0.01, 0.02]) == BARS[0] + BARS[1]     # small lags stay small (floor 0.1)
    assert sparkline([]) == ""


def test_watch_refreshes_in_place_and_streams_json_lines(capsys):
    data = PairStatus("p", {"a": PRIMARY, "b": BACKUP})
    calls = []

    def fetch():
        calls.append(1)
        return data
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True)
    watch(fetch, lambda d: [Text(f"pair {d.pair}")], console, interval=0.2, count=3)
    assert len(calls) == 3
    screen = out.getvalue()
    assert "pair p" in screen and "lag b" in screen and "max 0.043 s" in screen
    watch(fetch, lambda d: [], console, interval=0.2, count=2, as_json=True)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["pair"] == "p"
