"""The ``binary`` plugin: supervise an arbitrary program like a plugin.

The supervisor executes the program directly as its child (no Python wrapper
process), so it costs only the program's own memory and a crash is seen at
once through SIGCHLD; its stdout/stderr lines land in the structured log.

The Go kidecar's binary keys are accepted as its documents write them:
``downloadURL`` (+ ``checksum``, ``permissions``) fetches the program before it
starts when ``path`` does not exist; ``version``, ``description`` and
``dependencies`` are informational (``kidecar validate`` shows them).

Why the fetch runs in the child, not in the supervisor: the supervisor's loop
must never block on a network download, and plugins may not import the
supervisor's internals. So while ``path`` is missing, ``argv()`` starts this
module (``python -m workers.binary``) instead, which downloads with hot_update's
streaming code (temp file in the target directory, size cap, sha256, fsync,
atomic rename) and then ``exec``s the program in the same process: the
supervisor still supervises the program's own pid, and a failed download is an
exit with a clear log line, handled by the restart policy like any crash.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from kidecar_supervisor.plugin_api import ConfigError, ConfigReader, Plugin, join_path

_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SHA256 = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")
_PERMISSIONS = r"0?[0-7]{3}"
#: a downloaded program larger than this is refused (DESIGN §5: every download is capped)
DOWNLOAD_MAX_BYTES = 512 << 20
DOWNLOAD_STALL_SECONDS = 60.0
DEFAULT_PERMISSIONS = 0o755


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
    #: the Go kidecar's keys: where to fetch a missing program, its sha256, its mode
    download_url: str = ""
    checksum: str = ""
    permissions: int = DEFAULT_PERMISSIONS
    #: informational only (the Go kidecar's ``version``, ``description``, ``dependencies``)
    version: str = ""
    description: str = ""
    dependencies: tuple[str, ...] = ()

    @classmethod
    def parse(cls, reader: ConfigReader) -> BinaryConfig:
        path = reader.str("path")
        args = tuple(reader.str_list("args", default=[]))
        env = _parse_env(reader)
        working_dir = reader.str("workingDir", "cwd", default="")
        lines = reader.number("outputLinesPerSecond", default=None, positive=True)
        size = reader.number("outputBytesPerSecond", default=None, minimum=1024)
        go_keys = _parse_go_keys(reader, path)
        reader.reject_unknown()
        _check_exec_strings(reader, path, args, env, working_dir)
        cfg = cls(path=path, args=args, env=tuple((n, v) for n, v, _ in env),
                  working_dir=working_dir, output_lines_per_second=lines,
                  output_bytes_per_second=size, **go_keys)
        needed = exec_size(cfg.argv(), dict(cfg.env))
        if needed > arg_max():
            raise reader.error("args", f"the program's arguments and env take {needed} bytes; "
                                       f"the kernel accepts at most {arg_max()} (ARG_MAX)")
        return cfg

    def machine_problems(self, field_path: str, source: str) -> list[ConfigError]:
        """What execve() would refuse on this machine (see config.machine_problems)."""
        where, env = f"{field_path}.binary", self.environment()
        problems = []
        if self.needs_download():
            if not os.path.isdir(os.path.dirname(self.path)):
                problems.append(ConfigError(
                    f"directory of {self.path!r} does not exist, so downloadURL cannot "
                    "put the program there", f"{where}.path", source))
        elif shutil.which(self.path, path=env.get("PATH", os.defpath)) is None:
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

    def notes(self, field_path: str) -> list[str]:
        """What ``kidecar validate`` shows about the Go kidecar's keys (they change nothing
        at run time, or only when the program is missing)."""
        where = f"{field_path}.binary"
        out = [f"{where}.{key}: {value} (informational)" for key, value in (
            ("version", self.version), ("description", self.description),
            ("dependencies", ", ".join(self.dependencies))) if value]
        if self.download_url:
            check = f"sha256 {self.sha256()}" if self.checksum else "no checksum"
            out.append(f"{where}.downloadURL: fetched to {self.path} ({check}, mode "
                       f"{self.permissions:o}) when that file does not exist at start")
        return out

    def needs_download(self) -> bool:
        return bool(self.download_url) and not os.path.exists(self.path)

    def sha256(self) -> str:
        match = _SHA256.fullmatch(self.checksum)
        return match.group(1).lower() if match else ""

    def argv(self) -> list[str]:
        """The program, or while it is missing and has a downloadURL, the fetch-then-exec
        step that becomes the program (same pid, see the module docstring)."""
        if self.needs_download():
            return [sys.executable, "-m", "workers.binary", self.download_url, self.sha256(),
                    f"{self.permissions:o}", "--", self.path, *self.args]
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


def _parse_go_keys(reader: ConfigReader, path: str) -> dict[str, Any]:
    """The Go kidecar's binary keys, each checked for what it will be used for."""
    url = reader.str("downloadURL", default="")
    if url:
        reader.check_http_url("downloadURL", url)
        if not os.path.isabs(path):
            raise reader.error("path", "must be absolute with downloadURL (where the "
                                       f"program is put), got {path!r}")
    checksum = reader.str("checksum", default="")
    if checksum and not _SHA256.fullmatch(checksum.strip()):
        raise reader.error("checksum", "must be a sha256 (64 hex digits, optionally "
                                       f"'sha256:' before them), got {checksum!r}")
    permissions = reader.str("permissions", default="")
    if permissions and not re.fullmatch(_PERMISSIONS, permissions):
        raise reader.error("permissions", f"must be an octal mode like 755, got "
                                          f"{permissions!r}")
    return {"download_url": url, "checksum": checksum.strip(),
            "permissions": int(permissions, 8) if permissions else DEFAULT_PERMISSIONS,
            "version": reader.str("version", default=""),
            "description": reader.str("description", default="", allow_empty=True),
            "dependencies": tuple(reader.str_list("dependencies", default=[]))}


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


# -- fetch, then become the program (``python -m workers.binary``) -----------------------
def fetch_program(url: str, sha256: str, mode: int, path: str) -> None:
    """Download ``url`` to ``path`` exactly as a hot update would: a temp file next to it,
    the size cap, the sha256, fsync, then an atomic rename; nothing left on failure."""
    from kidecar_supervisor.plugin_kit.durable_files import fsync_dir, remove_quietly
    from workers.hot_update.download import DownloadLimits, download

    target = Path(path)
    limits = DownloadLimits(max_bytes=DOWNLOAD_MAX_BYTES, stall_timeout=DOWNLOAD_STALL_SECONDS)
    done = download(url, target.parent, limits, expected_sha256=sha256, mode=mode)
    try:
        os.chmod(done.temp_path, mode)
        os.replace(done.temp_path, target)
    except BaseException:
        remove_quietly(done.temp_path)
        raise
    fsync_dir(target.parent)


def main(argv: list[str]) -> int:
    """``URL SHA256 MODE -- PATH ARGS...``: fetch PATH if still missing, then exec it."""
    import json

    url, sha256, mode, _, path, *args = argv
    if not os.path.exists(path):
        try:
            fetch_program(url, sha256, int(mode, 8), path)
        except Exception as exc:  # noqa: BLE001 - every failure ends this start, clearly
            print(json.dumps({"level": "error", "msg": f"cannot fetch {path} from "
                              f"downloadURL: {getattr(exc, 'message', exc)}"}), flush=True)
            return 1
        print(json.dumps({"level": "info", "msg": f"fetched {path} from downloadURL"}),
              flush=True)
    os.execv(path, [path, *args])
    return 1  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
