"""The ``binary`` plugin: supervise an arbitrary program like a plugin.

The supervisor executes the program directly as its child (no Python wrapper
process), so it costs only the program's own memory and a crash is seen at
once through SIGCHLD; its stdout/stderr lines land in the structured log.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import ClassVar

from kidecar_supervisor.plugin_api import ConfigReader, Plugin

_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


@dataclass(frozen=True)
class BinaryConfig:
    path: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = ""

    @classmethod
    def parse(cls, reader: ConfigReader) -> BinaryConfig:
        cfg = cls(
            path=reader.str("path"),
            args=tuple(reader.str_list("args", default=[])),
            env=_parse_env(reader),
            working_dir=reader.str("workingDir", "cwd", default=""),
        )
        reader.reject_unknown()
        return cfg

    def argv(self) -> list[str]:
        return [self.path, *self.args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        return env


def _parse_env(reader: ConfigReader) -> tuple[tuple[str, str], ...]:
    raw = reader.raw("env", default=None)
    if raw is None:
        return ()
    pairs: list[tuple[str, str]] = []
    if isinstance(raw, dict):
        pairs = [(str(k), str(v)) for k, v in reader.str_map("env").items()]
    else:
        for i, item in enumerate(reader.str_list("env")):
            name, sep, value = item.partition("=")
            if not sep:
                raise reader.error("env", f"item {i} {item!r} must look like NAME=value")
            pairs.append((name, value))
    for name, _ in pairs:
        if not re.fullmatch(_ENV_NAME, name):
            raise reader.error("env", f"{name!r} is not a valid environment variable name")
    return tuple(pairs)


class BinaryPlugin(Plugin):
    """Marker class: the supervisor launches ``config.argv()`` itself."""

    name = "binary"
    config_type = BinaryConfig
    runs_external_program: ClassVar[bool] = True

    def run(self) -> None:
        raise RuntimeError("binary plugins are executed by the supervisor, not run in Python")
