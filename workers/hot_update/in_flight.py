"""The update in flight, so a retry of the same request joins it instead of a 409.

Clients retry: a curl with ``--retry``, a rollout controller, a user pressing
enter twice. A retry of the update that is running right now (same version,
same URL) is not a conflict: it waits for that update and answers with its
outcome, as if it had been the one to run it. Only a request for something
else while an update runs is a 409.
"""

from __future__ import annotations

import threading
from typing import Any

from kidecar_supervisor.plugin_api import PluginCallError
from workers.hot_update.update_request import UpdateRequest


class InFlight:
    """One running update (or restore) and, once finished, its outcome."""

    def __init__(self, request: UpdateRequest, restoring: bool = False) -> None:
        self.request = request
        self.restoring = restoring
        self._done = threading.Event()
        self._result: dict[str, Any] | None = None
        self._error: PluginCallError | None = None

    def matches(self, request: UpdateRequest) -> bool:
        """Same version from the same URL; a checksum, if given, must be the one being checked.

        A joiner with a sha256 the running update does not verify must not be told its
        checksum was checked: that is a conflict, not the same request.
        """
        mine = self.request
        if (request.version, request.url) != (mine.version, mine.url):
            return False
        return not request.sha256 or request.sha256 == mine.sha256

    def finish(self, result: dict[str, Any] | None = None,
               error: PluginCallError | None = None) -> None:
        """Publish the outcome; every joiner wakes up with it."""
        self._result = result
        self._error = error if result is None else None
        if result is None and error is None:
            self._error = PluginCallError(500, f"the update to {self.request.version} ended "
                                          "without an outcome")
        self._done.set()

    def join(self) -> dict[str, Any]:
        """Wait for the outcome: the owner's answer (marked ``joined``), or its error raised."""
        self._done.wait()
        if self._error is not None:
            raise PluginCallError(self._error.status, self._error.message,
                                  **{**self._error.fields, "joined": True})
        assert self._result is not None
        return {**self._result, "joined": True}
