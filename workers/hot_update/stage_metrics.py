"""Per-stage durations of hot updates, as a Prometheus histogram (DESIGN §9).

The plugin API publishes gauges only, so the histogram is published the way
Prometheus stores one: cumulative ``_bucket{stage, le}`` series, ``_sum`` and
``_count`` per stage. ``histogram_quantile()`` works on them as on a native
histogram. Also the two gauges of the loaded version: ``last_success`` (0/1)
and ``info{version}`` (1 for the loaded version, 0 for the one before it).

The counts are kept in the state dir and published again at start: the
plugin's process is replaced after every update (``recycleAfterUpdate``,
issue 16) and on a crash, and a histogram that went back to zero each time
would hold one update at most.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json

log = logging.getLogger(__name__)

NAME = "kidecar_hot_update_stage_duration_seconds"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

SetGauge = Callable[[str, float, dict[str, str]], None]


class StageMetrics:
    """Thread-safe accumulation; every observation republishes that stage's series."""

    def __init__(self, set_gauge: SetGauge, path: Path | None = None) -> None:
        self._set = set_gauge
        self._path = path
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._loaded = ""
        self._restore()

    def observe(self, stage: str, seconds: float) -> None:
        with self._lock:
            counts = self._counts.setdefault(stage, [0] * (len(BUCKETS) + 1))
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[index] += 1
            counts[-1] += 1
            self._sums[stage] = self._sums.get(stage, 0.0) + seconds
            self._publish(stage)

    def _publish(self, stage: str) -> None:
        counts = self._counts[stage]
        for index, bound in enumerate(BUCKETS):
            self._set(f"{NAME}_bucket", counts[index], {"stage": stage, "le": f"{bound:g}"})
        self._set(f"{NAME}_bucket", counts[-1], {"stage": stage, "le": "+Inf"})
        self._set(f"{NAME}_count", counts[-1], {"stage": stage})
        self._set(f"{NAME}_sum", round(self._sums.get(stage, 0.0), 6), {"stage": stage})

    def _save(self) -> None:
        if self._path is None:
            return
        try:
            atomic_write_json(self._path, {"counts": self._counts, "sums": self._sums,
                                           "loaded": self._loaded})
        except OSError as exc:  # metrics never fail an update
            log.warning("cannot keep the stage metrics in %s: %s", self._path, exc)

    def _restore(self) -> None:
        """The counts kept by the process before this one, published again."""
        if self._path is None or not self._path.exists():
            return
        try:
            kept: Any = json.loads(self._path.read_text())
            counts = {str(stage): [int(n) for n in row] for stage, row in kept["counts"].items()
                      if len(row) == len(BUCKETS) + 1}
            sums = {str(stage): float(kept["sums"].get(stage, 0.0)) for stage in counts}
            loaded = str(kept.get("loaded") or "")
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("stage metrics in %s not restored (counting from zero): %s",
                        self._path, exc)
            return
        self._counts, self._sums, self._loaded = counts, sums, loaded
        for stage in counts:
            self._publish(stage)

    def loaded(self, version: str, success: bool) -> None:
        """The version the game runs now, and whether the last update got it there.

        An update ends here, so this is where its stages' counts are kept: once
        per update, not on each stage (each save is two fsyncs)."""
        with self._lock:
            self._set("kidecar_hot_update_last_success", 1.0 if success else 0.0, {})
            if version and version != self._loaded:
                if self._loaded:
                    self._set("kidecar_hot_update_info", 0.0, {"version": self._loaded})
                self._set("kidecar_hot_update_info", 1.0, {"version": version})
                self._loaded = version
            self._save()
