"""Prometheus text for /metrics, built from the supervisor's snapshot.

A throw-away registry per scrape: the numbers live in the supervisor, the
HTTP worker only formats them, so nothing is double-counted across restarts.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kidecar_supervisor.states import ChildState

STATES = tuple(state.value for state in ChildState)


class _SnapshotCollector:
    def __init__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Any:
        plugins = self.snapshot.get("plugins", [])
        state = GaugeMetricFamily("kidecar_plugin_state", "1 for the plugin's current state",
                                  labels=["plugin", "state"])
        up = GaugeMetricFamily("kidecar_plugin_up", "1 while the plugin runs", labels=["plugin"])
        restarts = CounterMetricFamily("kidecar_plugin_restarts", "restarts since start-up",
                                       labels=["plugin"])
        recycles = CounterMetricFamily(
            "kidecar_plugin_recycles",
            "times the plugin, idle, was replaced by a fresh process at its own request",
            labels=["plugin"])
        uptime = GaugeMetricFamily("kidecar_plugin_uptime_seconds",
                                   "seconds since the plugin's process started", labels=["plugin"])
        dropped = CounterMetricFamily(
            "kidecar_plugin_output_dropped_lines",
            "output lines of a binary plugin dropped over its rate limit", labels=["plugin"])
        for row in plugins:
            if "outputDroppedLines" in row:
                dropped.add_metric([row["name"]], float(row["outputDroppedLines"]))
            name = row["name"]
            for value in STATES:
                state.add_metric([name, value], 1.0 if row["state"] == value else 0.0)
            up.add_metric([name], 1.0 if row["state"] == ChildState.RUNNING else 0.0)
            restarts.add_metric([name], float(row.get("restarts", 0)))
            recycles.add_metric([name], float(row.get("recycles", 0)))
            uptime.add_metric([name], float(row.get("uptime") or 0.0))
        yield from (state, up, restarts, recycles, uptime, dropped)
        yield GaugeMetricFamily("kidecar_supervisor_uptime_seconds", "seconds since start-up",
                                value=float(self.snapshot.get("uptime", 0.0)))
        yield from _gauges(self.snapshot.get("gauges", []))


def _gauges(rows: list[dict[str, Any]]) -> Any:
    """Plugin-published gauges (e.g. http_probe's HTTPMetric), one family per name."""
    families: dict[str, GaugeMetricFamily] = {}
    for row in rows:
        labels = dict(sorted(row.get("labels", {}).items()))
        labels.setdefault("plugin", row.get("plugin", ""))
        family = families.get(row["name"])
        if family is None:
            family = GaugeMetricFamily(row["name"], f"published by plugin {labels['plugin']}",
                                       labels=list(labels))
            families[row["name"]] = family
        family.add_metric([labels[k] for k in family._labelnames], float(row["value"]))
    yield from families.values()


def render_metrics(snapshot: dict[str, Any]) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry), CONTENT_TYPE_LATEST
