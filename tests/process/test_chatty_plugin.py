"""A binary plugin printing short lines as fast as it can, under the pod's 100m CPU /
128Mi limits: health keeps answering, the log stays bounded, the loss is counted.

Issue 17: 20 MB of such output became > 1.1 GB of JSON log lines, the supervisor
sat at 100 % CPU and ``/healthz`` answered 503 for minutes.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from tests.support.pod_limits import pod_limits
from tests.support.sidecar_process import start_sidecar

pytestmark = pytest.mark.slow

#: how long the chatty program runs while health is asked
WATCH_SECONDS = 20.0


def _dropped(metrics: str) -> float:
    match = re.search(r'kidecar_plugin_output_dropped_lines_total\{plugin="chatty"\} (\S+)',
                      metrics)
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize("program", [
    # one write per line (a syscall each: the most wake-ups per byte)
    ["sh", "-c", "while :; do echo x; done"],
    # block-buffered bulk: the most bytes
    [sys.executable, "-c", "while True: print('x')"],
], ids=["line-writes", "bulk-writes"])
def test_a_chatty_binary_cannot_take_health_down(tmp_path: Path, program: list[str]) -> None:
    config = {"plugins": [
        {"name": "chatty", "binary": {"path": program[0], "args": program[1:]}},
        {"name": "test_sleeper"},
    ]}
    with pod_limits() as limits:
        sidecar = start_sidecar(config, tmp_path, limits=limits, wait_ready=True, timeout=60)
        try:
            slow: list[str] = []
            asked = 0
            deadline = time.monotonic() + WATCH_SECONDS
            while time.monotonic() < deadline:
                began = time.monotonic()
                try:
                    answer = sidecar.get("/healthz", timeout=3)
                    status = str(answer.status_code)
                except Exception as exc:  # noqa: BLE001 - a timeout is the failure we look for
                    status = type(exc).__name__
                took = time.monotonic() - began
                asked += 1
                if status != "200" or took > 1.0:
                    slow.append(f"{status} after {took:.2f}s")
                time.sleep(0.2)
            assert asked >= 40 and slow == [], f"{len(slow)} of {asked} slow/failed: {slow[:10]}"
            metrics = sidecar.wait_for(
                lambda: (m := sidecar.get("/metrics", timeout=5).text) and _dropped(m) > 0 and m,
                what="dropped lines on /metrics")
            assert _dropped(metrics) > 1000
            assert sidecar.plugin("chatty")["state"] == "Running"
            assert sidecar.plugin("test_sleeper")["state"] == "Running"
            log_size = sidecar.log_path.stat().st_size
            # ~100 lines/s of ~100-byte JSON for 20-odd s is ~250 KB; unlimited it was GBs
            assert log_size < 3 * 1024 * 1024, log_size
            assert "chatty: dropped" in sidecar.log_path.read_text(errors="replace")
        finally:
            assert sidecar.stop() == 0
