"""The real ``ChildOps``: fork and exec children, signal them, and move bytes on
their pipes without ever blocking the main loop.

Forked children (plugins, and HTTP with the store in it) get a duplex pipe; the supervisor's
end is non-blocking and registered in the loop's selector. Reads are framed by
``PipeFrames`` (never wait for half a message) and bounded per wake-up, so one
chatty child cannot starve the others or the control requests. Binaries are
exec'd with stdout+stderr in one non-blocking pipe, read one bounded chunk per
wake-up.
"""

from __future__ import annotations

import logging
import os
import selectors
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

from kidecar_supervisor import children
from kidecar_supervisor.child import Child, Process
from kidecar_supervisor.http_child import HEARTBEAT_INTERVAL, StoreFactory
from kidecar_supervisor.output_limiter import DropReport
from kidecar_supervisor.pipe_frames import PipeFrameError, encode
from kidecar_supervisor.plugin_api import PodIdentity
from kidecar_supervisor.plugin_runtime import PluginRuntime
from kidecar_supervisor.protocol import STORAGE, PipeMessage
from kidecar_supervisor.states import ChildKind

log = logging.getLogger("kidecar.launcher")

#: bytes read from one child's pipe per wake-up of the main loop
PIPE_READ_BUDGET = 256 * 1024
#: bytes read from one binary's output per wake-up of the main loop
OUTPUT_READ_CHUNK = 64 * 1024
#: a child whose pipe takes no byte of what is queued for it this long is hung
OUTBOX_STALL_SECONDS = 10.0
#: ... and so is one with this much queued (its reader thread is stuck)
MAX_OUTBOX_BYTES = 64 << 20


@dataclass
class PipeRead:
    messages: list[PipeMessage] = field(default_factory=list)
    #: the child closed its end (it exited, or is about to)
    eof: bool = False
    #: the bytes are not messages: the child is broken
    garbled: str = ""


class ChildEvents(Protocol):
    """What the supervisor hears about its children (it passes it to the router)."""

    def child_running(self, child: Child) -> None: ...

    def child_settled(self, child: Child, reason: str) -> None: ...

    def pipe_closed(self, child: Child) -> None: ...


class Launcher:
    """Side effects of the children, for ``Child`` (ChildOps) and the supervisor."""

    def __init__(self, selector: selectors.BaseSelector, state_dir: Path,
                 identity: PodIdentity, http_body: Callable[[Connection, StoreFactory], int],
                 keep_fds: Callable[[], set[int]], events: ChildEvents) -> None:
        self.selector = selector
        self.state_dir = state_dir
        self.identity = identity
        self._http_body = http_body
        self._keep_fds = keep_fds
        self._events = events

    # -- ChildOps ----------------------------------------------------------------------
    def clock(self) -> float:
        return time.monotonic()

    def fork(self, child: Child) -> Process:
        parent_end, child_end = Pipe(duplex=True)
        keep = {child_end.fileno()}
        if child.kind == ChildKind.HTTP:
            keep |= self._keep_fds()
        try:
            pid = children.fork_child(lambda: self._child_body(child, child_end), keep)
        except OSError:
            parent_end.close()
            raise
        finally:
            child_end.close()
        # reads are framed by us (never block on half a message); sends are checked first
        os.set_blocking(parent_end.fileno(), False)
        self.selector.register(parent_end, selectors.EVENT_READ, ("pipe", child))
        return Process(pid=pid, conn=parent_end)

    def _child_body(self, child: Child, conn: Connection) -> int:
        """Runs in the forked child: becomes the plugin, or the HTTP server and store."""
        from kidecar_supervisor.structured_log import set_role

        set_role(child.name)
        if child.kind == ChildKind.HTTP:
            return self._http_body(conn, partial(self._store_runtime, child))
        from kidecar_supervisor.plugin_runtime import run_plugin_process

        assert child.spec is not None
        interval = min(2.0, child.restart.heartbeat_timeout_seconds / 4)
        return run_plugin_process(child.spec.plugin_class, child.name, child.spec.config, conn,
                                  self.state_dir, self.identity, interval,
                                  child.restart.stop_grace_seconds, recycled=child.recycling)

    def _store_runtime(self, child: Child, conn: Connection, beat_while: Callable[[], bool],
                       on_serve: Callable[[], None]) -> PluginRuntime:
        """The store's runtime in the HTTP child, on its pipe (http_child, store_thread).

        The store's modules (its Kubernetes client and pod watch) are imported here, in
        the HTTP child: no other process runs them (issue 16, docs/footprint.md).
        """
        from kidecar_supervisor.storage.service import StorageService

        return PluginRuntime(StorageService, STORAGE, None, conn, self.state_dir, self.identity,
                             HEARTBEAT_INTERVAL, child.restart.stop_grace_seconds,
                             beat_while=beat_while, on_serve=on_serve)

    def spawn(self, child: Child) -> Process:
        assert child.spec is not None
        cfg = child.spec.config
        popen = children.spawn_program(cfg.argv(), cfg.environment(), cfg.working_dir)
        assert popen.stdout is not None
        fd = popen.stdout.fileno()
        os.set_blocking(fd, False)
        self.selector.register(fd, selectors.EVENT_READ, ("output", child))
        return Process(pid=popen.pid, output_fd=fd, popen=popen)

    def signal_group(self, pid: int, sig: int) -> None:
        children.signal_group(pid, sig)

    def send(self, child: Child, message: PipeMessage) -> bool:
        """Queue ``message`` and write what the pipe takes now, never blocking the main
        loop (the rest goes when the pipe is writable again); False if the child is
        not listening.

        A burst of calls larger than the pipe's buffer is normal (eight 64 KiB
        hot-update requests at once); a child that takes nothing for
        OUTBOX_STALL_SECONDS (``check_outbox``), or lets MAX_OUTBOX_BYTES pile up,
        has a stuck reader thread and is killed as hung.
        """
        if child.conn is None:
            return False
        try:
            frame = encode(message)
        except Exception as exc:  # noqa: BLE001 - an unpicklable message is our bug, not theirs
            log.error("cannot send a %s message to %s: %s", message.get("t"), child.name, exc)
            return False
        if len(child.outbox) + len(frame) > MAX_OUTBOX_BYTES:
            self._hung(child)
            return False
        if not child.outbox:
            child.outbox_since = self.clock()
        child.outbox += frame
        return self.flush(child)

    def flush(self, child: Child) -> bool:
        """Write what the pipe takes of the child's queue; watch for writability while
        some is left. False if the pipe is gone."""
        conn = child.conn
        if conn is None:
            return False
        while child.outbox:
            try:
                written = os.write(conn.fileno(), child.outbox)
            except BlockingIOError:
                break
            except OSError:
                self.close_pipe(child)
                return False
            del child.outbox[:written]
            child.outbox_since = self.clock()
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if child.outbox else 0)
        if self.selector.get_key(conn).events != events:
            self.selector.modify(conn, events, ("pipe", child))
        return True

    def check_outbox(self, child: Child, now: float) -> None:
        if child.outbox and now - child.outbox_since > OUTBOX_STALL_SECONDS:
            self._hung(child)

    @staticmethod
    def _hung(child: Child) -> None:
        """Its reader is stuck: what is queued will never be read (calls in flight are
        answered 503 when its pipe closes); kill it once."""
        child.outbox = bytearray()
        child.kill_hung("not reading its pipe")

    def running(self, child: Child) -> None:
        self._events.child_running(child)

    def settled(self, child: Child, reason: str) -> None:
        self._events.child_settled(child, reason)

    # -- the pipe --------------------------------------------------------------------------
    def read_pipe(self, child: Child, budget: int = PIPE_READ_BUDGET) -> PipeRead:
        """Whole messages the child wrote, at most ``budget`` bytes' worth this time."""
        result = PipeRead()
        conn = child.conn
        if conn is None:
            return result
        taken = 0
        while taken < budget:
            try:
                data = os.read(conn.fileno(), 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                result.eof = True
                break
            taken += len(data)
            child.inbox.feed(data)
        try:
            result.messages.extend(child.inbox.messages())
        except PipeFrameError as exc:
            result.garbled = str(exc)
        return result

    def close_pipe(self, child: Child) -> None:
        """Unregister and close the pipe; calls in flight to it are failed."""
        if child.conn is None:
            return
        try:
            self.selector.unregister(child.conn)
        except (KeyError, ValueError):
            pass
        child.conn.close()
        child.conn = None
        child.outbox = bytearray()
        self._events.pipe_closed(child)

    # -- a binary's output -----------------------------------------------------------------
    def read_output(self, child: Child) -> bytes | None:
        """One bounded chunk of the program's output: b"" at its end, None if it
        wrote nothing new."""
        if child.output_fd < 0:
            return b""
        try:
            return os.read(child.output_fd, OUTPUT_READ_CHUNK)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def pump_output(self, child: Child) -> None:
        """One bounded chunk of output into the log, within the child's limits."""
        data = self.read_output(child)
        if data is None:
            return
        if not data:
            self.finish_output(child)
            return
        assert child.output is not None
        for line in child.output.feed(data, self.clock()):
            _log_output(child, line)

    def finish_output(self, child: Child) -> None:
        """The program closed its output (or exited): last line, last report, close."""
        if child.output_fd < 0:
            return
        if child.output is not None:
            for line in child.output.flush():
                _log_output(child, line)
            self.report_dropped_output(child, child.output.pending_report())
        self.close_output(child)

    @staticmethod
    def report_dropped_output(child: Child, report: DropReport | None) -> None:
        if report is None or child.output is None:
            return
        limits = child.output.limits
        log.warning("%s: dropped %d output line(s) (%d bytes) in %.1fs: over the limit of "
                    "%g lines/s, %d bytes/s (%d dropped since start)", child.name, report.lines,
                    report.bytes, report.seconds, limits.lines_per_second,
                    limits.bytes_per_second, child.output.dropped_lines_total,
                    extra={"plugin": child.name, "fields": {
                        "droppedLines": report.lines, "droppedBytes": report.bytes}})

    def close_output(self, child: Child) -> None:
        if child.output_fd < 0:
            return
        try:
            self.selector.unregister(child.output_fd)
        except (KeyError, ValueError):
            pass
        if child.popen is not None and child.popen.stdout is not None:
            child.popen.stdout.close()
        child.output_fd = -1


def _log_output(child: Child, line: str) -> None:
    log.info("%s", line, extra={"plugin": child.name, "fields": {"stream": "output"}})
