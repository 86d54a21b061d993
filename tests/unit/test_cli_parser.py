"""The ``kidecar`` command line builds only the named command's arguments, so
``kidecar run`` never imports the modules of ``inject``, ``migrate`` and ``rollout``
(the supervisor's pages are shared by every process it forks: issue 16)."""

from __future__ import annotations

import sys

import pytest

from kidecar_supervisor.cli import _command_named, build_parser

OTHER_COMMANDS = ("kidecar_supervisor.inject", "kidecar_supervisor.migrate",
                  "kidecar_supervisor.rollout.arguments")


@pytest.fixture
def unimported(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTHER_COMMANDS:
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_run_does_not_import_the_other_commands(unimported: None) -> None:
    argv = ["run", "--config", "rollout.yaml", "--port", "5001"]
    args = build_parser(_command_named(argv)).parse_args(argv)
    assert (args.command, args.config, args.port) == ("run", "rollout.yaml", 5001)
    assert [name for name in OTHER_COMMANDS if name in sys.modules] == []


@pytest.mark.parametrize(("argv", "module"), [
    (["inject", "-f", "deploy.yaml"], "kidecar_supervisor.inject"),
    (["migrate", "-f", "go.yaml"], "kidecar_supervisor.migrate"),
    (["rollout", "status", "r1", "-n", "game"], "kidecar_supervisor.rollout.arguments"),
])
def test_a_named_command_gets_its_arguments(unimported: None, argv: list[str],
                                            module: str) -> None:
    args = build_parser(_command_named(argv)).parse_args(argv)
    assert args.command == argv[0] and module in sys.modules


def test_the_command_is_the_first_word_that_is_not_an_option() -> None:
    assert _command_named(["-h"]) is None
    assert _command_named(["run", "--config", "inject"]) == "run"
    assert _command_named([]) is None
