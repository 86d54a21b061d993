"""Restart of the HTTP child without a gap: the new one serves before the old one stops
(HTTP and its store both: the old store is told to stop with it)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.child import Child
from kidecar_supervisor.config import SidecarConfig
from kidecar_supervisor.http_child import HttpChild
from kidecar_supervisor.plugin_api import Plugin, PodIdentity
from kidecar_supervisor.plugin_runtime import PluginRuntime
from kidecar_supervisor.protocol import started
from kidecar_supervisor.states import ChildState
from tests.support.child_fakes import FakeOps


def setup() -> tuple[HttpChild, list[Child], FakeOps]:
    ops = FakeOps()
    http = HttpChild(SidecarConfig(plugins=()), shutdown_grace=25.0, listener=lambda: None)
    current = http.new_child(ops)
    current.start()
    current.on_message(started("1"))  # its store runs
    http.serving([current], current.pid)
    return http, [current], ops


def exit_of(child: Child, code: int) -> None:
    child.on_exit(code, may_restart=True)


def test_the_old_worker_serves_until_the_new_one_does() -> None:
    http, children, ops = setup()
    old = children[0]
    http.restart(old)
    new = http.successor
    assert new is not None and new.pid != old.pid and new.restarts == old.restarts + 1
    assert old.state == ChildState.RUNNING and ops.signals == []  # untouched so far
    http.restart(old)  # a second request while one is under way changes nothing
    assert http.successor is new
    http.serving(children, new.pid)
    assert children == [new] and new.ready and http.successor is None
    assert old.state == ChildState.STOPPING and (old.pid, signal.SIGTERM) in ops.signals
    assert ops.sent == [("http", {"t": "stop", "grace": 26.0})]  # its store stops too
    assert old.stop_deadline == ops.now + 26.0  # gunicorn's graceful timeout + 1
    assert http.exited(children, old, 0, exit_of)
    assert old.state == ChildState.STOPPED and http.retiring == [] and http.extra() == []


def test_a_new_worker_that_dies_before_serving_leaves_the_old_one() -> None:
    http, children, ops = setup()
    old = children[0]
    http.restart(old)
    new = http.successor
    assert new is not None
    new_pid = new.pid
    assert http.exited(children, new, 1, exit_of)
    assert new.state == ChildState.STOPPED and http.successor is None
    assert children == [old] and old.state == ChildState.RUNNING
    assert all(pid == new_pid for pid, _ in ops.signals)  # the old one was never signalled


def test_the_old_worker_dying_meanwhile_hands_over_to_the_new_one() -> None:
    http, children, _ = setup()
    old = children[0]
    http.restart(old)
    new = http.successor
    assert http.exited(children, old, -9, exit_of)
    assert children == [new] and old.state == ChildState.STOPPED and http.retiring == []
    http.serving(children, new.pid)  # it reports serving later: now it is the current one
    assert new is not None and new.ready


def test_other_exits_are_not_its_business() -> None:
    http, children, _ = setup()
    assert not http.exited(children, children[0], 0, exit_of)
    assert children[0].state == ChildState.RUNNING


# -- the child's body: its store first, HTTP, then its store until told to stop --------------

class _Store(Plugin):
    """Stands in for StorageService: runs until stopped."""

    name = "storage"

    def run(self) -> None:
        self.ctx.stop_requested.wait()


def _body(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve_http: Any,
          stores: list[PluginRuntime] | None = None) -> tuple[list[dict[str, Any]], int]:
    """Run HttpChild.body on a real pipe, in this process, with ``serve_http`` in place
    of gunicorn; the messages the supervisor's end got, and the exit code."""
    from kidecar_supervisor import http_server

    monkeypatch.setattr(http_server, "serve_http", serve_http)
    supervisor_end, child_end = Pipe(duplex=True)
    listener = socket.socket()
    http = HttpChild(SidecarConfig(plugins=()), shutdown_grace=25.0, listener=lambda: listener)
    http.prepare(str(tmp_path / "control.sock"), b"key", token="")

    def make_store(conn: Connection, beat_while: Any, on_serve: Any) -> PluginRuntime:
        runtime = PluginRuntime(_Store, "storage", None, conn, tmp_path, PodIdentity(), 0.05,
                                1.0, beat_while=beat_while, on_serve=on_serve)
        if stores is not None:
            stores.append(runtime)
        return runtime

    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = http.body(child_end, make_store)
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.close()
    messages = []
    while supervisor_end.poll(0):
        messages.append(supervisor_end.recv())
    return messages, code


def test_a_worker_that_ends_unasked_takes_its_store_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving nothing while its store beats would look healthy forever: it exits 1."""
    messages, code = _body(tmp_path, monkeypatch, lambda *args, **kwargs: 0)
    assert code == 1
    assert [m["t"] for m in messages][:1] == ["started"]  # the store ran before HTTP


def test_after_sigterm_the_store_runs_until_the_supervisor_stops_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stores: list[PluginRuntime] = []
    http_stopped: list[float] = []

    def serve_until_sigterm(*args: Any, **kwargs: Any) -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # the shutdown's first step: HTTP stops
        http_stopped.append(time.monotonic())
        threading.Timer(0.5, stores[0].request_stop).start()  # the supervisor's "stop"
        return 0

    messages, code = _body(tmp_path, monkeypatch, serve_until_sigterm, stores)
    assert code == 0
    assert time.monotonic() - http_stopped[0] >= 0.45  # the store outlived HTTP
    assert "hb" in [m["t"] for m in messages]  # and kept beating meanwhile
