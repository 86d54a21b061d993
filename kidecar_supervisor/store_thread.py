"""The store, run on a thread of the HTTP child instead of in a process of its own.

Why (issue 16, docs/footprint.md): every game-server pod carries one kidecar,
and a forked CPython process costs what it touches of its parent's pages. The
store as a fifth process cost 6.9 MiB PSS more than the same store inside the
HTTP child, which already touches most of the same pages (JSON, sockets,
threads, the pipe protocol). The supervisor cannot host it: it forks, and a
child forked while a store thread holds a lock inside OpenSSL or SQLite would
inherit that lock held. The HTTP child never forks.

What the move keeps: the store speaks the same pipe protocol as before
(``PluginRuntime`` running ``StorageService``), on the HTTP child's pipe, so
the router and the plugins' ``RemoteStore`` do not change. What it costs: the
store and HTTP share one fate (a crash or hang of either restarts both), and
the HTTP child's life has a second half: after SIGTERM its HTTP worker stops
at once, while its store takes the plugins' last results until the
supervisor sends it ``stop`` (``http_child.HttpChild.body``).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

from kidecar_supervisor.plugin_runtime import PluginRuntime

log = logging.getLogger("kidecar.http")


class StoreThread:
    """``runtime.main()`` on a thread; if the store ends while HTTP still serves (a
    crash, not a stop), the process is told to stop so the supervisor restarts both."""

    def __init__(self, runtime: PluginRuntime) -> None:
        self.runtime = runtime
        self.exit_code: int | None = None
        self._thread = threading.Thread(target=self._run, name="store", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait_started(self) -> bool:
        """Block until the store's init() returned (True) or failed (False)."""
        self.runtime.init_done.wait()
        return not self.runtime.init_failed

    def join(self) -> int:
        """Wait for the store to end (``stop`` from the supervisor, or its pipe closed)."""
        self._thread.join()
        return self.exit_code if self.exit_code is not None else 1

    def _run(self) -> None:
        try:
            self.exit_code = self.runtime.main()
        except BaseException:  # noqa: BLE001 - the process must still end
            log.exception("the store thread failed")
            self.exit_code = 1
        finally:
            self.runtime.init_done.set()
            if not self.runtime.ctx.stop_requested.is_set() or self.exit_code:
                log.error("the store stopped (exit %s) without being asked: stopping the "
                          "HTTP child so both start again", self.exit_code)
                os.kill(os.getpid(), signal.SIGTERM)
