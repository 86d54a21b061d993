"""KIDECAR_KEEP_CAPABILITIES: what it accepts, and that a bad value stops the start first.

The drop itself needs real processes (tests/process/test_signal_identity.py): here
nothing may change this test process's own capabilities.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kidecar_supervisor import cli
from kidecar_supervisor.privileges import (
    ENV_VAR,
    Capabilities,
    PrivilegeError,
    drop_to,
    names,
    parse_keep,
    read_capabilities,
)

KILL = 1 << 5


@pytest.mark.parametrize("value, mask", [
    ("KILL", KILL),
    ("CAP_KILL", KILL),
    ("kill", KILL),
    (" cap_kill ", KILL),
    ("", 0),
    ("KILL,NET_BIND_SERVICE", KILL | 1 << 10),
    ("CAP_KILL NET_BIND_SERVICE", KILL | 1 << 10),
    ("KILL,KILL", KILL),
    ("CHECKPOINT_RESTORE", 1 << 40),
])
def test_names_with_or_without_cap_prefix(value: str, mask: int) -> None:
    assert parse_keep(value) == mask


@pytest.mark.parametrize("value", ["KILLL", "CAP_", "ALL", "KILL,SYS_NOPE", "5"])
def test_unknown_names_are_refused_with_the_list_of_known_ones(value: str) -> None:
    with pytest.raises(PrivilegeError) as info:
        parse_keep(value)
    message = str(info.value)
    assert message.startswith(f"{ENV_VAR}: unknown capability")
    assert "KILL" in message and "NET_BIND_SERVICE" in message


def test_names_in_bit_order() -> None:
    assert names(KILL | 1 << 10 | 1) == ["CHOWN", "KILL", "NET_BIND_SERVICE"]
    assert names(0) == []


def test_within_means_no_set_holds_anything_else() -> None:
    only_kill = Capabilities(KILL, KILL, 0, KILL, 0, no_new_privs=False)
    assert only_kill.within(KILL)
    assert not only_kill.within(0)
    assert not Capabilities(KILL, KILL, 0, KILL | 1, 0, no_new_privs=True).within(KILL)
    assert not Capabilities(0, 0, 0, 0, 1 << 21, no_new_privs=True).within(KILL)


def test_unset_touches_nothing() -> None:
    before = read_capabilities()
    assert drop_to({}) is None
    assert read_capabilities() == before


def test_a_bad_value_is_refused_before_any_change() -> None:
    before = read_capabilities()
    with pytest.raises(PrivilegeError, match="unknown capability 'KILLL'"):
        drop_to({ENV_VAR: "KILLL"})
    assert read_capabilities() == before


def test_kidecar_run_with_a_bad_value_exits_1_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo fails the start with a clear error: no state dir, no config read, no child."""
    monkeypatch.setenv(ENV_VAR, "KILL,NET_BIND_SERVIC")
    state = tmp_path / "state"
    before = read_capabilities()
    code = cli.main(["run", "--config", str(tmp_path / "missing.yaml"), "--state-dir",
                     str(state)])
    assert code == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert f"kidecar: {ENV_VAR}: unknown capability 'NET_BIND_SERVIC'" in err
    assert "invalid config" not in err  # refused before the config was even read
    assert not state.exists()
    assert read_capabilities() == before
