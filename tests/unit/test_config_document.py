"""The config document without processes: seeds, spellings, field-path errors and the
edge cases of issue 17 finding 7 (duplicate keys, ${VAR}, size, what execve() refuses)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kidecar_supervisor.config import (
    DEFAULT_CONFIG_PATH,
    config_path,
    load_config,
    machine_problems,
    parse_config,
    parse_config_text,
)
from kidecar_supervisor.config_document import MAX_CONFIG_BYTES
from kidecar_supervisor.config_reader import ConfigError, ConfigReader
from workers.binary import MAX_ARG_STRLEN, arg_max

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures"
# documents as published; the one whose YAML is broken as published is refused (see below)
SEEDS = sorted(p for p in FIXTURES.glob("seed-*.yaml") if p.name != "seed-kruise-proposal-sidecar.yaml")


def refused(text: str, **kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse_config_text(text, "cfg.yaml", **kwargs)  # type: ignore[arg-type]
    return err.value


# -- the seeds and the spellings ----------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.name)
def test_every_seed_document_loads(seed: Path) -> None:
    assert load_config(seed).plugins, "a seed always configures plugins"


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


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIDECAR_CONFIG", raising=False)
    assert config_path(None) == DEFAULT_CONFIG_PATH == "/opt/sidecar/config.yaml"
    monkeypatch.setenv("KIDECAR_CONFIG", "/env.yaml")
    assert config_path(None) == "/env.yaml"
    assert config_path("/cli.yaml") == "/cli.yaml"


# -- bad documents: file, field path, problem -------------------------------------------------
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
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)  # what `kidecar validate` prints after "invalid: "
    assert message.startswith(f"{path}: ")
    assert f": {field}: " in message or (not field and f"{path}: " in message), message
    assert problem in message, message


# -- duplicate keys -------------------------------------------------------------------------
def test_a_top_level_key_given_twice_names_both_lines() -> None:
    err = refused("plugins:\n  - {name: a, binary: {path: sleep}}\nrestartPolicy: Never\n"
                  "plugins: []\n")
    assert "duplicate key" in err.problem and "'plugins'" in err.problem
    assert "line 1" in err.problem and "line 4" in err.problem, err


def test_two_spellings_of_one_key_are_duplicates_with_both_lines() -> None:
    err = refused("restartPolicy: Always\nplugins: []\nrestartpolicy: Never\n")
    assert "'restartPolicy' and 'restartpolicy' are the same key" in err.problem
    assert "line 1" in err.problem and "line 3" in err.problem, err


def test_a_duplicate_inside_a_plugin_names_its_field_path() -> None:
    err = refused("""\
plugins:
  - name: a
    bootOrder: 1
    binary: {path: sleep}
    BootOrder: 2
""")
    assert err.path == "plugins[0]"
    assert "'bootOrder' and 'BootOrder'" in err.problem
    assert "line 3" in err.problem and "line 5" in err.problem, err


def test_a_duplicate_inside_a_flow_mapping_is_found_too() -> None:
    err = refused("plugins: [{name: a, binary: {path: sleep, path: true}}]\n")
    assert err.path == "plugins[0].binary" and "duplicate key: 'path'" in err.problem


def test_a_merge_key_is_overridden_not_a_duplicate() -> None:
    """YAML's '<<' merge is meant to be overridden by the mapping's own keys."""
    config = parse_config_text("""\
plugins:
  - <<: {restartPolicy: Never, maxRestarts: 3}
    name: a
    maxRestarts: 5
    binary: {path: sleep}
""")
    (spec,) = config.plugins
    assert (spec.restart.policy, spec.restart.max_restarts) == ("Never", 5)


CONFIGMAP_WITH_DUPLICATE = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: kidecar-config}
data:
  config.yaml: |
    plugins:
      - name: a
        binary: {path: sleep}
    restartPolicy: Always
    restartpolicy: Never
"""


def test_a_configmap_manifest_with_a_duplicate_in_its_config_yaml_is_refused(
        tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text(CONFIGMAP_WITH_DUPLICATE)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.path == 'data["config.yaml"]'
    # lines inside the embedded document and of the manifest the reader has open
    assert "line 4 (line 9 of the file)" in err.value.problem
    assert "line 5 (line 10 of the file)" in err.value.problem, err.value


def test_data_mappings_keep_case_sensitive_keys_but_not_exact_duplicates() -> None:
    """Field names fold case; env names, labels and annotations do not (PATH is not Path)."""
    config = parse_config_text("plugins: [{name: a, binary: {path: sleep, env: {Path: x, PATH: y}}}]\n")
    assert config.plugins[0].config.env == (("Path", "x"), ("PATH", "y"))
    err = refused("plugins: [{name: a, binary: {path: sleep, env: {A: x, A: y}}}]\n")
    assert err.path == "plugins[0].binary.env" and "duplicate key: 'A'" in err.problem


def test_a_mapping_built_in_code_with_two_spellings_is_refused() -> None:
    with pytest.raises(ConfigError, match="'restartPolicy' and 'restartpolicy' are the same key "
                                          r"\(field names match case-insensitively"):
        ConfigReader({"restartPolicy": "Always", "restartpolicy": "Never"}, "", "code")
    with pytest.raises(ConfigError, match="same key"):
        parse_config({"plugins": [], "logLevel": "info", "loglevel": "debug"})


# -- ${VAR} ---------------------------------------------------------------------------------------
BINARY_WITH = "plugins:\n  - name: a\n    binary: {path: sleep, args: [%s], workingDir: '%s'}\n"


def test_a_set_variable_is_expanded_where_it_is_used() -> None:
    config = parse_config_text(BINARY_WITH % ('"${KIDECAR_T_SECS}"', "${KIDECAR_T_DIR}/w"),
                               environ={"KIDECAR_T_SECS": "7", "KIDECAR_T_DIR": "/srv"})
    cfg = config.plugins[0].config
    assert cfg.args == ("7",) and cfg.working_dir == "/srv/w"
    assert config.unset_variables == ()


def test_an_unset_variable_is_an_error_naming_field_and_variable() -> None:
    err = refused(BINARY_WITH % ('"1"', "${KIDECAR_T_UNSET}/w"), environ={})
    assert err.path == "plugins[0].binary.workingDir"
    assert "KIDECAR_T_UNSET is not set" in err.problem, err


def test_an_unset_variable_is_a_machine_problem_when_allowed() -> None:
    """What `kidecar validate` does away from the image: the rest is still checked."""
    config = parse_config_text(BINARY_WITH % ('"1"', "${KIDECAR_T_UNSET}/w"), "cfg.yaml",
                               environ={}, unset_ok=True)
    (problem,) = [p for p in machine_problems(config) if "KIDECAR_T_UNSET is not set" in p.problem]
    assert problem.path == "plugins[0].binary.workingDir"
    # and the same document with a broken field is still an error
    with pytest.raises(ConfigError, match="must be an integer"):
        parse_config_text("plugins:\n  - {name: a, bootOrder: x, binary: {path: '${NOPE}'}}\n",
                          environ={}, unset_ok=True)


@pytest.mark.parametrize("value, expected", [
    ("'$${HOME}/x'", "${HOME}/x"),                      # an escaped literal
    ("'${SELF:POD_NAME}'", "${SELF:POD_NAME}"),         # the storage targets' templates
    ("'${X:-fallback}'", "${X:-fallback}"),             # a shell's default, for sh -c
    ("'no reference $HOME'", "no reference $HOME"),
])
def test_references_that_are_not_plain_variables_stay(value: str, expected: str) -> None:
    config = parse_config_text(BINARY_WITH % (value, "/"), environ={"HOME": "/root"})
    assert config.plugins[0].config.args == (expected,)


@pytest.mark.parametrize("value, problem", [
    ("'${ DIR}'", "malformed reference"),
    ("'${}'", "malformed reference"),
    ("'${DIR'", "never closed"),
])
def test_malformed_references_are_document_errors(value: str, problem: str) -> None:
    err = refused(BINARY_WITH % (value, "/"), environ={"DIR": "/d"}, unset_ok=True)
    assert err.path == "plugins[0].binary.args[0]" and problem in err.problem, err


def test_variables_in_plugin_configs_are_expanded_too() -> None:
    config = parse_config_text(HOT_UPDATE.replace("/tmp/x", "${KIDECAR_T_DIR}/downloads")
                               % "SIGHUP", environ={"KIDECAR_T_DIR": "/data"})
    assert config.plugins[0].config.file_dir == "/data/downloads"


# -- size -------------------------------------------------------------------------------------
def test_a_10_mb_config_is_refused_by_its_size_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with open(path, "wb") as out:
        out.write(b"plugins: []\n# \xff not even UTF-8\n")
        out.truncate(10 * 1024 * 1024)  # sparse: costs no disk
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "10485760 bytes" in err.value.problem and "at most 1048576" in err.value.problem
    assert "UTF-8" not in str(err.value), "refused before the bytes were decoded"


def test_a_config_of_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "full.yaml"
    head = b"plugins: []\n#"
    path.write_bytes(head + b"x" * (MAX_CONFIG_BYTES - len(head) - 1) + b"\n")
    assert path.stat().st_size == MAX_CONFIG_BYTES
    assert load_config(path).plugins == ()


def test_a_configmap_manifest_over_the_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    filler = "    # " + "x" * 1000 + "\n"
    path.write_text(CONFIGMAP_WITH_DUPLICATE.replace("    restartpolicy: Never\n", "")
                    + filler * 1100)
    with pytest.raises(ConfigError, match=r"at most 1048576 \(1 MiB\)"):
        load_config(path)


def test_a_text_over_the_limit_is_refused_without_a_file() -> None:
    err = refused("plugins: []\n#" + "x" * MAX_CONFIG_BYTES)
    assert "at most 1048576" in err.problem


# -- what execve() would refuse -------------------------------------------------------------
@pytest.mark.parametrize("binary, field", [
    ('{path: sleep, args: ["1\\0"]}', "plugins[0].binary.args[0]"),
    ('{path: "sle\\0ep"}', "plugins[0].binary.path"),
    ('{path: sleep, env: ["A=b", "B=\\0"]}', "plugins[0].binary.env[1]"),
    ('{path: sleep, env: {A: "x\\0"}}', "plugins[0].binary.env.A"),
    ('{path: sleep, workingDir: "/tmp\\0"}', "plugins[0].binary.workingDir"),
])
def test_a_nul_byte_is_a_document_error_with_its_field(binary: str, field: str) -> None:
    err = refused(f"plugins:\n  - name: a\n    binary: {binary}\n")
    assert err.path == field and "NUL byte" in err.problem, err


def test_an_argument_longer_than_the_kernel_takes_is_refused() -> None:
    fits = "x" * (MAX_ARG_STRLEN - 1)
    parse_config_text(f"plugins: [{{name: a, binary: {{path: sleep, args: [{fits}]}}}}]\n")
    err = refused(f"plugins: [{{name: a, binary: {{path: sleep, args: [a, {fits}x]}}}}]\n")
    assert err.path == "plugins[0].binary.args[1]" and "at most 131071" in err.problem, err


def test_an_env_entry_longer_than_the_kernel_takes_is_refused() -> None:
    value = "x" * MAX_ARG_STRLEN
    err = refused(f"plugins: [{{name: a, binary: {{path: sleep, env: [A={value}]}}}}]\n")
    assert err.path == "plugins[0].binary.env[0]", err


def test_arguments_over_arg_max_together_are_refused() -> None:
    """Aliases let a small document repeat one long string: the total counts."""
    count = arg_max() // 100_000 + 2
    text = (f"plugins:\n  - name: a\n    binary:\n      path: sleep\n"
            f"      args: [&big {'y' * 100_000}, {', '.join(['*big'] * count)}]\n")
    assert len(text) < MAX_CONFIG_BYTES
    err = refused(text)
    assert err.path == "plugins[0].binary.args" and "ARG_MAX" in err.problem, err


# -- this machine -----------------------------------------------------------------------------
def test_machine_problems_name_program_and_working_dir(tmp_path: Path) -> None:
    config = parse_config_text(
        f"plugins:\n  - name: a\n    binary: {{path: /no/such/program, workingDir: "
        f"{tmp_path}/nope}}\n  - name: b\n    enabled: false\n    binary: {{path: /no/such}}\n",
        "cfg.yaml")
    problems = {p.path: p.problem for p in machine_problems(config)}
    assert set(problems) == {"plugins[0].binary.path", "plugins[0].binary.workingDir"}
    assert "not found or not executable" in problems["plugins[0].binary.path"]


def test_the_program_is_looked_up_on_the_path_the_program_gets(tmp_path: Path) -> None:
    program = tmp_path / "kidecar-test-program"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    found = parse_config_text(
        f"plugins: [{{name: a, binary: {{path: {program.name}, env: [PATH={tmp_path}]}}}}]\n")
    assert machine_problems(found) == []
    missing = parse_config_text(f"plugins: [{{name: a, binary: {{path: {program.name}}}}}]\n")
    assert [p.path for p in machine_problems(missing)] == ["plugins[0].binary.path"]


def test_the_inherited_environment_counts_against_arg_max(monkeypatch: pytest.MonkeyPatch) -> None:
    config = parse_config_text("plugins: [{name: a, binary: {path: sleep}}]\n")
    assert machine_problems(config) == []
    for i in range(arg_max() // 100_000 + 2):
        monkeypatch.setenv(f"KIDECAR_T_BIG{i}", "z" * 100_000)
    (problem,) = machine_problems(config)
    assert problem.path == "plugins[0].binary.args"
    assert re.search(r"take \d+ bytes; the kernel accepts at most", problem.problem)
    assert os.environ["KIDECAR_T_BIG0"]
