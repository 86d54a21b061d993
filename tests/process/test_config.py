"""Config validation: every seed document passes; bad ones fail with file, field path, problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kidecar_supervisor.config import load_config, parse_config_text
from kidecar_supervisor.config_reader import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures"
# documents as published; the one whose YAML is broken as published is refused (see below)
SEEDS = sorted(p for p in FIXTURES.glob("seed-*.yaml") if p.name != "seed-kruise-proposal-sidecar.yaml")
CLI = [sys.executable, "-m", "kidecar_supervisor.cli"]


@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.name)
def test_every_seed_document_validates(seed: Path) -> None:
    config = load_config(seed)
    assert config.plugins, "a seed always configures plugins"
    result = subprocess.run([*CLI, "validate", str(seed)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_the_seed_with_broken_yaml_is_refused_with_its_line() -> None:
    seed = FIXTURES / "seed-kruise-proposal-sidecar.yaml"
    with pytest.raises(ConfigError) as err:
        load_config(seed)
    assert "invalid YAML" in str(err.value) and "line" in str(err.value)


def test_both_key_spellings_mean_the_same() -> None:
    lower = parse_config_text("""
plugins:
  - name: sleeper
    bootorder: 3
    restartpolicy: OnFailure
    binary: {path: sleep, args: ["1"]}
restartpolicy: Never
sidecarstartorder: After
""")
    camel = parse_config_text("""
plugins:
  - name: sleeper
    bootOrder: 3
    restartPolicy: OnFailure
    binary: {path: sleep, args: ["1"]}
restartPolicy: Never
sidecarStartOrder: After
""")
    for config in (lower, camel):
        assert config.plugins[0].boot_order == 3
        assert config.plugins[0].restart.policy == "OnFailure"
        assert config.restart.policy == "Never"
        assert config.sidecar_start_order == "After"


def test_top_level_restart_settings_are_each_plugins_default() -> None:
    config = parse_config_text("""
restartPolicy: OnFailure
maxRestarts: 4
plugins:
  - {name: a, binary: {path: sleep}}
  - {name: b, binary: {path: sleep}, restartPolicy: Never, maxRestarts: 9}
""")
    a, b = config.plugins
    assert (a.restart.policy, a.restart.max_restarts) == ("OnFailure", 4)
    assert (b.restart.policy, b.restart.max_restarts) == ("Never", 9)


HOT_UPDATE = """
plugins:
  - name: hot_update
    config:
      loadPatchType: signal
      fileDir: /tmp/x
      signal: {processName: game, signalName: %s}
"""

BAD_CONFIGS = {
    "yaml syntax": ("plugins: [\n", "", "invalid YAML"),
    "not a mapping": ("- a\n- b\n", "", "must be a mapping"),
    "plugins not a list": ("plugins: {name: x}\n", "plugins", "must be a list"),
    "unknown plugin": ("plugins: [{name: teleport}]\n", "plugins[0].name", "unknown plugin 'teleport'"),
    "bad restart policy": ("restartPolicy: Sometimes\nplugins: []\n", "restartPolicy",
                           "must be one of Always, OnFailure, Never"),
    "bad boot order": ("plugins: [{name: a, bootOrder: first, binary: {path: sleep}}]\n",
                       "plugins[0].bootOrder", "must be an integer"),
    "bad quantity": ("resources: {CPU: lots, Memory: 128Mi}\nplugins: []\n", "resources.CPU",
                     "not a Kubernetes quantity"),
    "bad memory quantity": ("resources: {Memory: 128MB}\nplugins: []\n", "resources.Memory",
                            "not a Kubernetes quantity"),
    "negative backoff": ("plugins: [{name: a, backoffSeconds: -1, binary: {path: sleep}}]\n",
                         "plugins[0].backoffSeconds", "at least 0"),
    "zero heartbeat": ("plugins: [{name: a, heartbeatTimeoutSeconds: 0, binary: {path: sleep}}]\n",
                       "plugins[0].heartbeatTimeoutSeconds", "greater than 0"),
    "duplicate names": ("plugins: [{name: a, binary: {path: sleep}}, {name: a, binary: {path: sleep}}]\n",
                        "plugins[1].name", "already used"),
    "reserved name": ("plugins: [{name: http, binary: {path: sleep}}]\n", "plugins[0].name",
                      "kidecar itself"),
    "typo in a key": ("plugins: [{name: a, bootOrdr: 1, binary: {path: sleep}}]\n",
                      "plugins[0].bootOrdr", "did you mean 'bootOrder'"),
    "binary without path": ("plugins: [{name: a, binary: {args: [x]}}]\n", "plugins[0].binary.path",
                            "is required"),
    "bad binary env": ("plugins: [{name: a, binary: {path: sleep, env: [NOEQUALS]}}]\n",
                       "plugins[0].binary.env", "NAME=value"),
    "unknown signal": (HOT_UPDATE % "SIGWAT", "plugins[0].config.signal.signalName", "SIGWAT"),
    "bad start order": ("sidecarStartOrder: Sideways\nplugins: []\n", "sidecarStartOrder",
                        "Before, After"),
    "bad http port": ("http: {port: 70000}\nplugins: []\n", "http.port", "at most 65535"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_names_file_field_and_problem(name: str, tmp_path: Path) -> None:
    text, field, problem = BAD_CONFIGS[name]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = subprocess.run([*CLI, "validate", str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    message = result.stderr.strip()
    assert str(path) in message
    assert f": {field}: " in message or (not field and f"{path}: " in message), message
    assert problem in message, message


def test_run_refuses_a_bad_config_before_starting_anything(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("plugins: [{name: a, binary: {path: /no/such/program}}]\n")
    result = subprocess.run([*CLI, "run", "--config", str(path), "--state-dir",
                             str(tmp_path / "s"), "--port", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "plugins[0].binary.path" in result.stderr and "not found" in result.stderr


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "validate", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "file not found" in result.stderr


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from kidecar_supervisor.config import DEFAULT_CONFIG_PATH, config_path

    monkeypatch.delenv("KIDECAR_CONFIG", raising=False)
    assert config_path(None) == DEFAULT_CONFIG_PATH == "/opt/sidecar/config.yaml"
    monkeypatch.setenv("KIDECAR_CONFIG", "/env.yaml")
    assert config_path(None) == "/env.yaml"
    assert config_path("/cli.yaml") == "/cli.yaml"
