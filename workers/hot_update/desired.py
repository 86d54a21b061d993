"""The desired version: an annotation on this pod that the sidecar follows (DESIGN §10).

``kidecar rollout`` (or anyone with ``patch pods``) writes
``{"version", "url", "sha256"}`` (plus an optional ``rollout`` name) under
the configured annotation key; the store (in the HTTP child) watches the pod
(``storage/pod_watch.py``) and this follower long-polls it over the pipe.

A value different from what was last handled is applied through exactly the
path of ``POST /hot-update`` (``apply``: the plugin's own ``update``), so
validation, 409, "unchanged", confirm and rollback all hold, and the result
goes where every result goes (annotation, result store, Event), which is
what the rollout driver reads.

A desired value that failed is remembered in the state dir and never retried
on its own, not even after a restart: it waits for a new value (a rollout
run writes its name into the value, so a new rollout of the same version is
a new value). A busy sidecar (409: an update is running) is retried once the
running one ends.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_api import PluginCallError, ResultStore
from kidecar_supervisor.plugin_kit.durable_files import atomic_write_json

log = logging.getLogger("kidecar.hot_update.desired")

FAILED_NAME = "desired-failed.json"
#: how long one long-poll of the store lasts (a pipe call, not an API request)
WAIT_SECONDS = 20.0
#: at start, how long to wait for the watch's first answer before restoring without it
START_WAIT_SECONDS = 10.0
#: a busy sidecar (409) or an unreachable store is asked again after this
RETRY_SECONDS = 1.0
#: the longest wait between two asks while the store keeps failing
MAX_RETRY_SECONDS = 30.0
_FIELDS = ("version", "url", "sha256", "rollout")


@dataclass(frozen=True)
class DesiredVersion:
    """A parsed desired-version annotation."""

    version: str
    url: str
    sha256: str = ""
    rollout: str = ""

    def params(self) -> dict[str, Any]:
        """The ``POST /hot-update`` body this desired version is."""
        out: dict[str, Any] = {"version": self.version, "url": self.url}
        if self.sha256:
            out["sha256"] = self.sha256
        return out


def parse_desired(text: str) -> DesiredVersion:
    """The annotation's value as a DesiredVersion; ValueError saying what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError('must be a JSON object {"version", "url", "sha256"}')
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(_FIELDS)}")
    for name in ("version", "url"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise ValueError(f"{name} must be a non-empty string")
    for name in ("sha256", "rollout"):
        if not isinstance(data.get(name, ""), str):
            raise ValueError(f"{name} must be a string")
    return DesiredVersion(data["version"], data["url"], data.get("sha256", ""),
                          data.get("rollout", ""))


class DesiredFollower:
    """Follows the desired-version annotation; applies each new value once."""

    def __init__(self, store: ResultStore, key: str, state_dir: Path,
                 apply: Callable[[dict[str, Any]], dict[str, Any]],
                 stopping: threading.Event, warn: Callable[[str, str], None],
                 settling: Callable[[], AbstractContextManager[None]]) -> None:
        self.store = store
        self.key = key
        self.apply = apply
        self.stopping = stopping
        self.warn = warn
        #: held while a value is considered: the process is not recycled between
        #: an update's end and the follower's note of it (a failed value would be
        #: tried once more by the fresh process)
        self.settling = settling
        self.failed_path = state_dir / FAILED_NAME
        self.revision = 0
        #: the last value acted on (applied, found unchanged, failed or invalid)
        self.handled: str | None = None
        self._thread: threading.Thread | None = None
        self._failures = 0

    @property
    def enabled(self) -> bool:
        return bool(self.key)

    # -- at start ----------------------------------------------------------------------
    def apply_at_start(self) -> dict[str, Any] | None:
        """The desired version wins over the recorded one: apply it now, before ready.

        The answer of the update, or None when there is nothing (new) to apply,
        the watch did not answer in time, or the update failed (then the caller
        restores the recorded version as if there were no desired one).
        """
        if not self.enabled:
            return None
        value = self._poll(START_WAIT_SECONDS)
        if value is None:
            return None
        busy, answer = self._consider(value)
        return None if busy else answer

    # -- following -----------------------------------------------------------------------
    def start(self) -> None:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._follow, name="desired-version",
                                            daemon=True)
            self._thread.start()

    def _follow(self) -> None:
        while not self.stopping.is_set() and self.enabled:
            value = self._poll(WAIT_SECONDS)
            if value is None or self.stopping.is_set():
                continue
            busy, _ = self._consider(value)
            if busy:  # ask again after a pause, without waiting for the pod to change
                self.stopping.wait(RETRY_SECONDS)
                self.revision = 0

    def _poll(self, wait: float) -> str | None:
        """The annotation's value once the pod changed (or None: nothing to do yet)."""
        try:
            snap = self.store.watch_annotation(self.key, self.revision, wait)
        except Exception as exc:  # noqa: BLE001 - storage restarting: ask again later
            self._failures += 1
            delay = min(MAX_RETRY_SECONDS, RETRY_SECONDS * 2 ** min(self._failures, 6))
            log.log(logging.WARNING if self._failures == 1 else logging.DEBUG,
                    "desired version: the store did not answer (%s); asking "
                    "again in %.0fs", exc, delay)
            self.stopping.wait(delay)
            return None
        self._failures = 0
        if not snap.get("supported"):
            log.warning("desired version: this storage has no pod to watch; not followed")
            self.key = ""
            return None
        if not snap.get("synced"):
            return None
        self.revision = int(snap.get("revision", 0))
        value = snap.get("value")
        return value if isinstance(value, str) and value != self.handled else None

    def _consider(self, value: str) -> tuple[bool, dict[str, Any] | None]:
        """Apply ``value`` unless it failed before: (busy: try again later, the answer)."""
        with self.settling():
            return self._consider_settling(value)

    def _consider_settling(self, value: str) -> tuple[bool, dict[str, Any] | None]:
        try:
            desired = parse_desired(value)
        except ValueError as exc:
            self.handled = value
            self.warn("DesiredVersionInvalid", f"annotation {self.key} is not a desired "
                      f"version: {exc}")
            return False, None
        if value == self._failed_value():
            self.handled = value
            log.info("desired version %s failed before: waiting for a new desired value",
                     desired.version)
            return False, None
        log.info("desired version %s (rollout %r): applying it", desired.version,
                 desired.rollout)
        try:
            answer = self.apply(desired.params())
        except PluginCallError as err:
            if err.status == 409:
                return True, None
            self.handled = value
            self._remember_failed(value, err.message)
            log.warning("desired version %s failed (%s): %s; not retried until the desired "
                        "value changes", desired.version, err.status, err.message)
            return False, None
        self.handled = value
        self._forget_failed()
        return False, answer

    # -- the failed value, kept across restarts ------------------------------------------
    def _failed_value(self) -> str | None:
        try:
            data = json.loads(self.failed_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        value = data.get("value") if isinstance(data, dict) else None
        return value if isinstance(value, str) else None

    def _remember_failed(self, value: str, why: str) -> None:
        try:
            atomic_write_json(self.failed_path, {"value": value, "error": why[:500]})
        except OSError as exc:
            log.error("cannot remember the failed desired version: %s", exc)

    def _forget_failed(self) -> None:
        try:
            self.failed_path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot clear the failed desired version: %s", exc)
