"""http_probe end to end: the real ``kidecar`` process, its config loader, /plugins and /metrics."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.game_endpoint import GameEndpoint
from tests.support.sidecar_process import REPO, start_sidecar

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures"
SEEDS = sorted(p.name for p in FIXTURES.glob("seed-*.yaml"))


@pytest.fixture
def game() -> Iterator[GameEndpoint]:
    server = GameEndpoint()
    yield server
    server.stop()


def validate(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yaml"
    path.write_text(config_text)
    return subprocess.run(
        [sys.executable, "-m", "kidecar_supervisor.cli", "validate", str(path)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_documents_are_accepted_as_published(seed: str, tmp_path: Path) -> None:
    configmap = yaml.safe_load((FIXTURES / seed).read_text())
    result = validate(configmap["data"]["config.yaml"], tmp_path)
    output = result.stdout + result.stderr
    if seed == "seed-kruise-proposal-sidecar.yaml":  # mis-indented as published
        assert result.returncode == 1
        assert "invalid YAML: line 29, column 22" in output
    else:
        assert result.returncode == 0, output
        assert output.startswith("ok:") or "\nok:" in output


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ({"url": "http://127.0.0.1:1/", "timeout": 0}, "plugins[0].config.endpoints[0].timeout"),
        ({"url": "http://127.0.0.1:1/", "jsonPathConfig": {"jsonPath": "$.a["}},
         "plugins[0].config.endpoints[0].jsonPathConfig.jsonPath"),
        ({"url": "http://127.0.0.1:1/", "storageConfig": {"type": "S3"}},
         "plugins[0].config.endpoints[0].storageConfig.type"),
    ],
)
def test_bad_config_stops_start_up_naming_the_field(
    endpoint: dict[str, Any], field: str, tmp_path: Path
) -> None:
    config = {"plugins": [{"name": "http_probe", "config": {"endpoints": [endpoint]}}]}
    result = validate(yaml.safe_dump(config), tmp_path)
    assert result.returncode == 1
    assert field in result.stdout + result.stderr


def test_states_become_markers_and_status_in_the_running_sidecar(
    game: GameEndpoint, tmp_path: Path
) -> None:
    game.set("/", body="idle")
    config = {"plugins": [{"name": "http_probe", "config": {
        "probeIntervalSeconds": 0.1,
        "endpoints": [{"url": game.url(), "storageConfig": {"type": "Local", "inKube": {
            "annotationKey": "http_probe",
            "markerPolices": [{"state": "idle", "labels": {"gameserver-idle": "true"}},
                              {"state": "busy", "labels": {"gameserver-idle": "false"}}]}}}],
    }}]}
    sidecar = start_sidecar(config, tmp_path)
    try:
        def endpoint_status() -> dict[str, Any]:
            infos: dict[str, Any] = sidecar.plugin("http_probe")["infos"]
            status: dict[str, Any] = infos["endpoints"][0]
            return status

        sidecar.wait_for(lambda: endpoint_status()["writes"] == 1, what="first marker write")
        assert endpoint_status()["appliedState"] == "idle"
        seen = game.request_count()
        sidecar.wait_for(lambda: game.request_count() >= seen + 20, what="20 more probes")
        assert endpoint_status()["writes"] == 1
        game.set("/", body="busy")
        sidecar.wait_for(lambda: endpoint_status()["writes"] == 2, what="second write")
        status = endpoint_status()
        assert status["appliedState"] == "busy" and status["lastWrite"] == "written"
    finally:
        assert sidecar.stop() == 0


def test_http_metric_gauge_on_metrics(game: GameEndpoint, tmp_path: Path) -> None:
    game.set("/", body='{"players": 3}')
    config = {"plugins": [{"name": "http_probe", "config": {
        "probeIntervalSeconds": 0.1,
        "endpoints": [{
            "url": game.url(),
            "jsonPathConfig": {"jsonPath": "$.players", "fieldType": "number"},
            "storageConfig": {"type": "HTTPMetric", "httpMetric": {"metricName": "game_players"}},
        }],
    }}]}
    sidecar = start_sidecar(config, tmp_path)
    try:
        line = f'game_players{{endpoint="{game.url()}",plugin="http_probe"}}'

        def gauge() -> float | None:
            for row in sidecar.get("/metrics").text.splitlines():
                if row.startswith(line):
                    return float(row.split()[-1])
            return None

        sidecar.wait_for(lambda: gauge() == 3.0, what="game_players 3 on /metrics")
        game.set("/", body='{"players": 7}')
        sidecar.wait_for(lambda: gauge() == 7.0, what="game_players 7 on /metrics")
    finally:
        assert sidecar.stop() == 0
