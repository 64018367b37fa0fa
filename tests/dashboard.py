"""The Grafana dashboard's PromQL, as Grafana would send it to Prometheus."""
from __future__ import annotations

import json
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[1] / "ops/grafana/dashboards/ftorch.json"
# what Grafana puts in for its own variables, at the dashboard's default range
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "30m", "$__interval": "15s"}


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries(pair: str = ".*") -> dict[str, str]:
    """'panel title/refId' -> PromQL with the template variables filled in (and the failover
    annotation's)."""
    d = load()
    found = {f"{p['title']}/{t['refId']}": t["expr"] for p in d["panels"] for t in p["targets"]}
    for a in d["annotations"]["list"]:
        found[f"annotation {a['name']}"] = a["expr"]
    values = {**GRAFANA_VARS, "$pair": pair}
    for key, expr in found.items():
        for var in sorted(values, key=len, reverse=True):
            expr = expr.replace(var, values[var])
        assert "$" not in expr, f"{key}: a variable the test does not know: {expr}"
        found[key] = expr
    return found
