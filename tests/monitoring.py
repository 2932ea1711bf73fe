"""The metric names the Grafana dashboard queries, for the tests that check they exist."""

from __future__ import annotations

import json
import re

from tests.harness import ROOT

DASHBOARD = ROOT / "manifests" / "monitoring" / "grafana-dashboard.json"
_METRIC = re.compile(r"\b(gpu_shard_[a-z0-9_]+|llamacpp:[a-z0-9_]+)")


def dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {match for panel in dashboard["panels"] for target in panel["targets"] for match in _METRIC.findall(target["expr"])}


def exposed_names(exposition: str) -> set[str]:
    """Every sample name in a Prometheus text exposition."""
    return {line.split("{")[0].split(" ")[0] for line in exposition.splitlines() if line and not line.startswith("#")}
