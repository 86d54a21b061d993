"""hot_update's stage histogram carries on across the plugin's processes (issue 16).

The plugin's process is replaced after every settled update (recycleAfterUpdate)
and on a crash; a histogram back at zero each time would hold one update at most.
"""

from __future__ import annotations

from pathlib import Path

from workers.hot_update.stage_metrics import NAME, StageMetrics

Published = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _recorder() -> tuple[Published, object]:
    published: Published = {}

    def set_gauge(name: str, value: float, labels: dict[str, str]) -> None:
        published[(name, tuple(sorted(labels.items())))] = value

    return published, set_gauge


def test_the_next_process_publishes_the_counts_of_the_one_before_and_adds_to_them(
        tmp_path: Path) -> None:
    path = tmp_path / "stage-metrics.json"
    _, set_gauge = _recorder()
    first = StageMetrics(set_gauge, path)  # type: ignore[arg-type]
    first.observe("download", 0.2)
    first.observe("download", 3.0)
    first.loaded("v1", True)

    published, set_gauge = _recorder()
    second = StageMetrics(set_gauge, path)  # type: ignore[arg-type]
    count = (f"{NAME}_count", (("stage", "download"),))
    assert published[count] == 2  # published again at start, before any update
    assert published[(f"{NAME}_bucket", (("le", "0.25"), ("stage", "download")))] == 1
    second.observe("download", 0.1)
    assert published[count] == 3
    assert published[(f"{NAME}_sum", (("stage", "download"),))] == 3.3
    second.loaded("v2", True)  # the version the process before loaded is switched off
    assert published[("kidecar_hot_update_info", (("version", "v1"),))] == 0.0
    assert published[("kidecar_hot_update_info", (("version", "v2"),))] == 1.0


def test_a_damaged_file_counts_from_zero_and_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "stage-metrics.json"
    path.write_text('{"counts": {"download": [1, 2]}')
    published, set_gauge = _recorder()
    metrics = StageMetrics(set_gauge, path)  # type: ignore[arg-type]
    assert published == {}
    metrics.observe("install", 0.01)
    metrics.loaded("v1", True)  # the update ends: its counts are kept
    assert published[(f"{NAME}_count", (("stage", "install"),))] == 1
    assert '"install"' in path.read_text()
