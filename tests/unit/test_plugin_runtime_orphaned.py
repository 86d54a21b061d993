"""A plugin process whose supervisor is gone stops waiting for answers at once.

An update holds fileDir's lock while it records its result; with the supervisor
gone that call used to wait its whole timeout (60 s), so a new kidecar's
hot_update waited for the lock as long (issue 16 session's CI: init hung).
"""

from __future__ import annotations

import threading
import time
from multiprocessing import Pipe
from pathlib import Path

import pytest

from kidecar_supervisor.plugin_api import Plugin, PluginCallError, PodIdentity
from kidecar_supervisor.plugin_runtime import PluginRuntime


class _Idle(Plugin):
    name = "idle"

    def run(self) -> None:
        self.ctx.stop_requested.wait()


def test_calls_in_flight_and_new_calls_fail_at_once_when_the_supervisor_is_gone(
        tmp_path: Path) -> None:
    supervisor_end, plugin_end = Pipe(duplex=True)
    runtime = PluginRuntime(_Idle, "idle", None, plugin_end, tmp_path, PodIdentity(),
                            heartbeat_interval=5.0, stop_grace=1.0)
    main = threading.Thread(target=runtime.main, daemon=True)
    main.start()
    outcome: list[BaseException | object] = []

    def record() -> None:
        try:
            outcome.append(runtime.call("storage", "record_result", {}, timeout=60.0))
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    caller = threading.Thread(target=record, daemon=True)
    caller.start()
    while supervisor_end.recv()["t"] != "call":  # "started", "ready": then the call
        assert supervisor_end.poll(5)
    started = time.monotonic()
    supervisor_end.close()  # the supervisor dies without answering
    caller.join(5)
    assert not caller.is_alive(), "the call still waits for an answer nobody will send"
    assert time.monotonic() - started < 5
    assert isinstance(outcome[0], PluginCallError) and outcome[0].status == 503
    assert "supervisor is gone" in outcome[0].message
    with pytest.raises(PluginCallError, match="supervisor is gone"):
        runtime.call("storage", "record_result", {}, timeout=60.0)
    main.join(5)
    assert not main.is_alive()  # and the plugin stopped
