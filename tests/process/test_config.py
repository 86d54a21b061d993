"""The `kidecar` CLI on config documents: `validate` and `run` agree on the document,
and `validate` reports what `run` would refuse on this machine (a warning by default,
an error with --this-machine). Parsing alone is tested in tests/unit/test_config_document.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "fixtures"
# documents as published; the one whose YAML is broken as published is refused
SEEDS = sorted(p for p in FIXTURES.glob("seed-*.yaml") if p.name != "seed-kruise-proposal-sidecar.yaml")
CLI = [sys.executable, "-m", "kidecar_supervisor.cli"]
REPO = Path(__file__).resolve().parents[2]


def kidecar(*args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=cwd)


def run_sidecar(path: Path, tmp_path: Path, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    """`kidecar run` on ``path``; a refused document returns at once (else the timeout hits)."""
    return kidecar("run", "--config", str(path), "--state-dir", str(tmp_path / "state"),
                   "--host", "127.0.0.1", env=env, cwd=tmp_path)


@pytest.mark.parametrize("seed", SEEDS, ids=lambda p: p.name)
def test_every_seed_document_validates(seed: Path) -> None:
    result = kidecar("validate", str(seed))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: ")


def test_a_bad_config_names_file_field_and_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("plugins: [{name: a, bootOrder: first, binary: {path: sleep}}]\n")
    result = kidecar("validate", str(path))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"invalid: {path}: plugins[0].bootOrder: must be an "
                                      "integer, got a string 'first'")


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    result = kidecar("validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1 and "file not found" in result.stderr


def test_run_refuses_a_bad_config_before_starting_anything(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("plugins: [{name: a, binary: {path: /no/such/program}}]\n")
    result = run_sidecar(path, tmp_path)
    assert result.returncode == 1
    assert "plugins[0].binary.path" in result.stderr and "not found" in result.stderr
    assert not (tmp_path / "state").exists(), "nothing was started or written"


# -- validate and run agree on the document ---------------------------------------------------
DOCUMENT_ERRORS = {
    "duplicate plugins": ("plugins:\n  - {name: a, binary: {path: sleep}}\nplugins: []\n",
                          "duplicate key: 'plugins' on line 1 and line 3"),
    "two spellings": ("restartPolicy: Always\nrestartpolicy: Never\nplugins: []\n",
                      "'restartPolicy' and 'restartpolicy' are the same key on line 1 and line 2"),
    "NUL in an argument": ('plugins: [{name: a, binary: {path: sleep, args: ["5\\0"]}}]\n',
                           "plugins[0].binary.args[0]: contains a NUL byte"),
    "argument over MAX_ARG_STRLEN": (
        "plugins: [{name: a, binary: {path: sleep, args: [%s]}}]\n" % ("x" * 131072),
        "plugins[0].binary.args[0]: is 131072 bytes; the kernel accepts at most 131071"),
    "10 MB": ("plugins: []\n#" + "x" * (10 * 1024 * 1024) + "\n",
              "bytes; at most 1048576 (1 MiB) are accepted"),
}


@pytest.mark.parametrize("name", sorted(DOCUMENT_ERRORS))
def test_validate_and_run_refuse_the_same_document(name: str, tmp_path: Path) -> None:
    text, problem = DOCUMENT_ERRORS[name]
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    validate = kidecar("validate", str(path))
    assert validate.returncode == 1 and problem in validate.stderr, validate.stderr[-2000:]
    assert validate.stdout == ""
    run = run_sidecar(path, tmp_path)
    assert run.returncode == 1 and problem in run.stderr, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "state").exists(), "refused before anything started"


def test_a_configmap_manifest_with_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("""\
apiVersion: v1
kind: ConfigMap
metadata: {name: kidecar-config}
data:
  config.yaml: |
    plugins: []
    logLevel: info
    loglevel: debug
""")
    for result in (kidecar("validate", str(path)), run_sidecar(path, tmp_path)):
        assert result.returncode == 1
        assert ('data["config.yaml"]: duplicate key: \'logLevel\' and \'loglevel\' are the '
                "same key on line 2 (line 7 of the file) and line 3 (line 8 of the file)"
                in result.stderr), result.stderr


# -- this machine ---------------------------------------------------------------------------
def test_a_missing_program_is_a_warning_for_validate_an_error_with_this_machine(
        tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("plugins: [{name: a, binary: {path: /opt/game/bin/server}}]\n")
    relaxed = kidecar("validate", str(path))
    assert relaxed.returncode == 0 and relaxed.stdout.startswith("ok: ")
    assert "warning:" in relaxed.stderr and "plugins[0].binary.path" in relaxed.stderr
    assert "--this-machine" in relaxed.stderr
    strict = kidecar("validate", "--this-machine", str(path))
    assert strict.returncode == 1 and strict.stdout == ""
    assert f"invalid: {path}: plugins[0].binary.path: program '/opt/game/bin/server' not " \
           "found" in strict.stderr
    run = run_sidecar(path, tmp_path)
    assert run.returncode == 1 and "plugins[0].binary.path" in run.stderr


HOT_UPDATE_IN = """\
plugins:
  - name: hot_update
    config:
      loadPatchType: signal
      signal: {processName: no-such-game, signalName: SIGHUP}
      fileDir: ${KIDECAR_TEST_DOWNLOADS}/downloads
      storageConfig: {type: Local}
"""


def test_an_unset_variable_is_refused_not_made_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(HOT_UPDATE_IN)
    env = {k: v for k, v in os.environ.items() if k != "KIDECAR_TEST_DOWNLOADS"}
    problem = ("plugins[0].config.fileDir: environment variable KIDECAR_TEST_DOWNLOADS is "
               "not set (referenced as ${KIDECAR_TEST_DOWNLOADS})")
    run = run_sidecar(path, tmp_path, env=env)
    assert run.returncode == 1 and problem in run.stderr, run.stderr
    assert not list(tmp_path.glob("$*")), "no directory named after the reference"
    strict = kidecar("validate", "--this-machine", str(path), env=env)
    assert strict.returncode == 1 and problem in strict.stderr
    relaxed = kidecar("validate", str(path), env=env)
    assert relaxed.returncode == 0 and f"warning: {path}: {problem}" in relaxed.stderr
    env["KIDECAR_TEST_DOWNLOADS"] = str(tmp_path)
    assert kidecar("validate", "--this-machine", str(path), env=env).returncode == 0


# -- the plugin registry -----------------------------------------------------------------

def test_without_kidecars_metadata_the_error_says_how_to_install(tmp_path: Path) -> None:
    """The source tree on PYTHONPATH, never installed: one loud error, not 'unknown plugin'."""
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    fake_site = tmp_path / "site"
    fake_site.mkdir()
    for entry in site.iterdir():  # every installed package except kidecar itself
        if not entry.name.lower().startswith(("kidecar", "__editable__")):
            (fake_site / entry.name).symlink_to(entry)
    src = tmp_path / "src"
    src.mkdir()
    for package in ("kidecar_supervisor", "workers"):
        (src / package).symlink_to(REPO / package)
    env = {**os.environ, "PYTHONPATH": f"{src}:{fake_site}"}
    result = subprocess.run(
        [sys.executable, "-S", "-m", "kidecar_supervisor.cli", "validate",
         str(REPO / "config" / "local.yaml")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "kidecar's package metadata is missing" in result.stderr, result.stderr
    assert "pip install -e ." in result.stderr
