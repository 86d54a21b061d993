"""Per-stage durations of hot updates, as a Prometheus histogram (DESIGN §9).

The plugin API publishes gauges only, so the histogram is published the way
Prometheus stores one: cumulative ``_bucket{stage, le}`` series, ``_sum`` and
``_count`` per stage. ``histogram_quantile()`` works on them as on a native
histogram. Also the two gauges of the loaded version: ``last_success`` (0/1)
and ``info{version}`` (1 for the loaded version, 0 for the one before it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

NAME = "kidecar_hot_update_stage_duration_seconds"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

SetGauge = Callable[[str, float, dict[str, str]], None]


class StageMetrics:
    """Thread-safe accumulation; every observation republishes that stage's series."""

    def __init__(self, set_gauge: SetGauge) -> None:
        self._set = set_gauge
        self._lock = threading.Lock()
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self._loaded = ""

    def observe(self, stage: str, seconds: float) -> None:
        with self._lock:
            counts = self._counts.setdefault(stage, [0] * (len(BUCKETS) + 1))
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[index] += 1
            counts[-1] += 1
            self._sums[stage] = self._sums.get(stage, 0.0) + seconds
            for index, bound in enumerate(BUCKETS):
                self._set(f"{NAME}_bucket", counts[index], {"stage": stage, "le": f"{bound:g}"})
            self._set(f"{NAME}_bucket", counts[-1], {"stage": stage, "le": "+Inf"})
            self._set(f"{NAME}_count", counts[-1], {"stage": stage})
            self._set(f"{NAME}_sum", round(self._sums[stage], 6), {"stage": stage})

    def loaded(self, version: str, success: bool) -> None:
        """The version the game runs now, and whether the last update got it there."""
        with self._lock:
            self._set("kidecar_hot_update_last_success", 1.0 if success else 0.0, {})
            if version and version != self._loaded:
                if self._loaded:
                    self._set("kidecar_hot_update_info", 0.0, {"version": self._loaded})
                self._set("kidecar_hot_update_info", 1.0, {"version": version})
                self._loaded = version
