"""The plugin side of the supervisor pipe: runs one plugin in its forked process.

Threads: the main thread runs ``plugin.run()`` (in the HTTP child, the store's
runtime runs on a thread of its own, ``store_thread.py``); a reader thread takes
commands and replies from the pipe; a heartbeat thread sends ``status()``
every few seconds (a plugin whose status() blocks, or a stopped process, stops
heart-beating and is killed by the supervisor); each routed call runs in its
own thread so a long hot update never blocks status or other calls.
"""

from __future__ import annotations

import itertools
import logging
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from kidecar_supervisor import protocol
from kidecar_supervisor.heap import release_free_heap
from kidecar_supervisor.plugin_api import Plugin, PluginCallError, PluginContext, PodIdentity
from kidecar_supervisor.storage.proxy import RemoteStore
from kidecar_supervisor.structured_log import set_role

EXIT_INIT_FAILED = 78  # EX_CONFIG: the plugin refused to start
SUPERVISOR_GONE = "the supervisor is gone (its pipe is closed); this plugin process is stopping"


class CallTimeout(Exception):
    pass


class PluginRuntime:
    def __init__(self, plugin_class: type[Plugin], name: str, config: Any, conn: Connection,
                 state_dir: Path, identity: PodIdentity, heartbeat_interval: float,
                 stop_grace: float, beat_while: Callable[[], bool] | None = None,
                 on_serve: Callable[[], None] | None = None, recycled: bool = False) -> None:
        self.plugin = plugin_class()
        self.name = name
        self.conn = conn
        self.heartbeat_interval = heartbeat_interval
        self.stop_grace = stop_grace
        self.log = logging.getLogger(f"kidecar.plugin.{name}")
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[threading.Event, list[protocol.Reply]]] = {}
        self._pending_lock = threading.Lock()
        #: the supervisor's end of the pipe is closed: no call can be answered any more
        self._orphaned = False
        self._active_calls = 0
        self._calls_done = threading.Condition()
        #: heartbeats are sent only while this holds (the HTTP child: its poller turns)
        self._beat_while = beat_while
        #: the supervisor's ``serve`` message (the HTTP child only)
        self._on_serve = on_serve
        #: why the plugin asked to be recycled; sent once no call runs (``_offer_recycle``)
        self._recycle_reason: str | None = None
        #: set once init() returned or failed; ``init_failed`` says which
        self.init_done = threading.Event()
        self.init_failed = False
        self.ctx = PluginContext(
            name=name, config=config, state_dir=state_dir, identity=identity, logger=self.log,
            _store_factory=lambda cfg: RemoteStore(self.call, cfg),
            _ready_cb=lambda ready: self.send(protocol.ready(ready)),
            _metrics_cb=lambda n, v, labels: self.send(protocol.gauge(n, v, labels)),
            _recycle_cb=self._want_recycle, recycled=recycled,
        )

    # -- pipe ------------------------------------------------------------------
    def send(self, message: protocol.PipeMessage) -> None:
        with self._send_lock:
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                pass  # supervisor gone: the reader thread notices EOF and stops us

    def call(self, target: str, method: str, params: dict[str, Any],
             timeout: float = 60.0) -> Any:
        """Call a method of another child (e.g. the storage service) and wait."""
        call_id = next(self._ids)
        done = threading.Event()
        slot: list[protocol.Reply] = []
        with self._pending_lock:
            if self._orphaned:
                raise PluginCallError(503, f"{target}.{method}: {SUPERVISOR_GONE}")
            self._pending[call_id] = (done, slot)
        self.send(protocol.call(call_id, method, params, target=target))
        if not done.wait(timeout):
            with self._pending_lock:
                self._pending.pop(call_id, None)
            raise CallTimeout(f"{target}.{method} did not answer within {timeout:g}s")
        reply = slot[0]
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise PluginCallError(int(error.get("status", 500)), str(error.get("error", "failed")),
                                  **{k: v for k, v in error.items() if k not in ("status", "error")})
        return reply.get("result")

    def _reader(self) -> None:
        while True:
            try:
                message: protocol.PipeMessage = self.conn.recv()
            except (EOFError, OSError):
                self.log.warning("supervisor pipe closed; stopping")
                self._fail_pending()
                self.request_stop()
                return
            if message["t"] == "reply":
                with self._pending_lock:
                    waiter = self._pending.pop(message["id"], None)
                if waiter is not None:
                    waiter[1].append(message)
                    waiter[0].set()
            elif message["t"] == "call":
                try:
                    threading.Thread(target=self._serve_call, args=(message,),
                                     name=f"call-{message['method']}", daemon=True).start()
                except RuntimeError as exc:  # no thread to be had: answer, keep reading
                    self.send(protocol.reply_error(message["id"], 503,
                                                   f"plugin overloaded: {exc}"))
            elif message["t"] == "stop":
                self.request_stop(message.get("grace"))
            elif message["t"] == "serve" and self._on_serve is not None:
                self._on_serve()

    def _fail_pending(self) -> None:
        """Nobody will answer a call now: its caller hears so at once, instead of holding
        what it holds (an update holds fileDir's lock) until its timeout while a new
        kidecar waits for it."""
        with self._pending_lock:
            self._orphaned = True
            waiters, self._pending = list(self._pending.items()), {}
        for call_id, (done, slot) in waiters:
            slot.append(protocol.reply_error(call_id, 503, SUPERVISOR_GONE))
            done.set()

    def _serve_call(self, message: protocol.Call) -> None:
        with self._calls_done:
            self._active_calls += 1
        try:
            # the reply is sent before the call stops counting: a stopping process waits
            # for its calls (``_wait_for_calls``) and would otherwise exit between the
            # two, its caller told "plugin exited" for an update that succeeded
            self.send(self._answer(message))
        finally:
            with self._calls_done:
                self._active_calls -= 1
                self._calls_done.notify_all()
        self._offer_recycle()

    def _answer(self, message: protocol.Call) -> protocol.Reply:
        call_id = message["id"]
        try:
            return protocol.reply_ok(call_id, self.plugin.handle(message["method"],
                                                                 message.get("params") or {}))
        except PluginCallError as exc:
            return protocol.reply_error(call_id, exc.status, exc.message, **exc.fields)
        except Exception as exc:  # noqa: BLE001 - report, never crash the plugin
            self.log.exception("call %s failed", message["method"])
            return protocol.reply_error(call_id, 500, f"{type(exc).__name__}: {exc}")

    def _want_recycle(self, reason: str) -> None:
        self._recycle_reason = reason
        self._offer_recycle()

    def _offer_recycle(self) -> None:
        """Send the plugin's recycle wish once no call runs here: after the reply of the
        call that made it (the supervisor recycles only a plugin no call waits on)."""
        with self._calls_done:
            reason, idle = self._recycle_reason, self._active_calls == 0
            if reason is None or not idle or self.ctx.stop_requested.is_set():
                return
            self._recycle_reason = None
        self.send(protocol.recycle(reason))

    def _heartbeat(self) -> None:
        while not self.ctx.stop_requested.wait(self.heartbeat_interval):
            try:
                infos = self.plugin.status()
            except Exception as exc:  # noqa: BLE001 - a status bug is reported, not fatal
                infos = {"statusError": f"{type(exc).__name__}: {exc}"}
            if self._beat_while is None or self._beat_while():
                self.send(protocol.heartbeat(infos, self.plugin.version))
            release_free_heap()  # what the last calls freed goes back (heap.py)

    # -- lifecycle -------------------------------------------------------------
    def request_stop(self, grace: float | None = None) -> None:
        """Stop soon; in-flight calls get ``grace`` seconds at most (the supervisor's
        shutdown deadline), else this plugin's own stop grace."""
        if grace is not None:
            self.stop_grace = min(self.stop_grace, grace)
        if self.ctx.stop_requested.is_set():
            return
        self.ctx.stop_requested.set()
        threading.Thread(target=self._stop_plugin, name="stop", daemon=True).start()

    def _stop_plugin(self) -> None:
        try:
            self.plugin.stop()
        except Exception:  # noqa: BLE001
            self.log.exception("stop() failed")

    def main(self) -> int:
        threading.Thread(target=self._reader, name="pipe-reader", daemon=True).start()
        try:
            self.plugin.init(self.ctx)
        except Exception as exc:  # noqa: BLE001 - any init failure is a start failure
            message = str(exc) or type(exc).__name__
            self.log.error("plugin failed to start: %s", message)
            self.send(protocol.error_report(f"init failed: {message}"))
            self.init_failed = True
            self.init_done.set()
            return EXIT_INIT_FAILED
        self.send(protocol.started(self.plugin.version))
        self.init_done.set()
        if self.plugin.ready_on_start:
            self.send(protocol.ready(True))
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        try:
            self.plugin.run()
        except Exception as exc:  # noqa: BLE001
            self.log.error("plugin crashed: %s\n%s", exc, traceback.format_exc())
            self.send(protocol.error_report(f"{type(exc).__name__}: {exc}"))
            return 1
        self._wait_for_calls()
        return 0

    def _wait_for_calls(self) -> None:
        """Let in-flight calls (a hot update) finish, within the stop grace."""
        deadline = time.monotonic() + max(0.0, self.stop_grace - 1.0)
        with self._calls_done:
            while self._active_calls and time.monotonic() < deadline:
                self._calls_done.wait(deadline - time.monotonic())


def run_plugin_process(plugin_class: type[Plugin], name: str, config: Any, conn: Connection,
                       state_dir: Path, identity: PodIdentity, heartbeat_interval: float,
                       stop_grace: float, recycled: bool = False) -> int:
    """Entry point of a forked plugin process; returns the exit code."""
    set_role(name)
    runtime = PluginRuntime(plugin_class, name, config, conn, state_dir, identity,
                            heartbeat_interval, stop_grace, recycled=recycled)
    signal.signal(signal.SIGTERM, lambda *_: runtime.request_stop())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return runtime.main()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


