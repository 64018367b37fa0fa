"""`ftorch status --watch`: the pair's status refreshed in place (Rich Live), with each side's
lag over the last minutes as a sparkline; or, with --json, one JSON object a line."""
from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Sequence

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from ftorch.ops.pair import PairStatus

BARS = "▁▂▃▄▅▆▇█"
HISTORY = 60


def sparkline(values: Sequence[float | None], floor: float = 0.1) -> str:
    """One bar per value, scaled to the largest (at least `floor`); a gap for a missing one."""
    top = max([floor, *(v for v in values if v is not None)])
    return "".join(" " if v is None else BARS[min(len(BARS) - 1, int(v / top * len(BARS)))]
                   for v in values)


class History:
    """Each side's lag (seconds) over the last HISTORY refreshes."""

    def __init__(self) -> None:
        self.lag: dict[str, deque[float | None]] = {}

    def add(self, data: PairStatus) -> None:
        for key, s in data.hosts.items():
            self.lag.setdefault(key, deque(maxlen=HISTORY)).append(s.lag_seconds)

    def lines(self) -> list[Text]:
        out = []
        for key, values in self.lag.items():
            seen = [v for v in values if v is not None]
            if seen:
                out.append(Text(f"lag {key}  {sparkline(list(values))}  max {max(seen):.3f} s"))
        return out


def watch(fetch: Callable[[], PairStatus], view: Callable[[PairStatus], list[RenderableType]],
          console: Console, interval: float, count: int = 0, as_json: bool = False) -> None:
    """Refresh every `interval` seconds until Ctrl-C (or `count` refreshes, if not 0)."""
    history, n = History(), 0
    live = None if as_json else Live(console=console, auto_refresh=False)
    try:
        if live:
            live.start()
        while True:
            data = fetch()
            n += 1
            if as_json:
                print(json.dumps(data.to_json(), sort_keys=True), flush=True)
            else:
                history.add(data)
                stamp = Text(time.strftime("%Y-%m-%d %H:%M:%S  every ") + f"{interval:g} s, "
                             "Ctrl-C to stop", style="dim")
                live.update(Group(*view(data), *history.lines(), stamp), refresh=True)
            if count and n >= count:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        if live:
            live.stop()
