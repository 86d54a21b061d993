"""The plugin side of the supervisor pipe, run in this process on a real pipe.

* Freed heap pages go back to the kernel on each heartbeat (issue 16: the
  storage process kept 1.26 MiB of them after one update).
* A stopping plugin exits only once the replies of its calls are on the pipe: it
  used to stop counting a call just before sending its reply, and a hot update that
  succeeded during a hot upgrade's drain answered 503 "plugin exited" (CI, session 23).
* A plugin whose supervisor is gone stops waiting for answers at once: an
  update holds fileDir's lock while it records its result, and that call used
  to wait its whole timeout (60 s) while a new kidecar's hot_update waited for
  the lock (a CI failure in session 20: init hung).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.plugin_api import Plugin, PluginCallError, PodIdentity
from kidecar_supervisor.plugin_runtime import PluginRuntime
from tests.unit.test_heap import MIB, freed_below_a_live_block, rss


class _Idle(Plugin):
    name = "idle"

    def run(self) -> None:
        self.ctx.stop_requested.wait()

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        if method == "heavy_task":  # done: its memory goes back with a fresh process
            self.ctx.recycle("heavy task done")
            return "done"
        return super().handle(method, params)


class _Running:
    def __init__(self, tmp_path: Path, heartbeat_interval: float, stop_grace: float) -> None:
        self.supervisor_end, plugin_end = Pipe(duplex=True)
        self.runtime = PluginRuntime(_Idle, "idle", None, plugin_end, tmp_path, PodIdentity(),
                                     heartbeat_interval=heartbeat_interval,
                                     stop_grace=stop_grace)
        self.main = threading.Thread(target=self.runtime.main, daemon=True)
        self.main.start()

    def next_message(self, kind: str) -> None:
        """Read the pipe up to the next message of ``kind`` (within 5 s)."""
        conn: Connection = self.supervisor_end
        deadline = time.monotonic() + 5
        while conn.poll(max(0.0, deadline - time.monotonic())):
            if conn.recv()["t"] == kind:
                return
        raise AssertionError(f"no {kind!r} message within 5 s")


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Any]:
    started: list[_Running] = []

    def start(heartbeat_interval: float, stop_grace: float = 1.0) -> _Running:
        started.append(_Running(tmp_path, heartbeat_interval, stop_grace))
        return started[-1]

    yield start
    for plugin in started:
        plugin.runtime.request_stop()
        plugin.main.join(5)
        plugin.supervisor_end.close()
        assert not plugin.main.is_alive()


def test_a_plugin_process_gives_freed_pages_back_on_its_next_heartbeat(running: Any) -> None:
    plugin = running(heartbeat_interval=0.05)
    plugin.next_message("hb")
    pin = freed_below_a_live_block()  # what a call (a store write) leaves behind
    before = rss()
    plugin.next_message("hb")
    plugin.next_message("hb")  # the trim follows the beat it comes after
    after = rss()
    assert before - after > 16 * MIB, f"RSS {before / MIB:.1f} -> {after / MIB:.1f} MiB"
    assert pin


def test_calls_in_flight_and_new_calls_fail_at_once_when_the_supervisor_is_gone(
        running: Any) -> None:
    plugin = running(heartbeat_interval=5.0)
    runtime = plugin.runtime
    outcome: list[BaseException | object] = []

    def record() -> None:
        try:
            outcome.append(runtime.call("storage", "record_result", {}, timeout=60.0))
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    caller = threading.Thread(target=record, daemon=True)
    caller.start()
    plugin.next_message("call")  # after "started" and "ready"
    started = time.monotonic()
    plugin.supervisor_end.close()  # the supervisor dies without answering
    caller.join(5)
    assert not caller.is_alive(), "the call still waits for an answer nobody will send"
    assert time.monotonic() - started < 5
    assert isinstance(outcome[0], PluginCallError) and outcome[0].status == 503
    assert "supervisor is gone" in outcome[0].message
    with pytest.raises(PluginCallError, match="supervisor is gone"):
        runtime.call("storage", "record_result", {}, timeout=60.0)
    plugin.main.join(5)
    assert not plugin.main.is_alive()  # and the plugin stopped


def test_a_recycle_asked_for_during_a_call_is_sent_after_its_reply(running: Any) -> None:
    """The supervisor recycles only a plugin no call waits on: the reply goes first."""
    plugin = running(heartbeat_interval=5.0)
    plugin.next_message("ready")
    plugin.supervisor_end.send({"t": "call", "id": 7, "method": "heavy_task", "params": {}})
    seen = []
    while plugin.supervisor_end.poll(5):
        message = plugin.supervisor_end.recv()
        seen.append(message)
        if message["t"] == "recycle":
            break
    assert [m["t"] for m in seen] == ["reply", "recycle"], seen
    assert seen[0]["id"] == 7 and seen[0]["result"] == "done"
    assert seen[1]["reason"] == "heavy task done"
    assert not plugin.supervisor_end.poll(0.3)  # asked once, not on every heartbeat


def test_a_stopping_plugin_exits_only_after_the_reply_of_its_call_is_sent(
        running: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = running(heartbeat_interval=5.0, stop_grace=10.0)
    runtime = plugin.runtime
    plugin.next_message("ready")
    sending, release = threading.Event(), threading.Event()
    send = runtime.send

    def slow_reply(message: Any) -> None:
        if message["t"] == "reply":  # the call is done; its reply is on its way
            sending.set()
            release.wait(5)
        send(message)

    monkeypatch.setattr(runtime, "send", slow_reply)
    plugin.supervisor_end.send({"t": "call", "id": 9, "method": "heavy_task", "params": {}})
    assert sending.wait(5)
    runtime.request_stop()  # the drain stops the plugin now
    plugin.main.join(0.5)
    assert plugin.main.is_alive(), "the process would exit before its reply is sent"
    release.set()
    plugin.main.join(5)
    assert not plugin.main.is_alive()
    assert plugin.supervisor_end.poll(1)
    replies = []
    while plugin.supervisor_end.poll(0.2):
        message = plugin.supervisor_end.recv()
        if message["t"] == "reply":
            replies.append(message)
    assert [(m["id"], m.get("result")) for m in replies] == [(9, "done")]
