"""Plugins that misbehave on purpose, to prove the supervisor copes.

They use only ``kidecar_supervisor.plugin_api``, like a third-party plugin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from kidecar_supervisor.plugin_api import ConfigReader, Plugin


@dataclass(frozen=True)
class TestConfig:
    after_seconds: float = 0.0
    exit_code: int = 0
    marker_file: str = ""
    fail_init: bool = False

    @classmethod
    def parse(cls, reader: ConfigReader) -> TestConfig:
        cfg = cls(
            after_seconds=reader.number("afterSeconds", default=0.0, minimum=0),
            exit_code=reader.int("exitCode", default=0),
            marker_file=reader.str("markerFile", default=""),
            fail_init=reader.bool("failInit", default=False),
        )
        reader.reject_unknown()
        return cfg


class SleeperPlugin(Plugin):
    """Well behaved: runs until asked to stop."""

    name = "test_sleeper"
    version = "1.2.3"
    config_type = TestConfig

    def run(self) -> None:
        self.ctx.stop_requested.wait()

    def status(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        if method == "sleep":
            time.sleep(float(params.get("seconds", 1)))
            return {"slept": params.get("seconds")}
        return super().handle(method, params)


class CrasherPlugin(Plugin):
    """Exits with ``exitCode`` after ``afterSeconds`` (0 → a clean completion)."""

    name = "test_crasher"
    config_type = TestConfig

    def init(self, ctx: Any) -> None:
        super().init(ctx)
        if ctx.config.fail_init:
            raise RuntimeError("the game directory /nowhere does not exist")

    def run(self) -> None:
        if self.ctx.stop_requested.wait(self.ctx.config.after_seconds):
            return
        os._exit(self.ctx.config.exit_code)


class HangerPlugin(Plugin):
    """Stops itself (SIGSTOP) after ``afterSeconds``: alive, but no heartbeat."""

    name = "test_hanger"
    config_type = TestConfig

    def init(self, ctx: Any) -> None:
        super().init(ctx)
        if ctx.config.fail_init:  # here: hang in init instead of failing
            time.sleep(3600)

    def run(self) -> None:
        if not self.ctx.stop_requested.wait(self.ctx.config.after_seconds):
            os.kill(os.getpid(), signal.SIGSTOP)
        self.ctx.stop_requested.wait()


class StubbornPlugin(Plugin):
    """Ignores SIGTERM and forks grandchildren, one escaping into its own session."""

    name = "test_stubborn"
    config_type = TestConfig

    def init(self, ctx: Any) -> None:
        super().init(ctx)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        ignore_term = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                       " time.sleep(3600)")
        self.kids = [
            subprocess.Popen(["python3", "-c", ignore_term]),
            subprocess.Popen(["python3", "-c", ignore_term], start_new_session=True),
        ]
        if ctx.config.marker_file:
            with open(ctx.config.marker_file, "w") as handle:
                handle.write(" ".join(str(k.pid) for k in self.kids))

    def run(self) -> None:
        while True:  # deaf to stop requests too
            time.sleep(1)

    def status(self) -> dict[str, Any]:
        return {"grandchildren": [k.pid for k in self.kids]}
