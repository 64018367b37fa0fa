"""The Grafana dashboard and the Prometheus rules speak of metrics the agents really serve."""
from __future__ import annotations

import re
from pathlib import Path

import yaml
from dashboard import load, queries
from test_status import BACKUP, PRIMARY

from ftorch.agent.metrics import families

RULES = Path(__file__).resolve().parents[1] / "ops/prometheus/rules/ftorch.yml"
NAME = re.compile(r"\b(ftorch_[a-z_]+)")


def served() -> set[str]:
    """Every sample name an agent can serve (a primary's and a backup's; a gauge the fixtures
    leave without a value counts by its name)."""
    fams = [fam for st in (PRIMARY, BACKUP) for fam in families(st)]
    return {s.name for fam in fams for s in fam.samples} | \
        {fam.name for fam in fams if fam.type == "gauge"}


def test_the_dashboard_asks_for_its_data_source_and_has_no_inputs():
    d = load()
    assert "__inputs" not in d
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in d["panels"]:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]


def test_every_metric_the_dashboard_and_rules_name_is_served():
    have = served()
    rules = yaml.safe_load(RULES.read_text())
    exprs = [*queries().values(), *(r["expr"] for g in rules["groups"] for r in g["rules"])]
    named = {m for e in exprs for m in NAME.findall(e)}
    assert named and named <= have, f"not served: {sorted(named - have)}"


def test_the_dashboard_shows_what_the_issue_asks_for():
    titles = " ".join(p["title"].lower() for p in load()["panels"])
    for what in ("lag (seconds)", "lag (instructions)", "log bandwidth", "gate delay", "role",
                 "generation", "protected", "failovers"):
        assert what in titles, what
    assert any(p["type"] == "heatmap" and "gate delay" in p["title"].lower()
               for p in load()["panels"])
