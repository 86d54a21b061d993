"""The ``binary`` plugin: supervise an arbitrary program like a plugin.

The supervisor executes the program directly as its child (no Python wrapper
process), so it costs only the program's own memory and a crash is seen at
once through SIGCHLD; its stdout/stderr lines land in the structured log.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from typing import ClassVar

from kidecar_supervisor.plugin_api import ConfigError, ConfigReader, Plugin, join_path

_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


# Linux refuses an execve() whose single argument or NAME=value string is longer than
# MAX_ARG_STRLEN (32 pages; 131072 bytes with the common 4 KiB pages, the smallest
# value any machine has), or whose argv+envp (strings and pointers) exceed ARG_MAX.
# Today such a document would pass validation and crash the start; now it is refused.
MAX_ARG_STRLEN = 131072
PATH_MAX = 4096
_POINTER = 8


def arg_max() -> int:
    """The kernel's limit for argv+envp on this machine (a quarter of the stack limit)."""
    try:
        value = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        value = -1
    return value if value > 0 else 131072


def exec_size(argv: list[str], env: dict[str, str]) -> int:
    """Bytes execve() needs for ``argv`` and ``env``: each string with its NUL, each pointer."""
    strings = [*argv, *(f"{k}={v}" for k, v in env.items())]
    return sum(len(os.fsencode(s)) + 1 + _POINTER for s in strings) + 2 * _POINTER


@dataclass(frozen=True)
class BinaryConfig:
    path: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = ""
    #: the program's output lines beyond these rates are dropped and counted, not
    #: logged (None: kidecar's defaults, see kidecar_supervisor/output_limiter.py)
    output_lines_per_second: float | None = None
    output_bytes_per_second: float | None = None

    @classmethod
    def parse(cls, reader: ConfigReader) -> BinaryConfig:
        path = reader.str("path")
        args = tuple(reader.str_list("args", default=[]))
        env = _parse_env(reader)
        working_dir = reader.str("workingDir", "cwd", default="")
        lines = reader.number("outputLinesPerSecond", default=None, positive=True)
        size = reader.number("outputBytesPerSecond", default=None, minimum=1024)
        reader.reject_unknown()
        _check_exec_strings(reader, path, args, env, working_dir)
        cfg = cls(path=path, args=args, env=tuple((n, v) for n, v, _ in env),
                  working_dir=working_dir, output_lines_per_second=lines,
                  output_bytes_per_second=size)
        needed = exec_size(cfg.argv(), dict(cfg.env))
        if needed > arg_max():
            raise reader.error("args", f"the program's arguments and env take {needed} bytes; "
                                       f"the kernel accepts at most {arg_max()} (ARG_MAX)")
        return cfg

    def machine_problems(self, field_path: str, source: str) -> list[ConfigError]:
        """What execve() would refuse on this machine (see config.machine_problems)."""
        where, env = f"{field_path}.binary", self.environment()
        problems = []
        if shutil.which(self.path, path=env.get("PATH", os.defpath)) is None:
            problems.append(ConfigError(f"program {self.path!r} not found or not executable",
                                        f"{where}.path", source))
        if self.working_dir and not os.path.isdir(self.working_dir):
            problems.append(ConfigError(f"working directory {self.working_dir!r} does not "
                                        "exist", f"{where}.workingDir", source))
        size = exec_size(self.argv(), env)
        if size > arg_max():
            problems.append(ConfigError(
                f"with this machine's environment the program's arguments and env take {size} "
                f"bytes; the kernel accepts at most {arg_max()} (ARG_MAX)", f"{where}.args",
                source))
        return problems

    def argv(self) -> list[str]:
        return [self.path, *self.args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        return env


def _check_exec_strings(reader: ConfigReader, path: str, args: tuple[str, ...],
                        env: list[tuple[str, str, str]], working_dir: str) -> None:
    """What execve() would refuse, named by field: NUL bytes, over-long strings."""
    _check_string(reader, reader.field_path("path"), path, PATH_MAX)
    for i, arg in enumerate(args):
        _check_string(reader, join_path(reader.field_path("args"), i), arg, MAX_ARG_STRLEN)
    for name, value, field_path in env:
        _check_string(reader, field_path, f"{name}={value}", MAX_ARG_STRLEN)
    if working_dir:
        _check_string(reader, reader.field_path("workingDir"), working_dir, PATH_MAX)


def _check_string(reader: ConfigReader, field_path: str, text: str, limit: int) -> None:
    if "\0" in text:
        raise ConfigError("contains a NUL byte, which no program argument, environment "
                          "variable or path can hold", field_path, reader.source)
    try:
        size = len(text.encode("utf-8")) + 1
    except UnicodeEncodeError as exc:
        raise ConfigError(f"is not valid text ({exc.reason})", field_path,
                          reader.source) from None
    if size > limit:
        raise ConfigError(f"is {size - 1} bytes; the kernel accepts at most {limit - 1}",
                          field_path, reader.source)


def _parse_env(reader: ConfigReader) -> list[tuple[str, str, str]]:
    """(name, value, field path) for each variable, in the document's order."""
    raw = reader.raw("env", default=None)
    if raw is None:
        return []
    base = reader.field_path("env")
    pairs: list[tuple[str, str, str]] = []
    if isinstance(raw, dict):
        pairs = [(str(k), str(v), join_path(base, str(k)))
                 for k, v in reader.str_map("env").items()]
    else:
        for i, item in enumerate(reader.str_list("env")):
            name, sep, value = item.partition("=")
            if not sep:
                raise reader.error("env", f"item {i} {item!r} must look like NAME=value")
            pairs.append((name, value, join_path(base, i)))
    for name, _, _ in pairs:
        if not re.fullmatch(_ENV_NAME, name):
            raise reader.error("env", f"{name!r} is not a valid environment variable name")
    return pairs


class BinaryPlugin(Plugin):
    """Marker class: the supervisor launches ``config.argv()`` itself."""

    name = "binary"
    config_type = BinaryConfig
    runs_external_program: ClassVar[bool] = True

    def run(self) -> None:
        raise RuntimeError("binary plugins are executed by the supervisor, not run in Python")
