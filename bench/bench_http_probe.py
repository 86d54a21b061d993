"""http_probe cost: 50 endpoints probed every second.

Measures, for the plugin alone (in its own process, like under the
supervisor, with a real LocalStore; the game endpoint is another process so
its CPU is not counted): CPU seconds, RSS, and marker writes per minute —
steady (every endpoint keeps answering ``idle``) and with one endpoint
flapping every probe (``idle``/``busy``), with ``successThreshold`` 1 (each
flip is a real, confirmed change: one write per flip) and 2 (the flapping is
filtered out). The peer figure is a naive write-per-probe prober:
50 endpoints × 60 probes = 3000 writes/min.

``rows(quick)``: 60 s windows (quick: 10 s). Run alone:
``bench/run --only http_probe [--quick]``.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ENDPOINTS = 50
INTERVAL = 1.0
WARMUP = 1.5


# -- the child: runs the plugin and measures itself ---------------------------------------
def _child(port: int, seconds: float, flap: bool, success_threshold: int) -> dict[str, Any]:
    import logging
    import tempfile
    import threading

    from kidecar_supervisor.config_reader import ConfigReader
    from kidecar_supervisor.plugin_api import PluginContext, PodIdentity
    from kidecar_supervisor.storage.base import MarkerUpdate, StorageConfig
    from kidecar_supervisor.storage.local import LocalStore
    from workers.http_probe.config import HttpProbeConfig
    from workers.http_probe.plugin import HttpProbePlugin

    logging.basicConfig(level=logging.WARNING)
    writes: list[float] = []
    identity = PodIdentity("bench-0", "bench")
    state_dir = Path(tempfile.mkdtemp(prefix="bench-http-probe-"))

    class Counting(LocalStore):
        def apply_markers(self, update: MarkerUpdate) -> str:
            writes.append(time.monotonic())
            return super().apply_markers(update)

    policies = [
        {"state": "idle", "labels": {"gameserver-idle": "true"}},
        {"state": "busy", "labels": {"gameserver-idle": "false"},
         "annotations": {"controller.kubernetes.io/pod-deletion-cost": "10"}},
    ]
    endpoints = [
        {"url": f"http://127.0.0.1:{port}/{'flap' if flap and i == 0 else f'p{i}'}",
         "timeout": 2, "successThreshold": success_threshold,
         "storageConfig": {"type": "Local", "inKube": {
             "annotationKey": f"probe-{i}", "markerPolicies": policies}}}
        for i in range(ENDPOINTS)
    ]
    config = HttpProbeConfig.parse(ConfigReader(
        {"probeIntervalSeconds": INTERVAL, "endpoints": endpoints}, "plugins[0].config"))

    def factory(cfg: StorageConfig) -> LocalStore:
        return Counting(cfg, identity, state_dir)

    ctx = PluginContext("http_probe", config, state_dir, identity,
                        logging.getLogger("bench"), _store_factory=factory)
    plugin = HttpProbePlugin()
    plugin.init(ctx)
    runner = threading.Thread(target=plugin.run, daemon=True)
    runner.start()
    # the window starts once every endpoint made its initial write (fsynced SQLite writes
    # can take a while on a busy disk) and the first round of probes is behind us
    # (a flapping endpoint under successThreshold 2 never settles: it never writes)
    expected = ENDPOINTS - (1 if flap and success_threshold > 1 else 0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(writes) < expected:
        time.sleep(0.1)
    time.sleep(WARMUP)
    cpu0, t0, writes0 = _cpu(), time.monotonic(), len(writes)
    probes0 = sum(ep["probes"] for ep in plugin.status()["endpoints"])
    time.sleep(seconds)
    cpu1, t1, writes1 = _cpu(), time.monotonic(), len(writes)
    status = plugin.status()["endpoints"]
    probes1 = sum(ep["probes"] for ep in status)
    plugin.stop()
    runner.join(5)
    return {
        "cpu_seconds": cpu1 - cpu0,
        "wall_seconds": t1 - t0,
        "writes": writes1 - writes0,
        "initial_writes": writes0,
        "probes": probes1 - probes0,
        "failures": sum(ep["failures"] for ep in status),
        "rss_mib": _rss_mib(),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the parent: game endpoint process + one child per scenario -------------------------------
def _run_child(port: int, seconds: float, flap: bool, success_threshold: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(port), str(seconds), str(int(flap)),
         str(success_threshold)],
        cwd=REPO, capture_output=True, text=True, timeout=seconds + 90, check=True,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(quick: bool) -> dict[str, dict[str, Any]]:
    seconds = 10.0 if quick else 60.0
    game = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "support" / "game_endpoint.py"), "--paths", str(ENDPOINTS),
         "--flap", "/flap"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    try:
        assert game.stdout is not None
        port = int(game.stdout.readline())
        return {
            "steady": _run_child(port, seconds, flap=False, success_threshold=1),
            "flap1": _run_child(port, seconds, flap=True, success_threshold=1),
            "flap2": _run_child(port, seconds, flap=True, success_threshold=2),
        }
    finally:
        assert game.stdin is not None
        game.stdin.close()
        game.wait(10)


def _per_min(result: dict[str, Any], key: str) -> float:
    return float(result[key]) * 60.0 / float(result["wall_seconds"])


def rows(quick: bool) -> list[dict[str, str]]:
    results = measure(quick)
    steady, flap1, flap2 = results["steady"], results["flap1"], results["flap2"]
    window = f"{steady['wall_seconds']:.0f} s window"
    peer = f"{ENDPOINTS * 60} writes/min (write-per-probe)"
    cpu = 100.0 * steady["cpu_seconds"] / steady["wall_seconds"]
    cpu_flap = 100.0 * flap1["cpu_seconds"] / flap1["wall_seconds"]
    return [
        {"benchmark": f"http_probe {ENDPOINTS} endpoints @1 s, steady: store writes/min",
         "kidecar": f"{_per_min(steady, 'writes'):.0f}/min",
         "peers": peer, "aim": "0/min",
         "notes": f"{window}; {steady['initial_writes']} initial write(s) before it; "
                  f"{_per_min(steady, 'probes'):.0f} probes/min, {steady['failures']} failed"},
        {"benchmark": "http_probe, 1 endpoint flapping every probe, successThreshold 1",
         "kidecar": f"{_per_min(flap1, 'writes'):.0f}/min",
         "peers": peer, "aim": "one write per confirmed change (≤60/min)",
         "notes": "every flip is a confirmed change with threshold 1"},
        {"benchmark": "http_probe, 1 endpoint flapping every probe, successThreshold 2",
         "kidecar": f"{_per_min(flap2, 'writes'):.0f}/min",
         "peers": peer, "aim": "0/min", "notes": "the flapping never reaches the threshold"},
        {"benchmark": f"http_probe {ENDPOINTS} endpoints @1 s: plugin CPU",
         "kidecar": f"{cpu:.2f} % of a core ({steady['cpu_seconds']:.2f} CPU s)",
         "peers": "n/a", "aim": "≤ 2 % of a core",
         "notes": f"{window}, plugin process only (game endpoint in another process); "
                  f"flapping run: {cpu_flap:.2f} %"},
        {"benchmark": f"http_probe {ENDPOINTS} endpoints: plugin process RSS",
         "kidecar": f"{steady['rss_mib']:.1f} MiB",
         "peers": "n/a", "aim": "small next to the 128 Mi budget",
         "notes": "plugin + LocalStore (SQLite) in one process, no kubernetes client"},
    ]


if __name__ == "__main__":
    # only as the measured child process (``--child``); run benchmarks with bench/run
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        port, seconds, flap, threshold = sys.argv[2:6]
        print(json.dumps(_child(int(port), float(seconds), flap == "1", int(threshold))))
    else:
        sys.exit("run it through bench/run --only http_probe [--quick]")
