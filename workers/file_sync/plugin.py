"""The file_sync plugin: the OKG image-based hot update, without a shell script.

At start ``run``: copy the image's files (``srcDir``) into the shared
``dstDir`` (only changed files, each atomically), say ready (the files are in
place, so a game started after the sidecar reads the new ones), reload the
game if anything changed since its last reload, and record the version in
the result store like a hot update. With ``watch`` on it then reloads the game
once per burst of changes in ``dstDir`` until stopped.

Reload semantics are hot_update's (same code): ``signal`` goes to every
process whose command line contains ``processName``, never kidecar itself;
``request`` is retried until 2xx or ``deadlineSeconds``. One difference is
deliberate: when no game process is running *at all* in signal mode, that is
not a failure here. With ``sidecarStartOrder: Before`` (the default) the
sidecar copies before the game exists; the game then loads the complete new
files when it starts, and a SIGHUP sent to a process that has not installed
its handler yet would kill it. The result says "nothing to reload" and a
warning is logged, so a wrong ``processName`` is still visible.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from kidecar_supervisor.plugin_api import (
    Plugin,
    PluginContext,
    ResultRecord,
    ResultStore,
    recorded_parts,
)
from kidecar_supervisor.plugin_kit.reload import (
    GameNotRunning,
    ReloadError,
    request_reload,
    signal_reload,
)
from workers.file_sync.config import FileSyncConfig, resolve_version
from workers.file_sync.marker import SyncMarker, read_marker, write_marker
from workers.file_sync.tree_copy import SyncAborted, SyncError, SyncReport, sync_tree
from workers.file_sync.watch import ChangeWatcher

log = logging.getLogger("kidecar.file_sync")

PLUGIN_NAME = "file_sync"


class ReloadResult:
    """How one reload went: ``ok`` false is a failure; ``skipped`` means no game to reload."""

    def __init__(self, ok: bool, message: str, skipped: bool = False) -> None:
        self.ok = ok
        self.message = message
        self.skipped = skipped
        self.at = time.time()

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "skipped": self.skipped, "message": self.message, "at": self.at}


class FileSyncPlugin(Plugin):
    """Copies bundled files into the shared directory and reloads the game."""

    name: ClassVar[str] = PLUGIN_NAME
    version: ClassVar[str] = "0.1.0"
    config_type: ClassVar[type] = FileSyncConfig
    ready_on_start: ClassVar[bool] = False

    def init(self, ctx: PluginContext) -> None:
        super().init(ctx)
        if not isinstance(ctx.config, FileSyncConfig):
            raise TypeError(f"file_sync needs a FileSyncConfig, got {type(ctx.config).__name__}")
        self.cfg: FileSyncConfig = ctx.config
        self.src = Path(self.cfg.src_dir)
        self.dst = Path(self.cfg.dst_dir)
        if not self.src.is_dir():
            raise RuntimeError(f"file_sync: srcDir {self.src} is not a directory "
                               "(the files must be baked into the sidecar image)")
        try:
            self.dst.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeError(f"file_sync: dstDir {self.dst} is not usable: "
                               f"{exc.strerror or exc}") from exc
        if self.cfg.version_env:
            try:
                resolve_version(self.cfg, "")
            except ValueError as exc:
                raise RuntimeError(f"file_sync: {exc}") from exc
        self.store: ResultStore = ctx.storage(self.cfg.storage)
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"state": "starting", "reloads": 0, "bursts": 0,
                                       "watch": self.cfg.watch.enabled}

    # -- lifecycle -------------------------------------------------------------
    def run(self) -> None:
        stop = self.ctx.stop_requested
        watcher = self._watcher() if self.cfg.watch.enabled else None
        report = self._initial_sync()
        if report is None:
            return  # stopped mid-copy
        if watcher is not None:
            watcher.reset()  # our own copies are not a change to react to
        self.ctx.set_ready(True)
        self._after_sync(report)
        if watcher is not None:
            self._set(state="watching")
            watcher.run()
        else:
            self._set(state="synced")
            stop.wait()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._state)

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        if method == "file_sync_status":
            return self.status()
        return super().handle(method, params)

    # -- start-up sync ---------------------------------------------------------
    def _initial_sync(self) -> SyncReport | None:
        self._set(state="syncing")
        started = time.monotonic()
        try:
            report = sync_tree(self.src, self.dst, stop=self.ctx.stop_requested)
        except SyncAborted:
            return None
        except SyncError as exc:
            self._set(state="failed", error=str(exc))
            self._record(self.cfg.version or "unknown", "", False, f"copy failed: {exc}")
            raise RuntimeError(f"file_sync: {exc}") from exc
        log.info("synced %s -> %s: %s in %.2fs", self.src, self.dst, report.summary(),
                 time.monotonic() - started)
        self._set(copied=len(report.copied), unchanged=report.unchanged,
                  bytesCopied=report.bytes_copied, digest=report.digest,
                  version=resolve_version(self.cfg, report.digest), syncedAt=time.time())
        return report

    def _after_sync(self, report: SyncReport) -> None:
        """Reload and record, unless these exact files were already reloaded before."""
        version = resolve_version(self.cfg, report.digest)
        previous = read_marker(self.dst)
        if (not report.copied and previous is not None and previous.reloaded
                and previous.digest == report.digest):
            log.info("files of version %s unchanged since their last reload: nothing to do",
                     version)
            return
        write_marker(self.dst, SyncMarker(version, report.digest, reloaded=False))
        result = self.reload()
        if result.ok:
            write_marker(self.dst, SyncMarker(version, report.digest, reloaded=True))
        self._record(version, report.digest, result.ok,
                     f"{report.summary()}; reload: {result.message}")

    # -- reload ---------------------------------------------------------------------
    def reload(self) -> ReloadResult:
        """Make the game load dstDir again; never raises."""
        self._set(state="reloading")
        result = self._reload_once()
        with self._lock:
            self._state["reloads"] += 0 if result.skipped else 1
            self._state["lastReload"] = result.to_dict()
        if not result.ok:
            log.error("reload failed: %s", result.message)
        return result

    def _reload_once(self) -> ReloadResult:
        try:
            if self.cfg.load_patch_type == "signal" and self.cfg.signal is not None:
                outcome = signal_reload(self.cfg.signal)
            elif self.cfg.request is not None:
                outcome = request_reload(self.cfg.request, cancel=self.ctx.stop_requested)
            else:  # parse() makes this impossible
                return ReloadResult(False, "no reload configured")
        except GameNotRunning as exc:
            if self.cfg.load_patch_type != "signal":
                return ReloadResult(False, exc.message)
            log.warning("%s; nothing to reload (a game started later reads the new files)",
                        exc.message)
            return ReloadResult(True, "no game process running: nothing to reload", skipped=True)
        except ReloadError as exc:
            return ReloadResult(False, exc.message)
        return ReloadResult(True, outcome.message)

    # -- watch mode -----------------------------------------------------------------
    def _watcher(self) -> ChangeWatcher:
        watch = self.cfg.watch
        return ChangeWatcher(self.dst, self._on_burst, debounce=watch.debounce_seconds,
                             interval=watch.interval_seconds, ignore=watch.ignore,
                             stop=self.ctx.stop_requested)

    def _on_burst(self, paths: list[str]) -> None:
        with self._lock:
            self._state["bursts"] += 1
        result = self.reload()
        self._set(state="watching")
        if result.skipped:
            return
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        text = f"{len(paths)} file(s) changed in {self.dst} ({shown}); reload: {result.message}"
        try:
            self.store.emit_event("FileSyncReload" if result.ok else "FileSyncReloadFailed",
                                  text, warning=not result.ok)
        except Exception as exc:  # noqa: BLE001 - an event must never stop the watch
            log.warning("cannot record the reload event: %s", exc)

    # -- helpers ----------------------------------------------------------------------
    def _record(self, version: str, digest: str, success: bool, message: str) -> None:
        record = ResultRecord(plugin=PLUGIN_NAME, version=version, url=f"file://{self.src}",
                              success=success, message=message, sha256=digest)
        try:
            outcome = self.store.record_result(record)
        except Exception as exc:  # noqa: BLE001 - the files are in place whatever the store says
            log.error("cannot record the file_sync result: %s", exc)
            return
        parts = recorded_parts(outcome, self.cfg.storage.type)
        level = logging.INFO if all(parts.values()) else logging.ERROR
        log.log(level, "recorded file_sync version %s (%s): %s", version,
                "succeeded" if success else "failed", outcome)
        self._set(recorded={"version": version, "success": success, "message": message,
                            "parts": parts})

    def _set(self, **values: Any) -> None:
        with self._lock:
            self._state.update(values)
