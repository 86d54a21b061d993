"""The hot_update plugin: download a file on request, put it in place, reload the game.

``handle("hot_update", {version, url, sha256?})`` runs one update end to end:
validate (400, 403 outside ``allowedUrlPrefixes``) → one at a time (409) →
already applied? (cheap 200) → download to a temp file (502/504/413/422/507) →
keep a copy of the file it replaces in the state dir (kept_versions) → journal
the update (pending) → atomic rename → reload by signal or HTTP (424/502, with
the previous file put back) → with ``confirm``: wait for the game to report
the version (confirm.py); a NACK or the timeout puts the kept copy back,
reloads and confirms the previous version (424 ``rolledBack``; 500 ``failed``
when that fails too: unready, Warning Event) → record the result in the
store, success or failure. ``handle("hot_update_status", {})`` is
``GET /hot-update``; ``handle("hot_update_rollback", {version?})`` goes back
to a kept version the same way (``POST /hot-update/rollback``).

At start an update a killed sidecar left unconfirmed is finished first: the
game reporting its version confirms it, anything else rolls it back.

At start ``run`` re-applies what the store remembers before the plugin says it
is ready: this pod's own latest version, or else the newest version its
workload reached. A restore that keeps failing (e.g. the URL is gone) is
retried ``restoreAttempts`` times, recorded as a failure, shown in
``GET /hot-update`` under ``restore``, and the plugin becomes ready anyway: a
pod stuck unready forever on a dead URL helps nobody, and the game still
serves the file it has.

Rejected requests (400 bad input, 409 already running) are not update
attempts: they are not recorded as results (that would overwrite the pod's
"which version, did it succeed" annotation with noise) but each is emitted as
a warning event, so ``kubectl describe pod`` still shows them.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from kidecar_supervisor.plugin_api import (
    ConfigReader,
    Plugin,
    PluginCallError,
    PluginContext,
    ResultRecord,
    ResultStore,
)
from kidecar_supervisor.plugin_kit.durable_files import fsync_dir, remove_quietly
from kidecar_supervisor.plugin_kit.reload import (
    GameNotRunning,
    ReloadError,
    ReloadOutcome,
    find_processes,
    not_found_message,
    request_reload,
    signal_reload,
)
from workers.hot_update.config import HotUpdateConfig
from workers.hot_update.confirm import (
    ConfirmFailed,
    current_error,
    loaded_version,
    wait_for_version,
)
from workers.hot_update.desired import DesiredFollower
from workers.hot_update.download import (
    TEMP_PREFIX,
    Downloaded,
    DownloadError,
    DownloadLimits,
    download,
)
from workers.hot_update.handover import Handover
from workers.hot_update.in_flight import InFlight
from workers.hot_update.install import DirectoryBusy, FileSlot
from workers.hot_update.kept_versions import KeptVersion, KeptVersions
from workers.hot_update.pending import Pending, PendingJournal
from workers.hot_update.recorder import Recorded, ResultRecorder
from workers.hot_update.stage_metrics import StageMetrics
from workers.hot_update.status import (
    CONFIRMING,
    DOWNLOADING,
    FAILED,
    IDLE,
    INSTALLING,
    RELOADING,
    ROLLED_BACK,
    SUCCEEDED,
    VERIFYING,
    Applied,
    UpdateStatus,
)
from workers.hot_update.update_request import UpdateRequest, parse_update_request
from workers.hot_update.url_redaction import is_redacted, redact
from workers.hot_update.version_marker import (
    MARKER_NAME,
    AppliedFile,
    MarkerUnavailable,
    VersionMarker,
)

log = logging.getLogger("kidecar.hot_update")

PLUGIN_NAME = "hot_update"
HISTORY_NAME = "hot-update-history.json"
STAGE_METRICS_NAME = "hot-update-stage-metrics.json"
#: how often results the store did not take are offered to it again
RETRY_RECORD_SECONDS = 5.0
#: the answer to an update the game did not confirm and kidecar rolled back (README)
ROLLED_BACK_STATUS = 424


class UpdateFailed(Exception):
    """An accepted update failed at ``stage``; carries the caller's status and fields."""

    def __init__(self, stage: str, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.stage = stage
        self.status = status
        self.message = message
        self.fields = fields


class HotUpdatePlugin(Plugin):
    """Hot update of one file in the shared ``fileDir``, reloaded by signal or request."""

    name: ClassVar[str] = PLUGIN_NAME
    version: ClassVar[str] = "0.1.0"
    config_type: ClassVar[type] = HotUpdateConfig
    ready_on_start: ClassVar[bool] = False

    # -- lifecycle ---------------------------------------------------------
    def init(self, ctx: PluginContext) -> None:
        super().init(ctx)
        self.cfg = _as_config(ctx.config)
        self.slot = FileSlot(Path(self.cfg.file_dir))
        try:
            self.slot.prepare()
        except OSError as exc:
            raise RuntimeError(f"hot_update: fileDir {self.cfg.file_dir} is not usable: "
                               f"{exc.strerror or exc}") from exc
        self.store: ResultStore = ctx.storage(self.cfg.storage)
        self.recorder = ResultRecorder(self.store, self.cfg.storage.type,
                                       lambda name, value: ctx.set_gauge(name, value))
        self.updates = UpdateStatus(ctx.state_dir / HISTORY_NAME)
        self.handover = Handover(ctx.state_dir)
        self.kept = KeptVersions(ctx.state_dir, self.cfg.keep_versions)
        self.pending = PendingJournal(ctx.state_dir)
        self.stages = StageMetrics(lambda name, value, labels: ctx.set_gauge(name, value, labels),
                                   ctx.state_dir / STAGE_METRICS_NAME)
        self._stage_started: tuple[str, float] | None = None
        #: the last update ended ``failed``: readiness stays off until one succeeds
        self._unconfirmed = False
        self._no_backup = False
        #: what the game reported wrong before the reload: no NACK of this reload
        self._stale_error = ""
        self.marker = VersionMarker(ctx.state_dir / MARKER_NAME)
        self._prepare_marker()
        self.limits = DownloadLimits(
            max_bytes=self.cfg.max_file_bytes,
            stall_timeout=self.cfg.download_timeout_seconds,
            deadline=self.cfg.download_deadline_seconds,
        )
        #: held by the one update or restore attempt that runs (fileDir has one writer)
        self._busy = threading.Lock()
        #: guards the decision join / unchanged / 409 / run (never held while updating)
        self._admission = threading.Lock()
        self._in_flight: InFlight | None = None
        self._stopping = threading.Event()
        #: the version whose settled update wants a fresh process, and how many
        #: holders (the desired-version follower noting an outcome) delay it
        self._recycle_due: str | None = None
        self._recycle_holds = 0
        self._recycle_lock = threading.Lock()
        self._adopt_in_place()
        self.desired = DesiredFollower(self.store, self.cfg.desired_annotation_key,
                                       ctx.state_dir, self.update, self._stopping,
                                       self._warn_event, self._holding_recycle)

    def run(self) -> None:
        try:
            self._finish_pending()
            carried = self._handed_over()
            if carried is not None:  # a recycle: the previous process settled everything
                self.updates.take_over(carried)
                log.info("took over from the recycled process (stage %s): nothing to restore",
                         carried["stage"])
            if not self._apply_desired_at_start() and carried is None:
                self._restore()
        except Exception as exc:  # never stay unready because of a bug in restore
            log.exception("restoring the recorded hot update failed")
            self.updates.set_restore(state="failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self.ctx.set_ready(not self._unconfirmed)
        self.desired.start()
        next_retry = time.monotonic() + RETRY_RECORD_SECONDS
        while not self._stopping.is_set():
            if self.ctx.stop_requested.wait(0.5):
                break
            if time.monotonic() >= next_retry:
                self.recorder.retry_pending()
                next_retry = time.monotonic() + RETRY_RECORD_SECONDS
        self._stopping.set()

    def stop(self) -> None:
        """Abort a restore in progress; an update a caller waits for is left to finish.

        The plugin runtime lets in-flight calls finish within the stop grace
        (the caller gets its answer); if the grace runs out the process ends
        and the next start removes the temp file it leaves.
        """
        self._stopping.set()

    def status(self) -> dict[str, Any]:
        return self.updates.brief()

    def handle(self, method: str, params: dict[str, Any]) -> Any:
        if method == "hot_update":
            return self.update(params)
        if method == "hot_update_status":
            return self.describe()
        if method == "hot_update_rollback":
            return self.rollback(params)
        return super().handle(method, params)

    # -- calls ---------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """``GET /hot-update``: applied version, state, progress, history, restore outcome."""
        out = self.updates.snapshot()
        out.update(loadPatchType=self.cfg.load_patch_type, fileDir=self.cfg.file_dir,
                   maxFileBytes=self.cfg.max_file_bytes, unrecorded=self.recorder.unrecorded(),
                   kept=[e.public() for e in self.kept.entries()],
                   confirm=redact(self.cfg.confirm.source) if self.cfg.confirm else None)
        return out

    def update(self, params: dict[str, Any]) -> dict[str, Any]:
        """``POST /hot-update``: one update end to end; PluginCallError on any failure.

        Idempotent: the version already applied is a cheap 200, and a retry of the
        update that is running right now joins it (same outcome) instead of a 409.
        """
        try:
            request = parse_update_request(params, self.cfg.allow_file_urls,
                                           self.cfg.allowed_url_prefixes)
        except PluginCallError as err:
            self._rejected(err, params)
            raise
        return self._run(request)

    def rollback(self, params: dict[str, Any]) -> dict[str, Any]:
        """``POST /hot-update/rollback``: back to the previous (or a named) kept version.

        Runs like an update (same 409 rules, confirmed when ``confirm`` is set, the
        same reply), from the byte-exact copy in the state dir: no download.
        """
        entry = self._rollback_target(params)
        request = UpdateRequest(version=entry.version, url=entry.url,
                                file_name=entry.file_name, sha256=entry.sha256)
        applied = self.updates.applied
        note = f"rollback on demand from {applied.version if applied else 'the file in place'}"
        return self._run(request, source=entry, note=note)

    def _rollback_target(self, params: Any) -> KeptVersion:
        """The kept version to go back to; 400/404/409 saying what can be asked for."""
        params = params if isinstance(params, dict) else {}
        unknown = sorted(str(k) for k, v in params.items() if k != "version" and v is not None)
        if unknown:
            raise PluginCallError(400, f"unknown field(s) {', '.join(unknown)}; accepted: "
                                  "version (optional: a kept version)")
        version = params.get("version")
        if version is not None and not isinstance(version, str):
            raise PluginCallError(400, "version must be a string (a kept version), got "
                                  f"{type(version).__name__}", field="version")
        kept = [e for e in self.kept.entries() if e.version]
        names = sorted({e.version for e in kept})
        if version:
            found = next((e for e in kept if e.version == version.strip()), None)
            if found is None:
                raise PluginCallError(404, f"version {version.strip()!r} is not kept; kept: "
                                      f"{', '.join(names) or 'none'}", kept=names)
            return found
        applied = self.updates.applied
        current = applied.version if applied else ""
        older = [e for e in kept if e.version != current]
        if not older:
            raise PluginCallError(409, "nothing to roll back to: no kept version other than "
                                  f"the one running ({current or 'none'})", kept=names)
        return older[0]

    def _run(self, request: UpdateRequest, source: KeptVersion | None = None,
             note: str = "") -> dict[str, Any]:
        """Admission (join / unchanged / 409), then the update, its outcome to joiners."""
        admitted = self._admit(request)
        if isinstance(admitted, InFlight):
            return admitted.join()
        if admitted is not None:
            return admitted
        try:
            result = self._apply_or_raise(request, source, note)
        except PluginCallError as err:
            self._finish(error=err)
            self._recycle_when_free(request.version)
            raise
        except BaseException:
            self._finish(error=PluginCallError(500, "the update ended unexpectedly"))
            raise
        self._finish(result=result)
        self._recycle_when_free(request.version)
        return result

    def _handed_over(self) -> dict[str, Any] | None:
        """The recycled predecessor's status; a crash or an operator's restart restores."""
        if self.ctx.recycled:
            return self.handover.take()
        self.handover.withdraw()
        return None

    @contextmanager
    def _holding_recycle(self) -> Iterator[None]:
        """No recycle while held; one that came due meanwhile is asked for at the end."""
        with self._recycle_lock:
            self._recycle_holds += 1
        try:
            yield
        finally:
            with self._recycle_lock:
                self._recycle_holds -= 1
            self._recycle_when_free(None)

    def _recycle_when_free(self, version: str | None) -> None:
        """Note that ``version``'s update settled; recycle now unless a holder waits."""
        with self._recycle_lock:
            if version is not None:
                self._recycle_due = version
            if self._recycle_holds or self._recycle_due is None:
                return
            version, self._recycle_due = self._recycle_due, None
        self._recycle_if_settled(version)

    def _recycle_if_settled(self, version: str) -> None:
        """Ask for a fresh process once an update has settled (``recycleAfterUpdate``).

        The download, install, reload and record path touches ~4 MiB of pages
        this process shares with the supervisor, and keeps them for its life: a
        fresh fork gives them back (issue 16, docs/footprint.md). Everything an
        update leaves is on disk or in the store, and a new process restores
        it (as after a crash); not while a failure leaves the game unconfirmed
        (readiness off) or a result waits to be recorded.
        """
        if (self.cfg.recycle_after_update and not self._unconfirmed
                and not self.recorder.unrecorded()):
            try:
                self.handover.give(self.updates.carried())
            except OSError as exc:  # the next process restores instead: no recycle
                log.warning("not recycling: cannot hand over the status: %s", exc)
                return
            self.ctx.recycle(f"update to {version} settled: a fresh process gives "
                             "back the memory the update touched")

    def _admit(self, request: UpdateRequest) -> InFlight | dict[str, Any] | None:
        """Decide what a valid request gets, atomically with respect to other requests.

        Returns the InFlight to join (the same update runs), the "unchanged" answer
        (already applied, nothing runs), or None: the caller owns a new update (the
        update lock is held, ``_in_flight`` set). Raises the 409 for anything else.
        """
        with self._admission:
            running = self._in_flight
            if running is not None:
                if running.matches(request):
                    log.info("version %s from %s is being applied already: joining it",
                             request.version, request.shown_url)
                    return running
                conflict = self._conflict(running)
            elif not self._busy.acquire(blocking=False):
                conflict = self._conflict(None)  # a restore between two of its attempts
            else:
                try:
                    if self._already_applied(request):
                        self._busy.release()
                        return self._unchanged(request)
                except BaseException:
                    self._busy.release()
                    raise
                self._in_flight = InFlight(request)
                self.handover.withdraw()  # this process is not settled any more
                return None
        self._rejected(conflict, {"version": request.version, "url": request.shown_url})
        raise conflict

    def _finish(self, result: dict[str, Any] | None = None,
                error: PluginCallError | None = None) -> None:
        """End the owned update: publish the outcome to joiners, free the update lock."""
        with self._admission:
            running, self._in_flight = self._in_flight, None
            self._busy.release()
        if running is not None:
            running.finish(result, error)

    def _conflict(self, running: InFlight | None) -> PluginCallError:
        if running is None:
            return PluginCallError(409, "restoring the recorded version at start; retry when "
                                   "GET /hot-update shows state idle")
        what = "restoring" if running.restoring else "updating to"
        return PluginCallError(
            409, f"an update is already running ({what} {running.request.version}); a "
            "request for another version must wait: retry when GET /hot-update shows state idle",
            running={"version": running.request.version, "url": running.request.shown_url,
                     "restoring": running.restoring},
        )

    def _already_applied(self, request: UpdateRequest) -> bool:
        applied = self.updates.applied
        if applied is None or (applied.version, applied.url) != (request.version, request.shown_url):
            return False
        if request.sha256 and request.sha256 != applied.sha256:
            return False  # a checksum we have not verified: download and verify it
        in_place = self.marker.in_place(self.slot.dir)
        return in_place is not None and (in_place.version, in_place.url) == (
            request.version, request.shown_url)

    def _unchanged(self, request: UpdateRequest) -> dict[str, Any]:
        log.info("version %s from %s is already applied: nothing to do", request.version,
                 request.shown_url)
        return {"status": "unchanged", "version": request.version, "url": request.shown_url,
                "file": request.file_name,
                "message": f"version {request.version} is already applied; nothing downloaded"}

    def _apply_or_raise(self, request: UpdateRequest, source: KeptVersion | None = None,
                        note: str = "") -> dict[str, Any]:
        try:
            return self._apply(request, restoring=False, source=source, note=note)
        except UpdateFailed as failure:
            if failure.stage == "lock":  # a conflict, like any 409: rejected, not recorded
                conflict = PluginCallError(409, failure.message)
                self._rejected(conflict, {"version": request.version, "url": request.shown_url})
                raise conflict from None
            recorded = self._record_failure(request, failure.stage, failure.message)
            raise PluginCallError(
                failure.status, failure.message, stage=failure.stage, version=request.version,
                url=request.shown_url, **recorded.fields(), **failure.fields,
            ) from None

    # -- one update ------------------------------------------------------------
    def _apply(self, request: UpdateRequest, restoring: bool,
               recorded_at: float | None = None,
               source: KeptVersion | None = None, note: str = "") -> dict[str, Any]:
        """Fetch, install, reload, confirm, record success; raise UpdateFailed (nothing recorded).

        ``source``: install this kept copy instead of downloading (a rollback, or a
        restore whose bytes are still kept). ``recorded_at``: a restore re-records the
        version with its original time, so a restarted pod restoring an older version
        never looks newer than its workload.
        """
        cancel = self._stopping if restoring else threading.Event()
        started = time.monotonic()
        # the marker and the result carry the same time: a restart compares the two
        stamp = recorded_at if recorded_at is not None else time.time()
        progress = self.updates.start(request.version, request.shown_url, restoring)
        log.info("%s version %s from %s", "restoring" if restoring else "updating to",
                 request.version, request.shown_url)
        try:
            if not restoring:
                self._preflight()
            # another kidecar (hot upgrade) may share fileDir: a request gets 409 at once,
            # a restore waits for the other's update to finish
            with self.slot.locked(wait=None if restoring else 0.0):
                fetched = self._fetch(request, progress, cancel, source)
                previous = self._keep_previous(request.file_name, fetched)
                self._timed(INSTALLING)
                self._mark(request, fetched, stamp)
                self._journal(request, fetched, stamp, previous)
                outcome = self._install_and_reload(request, fetched, previous, restoring,
                                                   cancel)
                confirmed = self._confirm(request, previous, outcome, restoring, cancel)
                self._keep_new(request, stamp)
        except DirectoryBusy:
            busy = UpdateFailed("lock", 409, "another kidecar instance is updating "
                                f"{self.cfg.file_dir} right now; retry shortly")
            self._failed_status(request, busy)
            raise busy from None
        except UpdateFailed as failure:
            self._failed_status(request, failure)
            self._after_failure(request, failure, time.monotonic() - started)
            raise
        except Exception as exc:  # an unforeseen error must still end the update cleanly
            log.exception("hot update to %s failed unexpectedly", request.version)
            internal = UpdateFailed("internal", 500, f"{type(exc).__name__}: {exc}")
            self._failed_status(request, internal)
            self.stages.loaded("", False)
            raise internal from exc
        return self._succeeded(request, fetched, outcome, confirmed,
                               time.monotonic() - started, stamp, note)

    def _failed_status(self, request: UpdateRequest, failure: UpdateFailed) -> None:
        self.updates.failed(None, {"error": failure.message, "stage": failure.stage,
                                   "status": failure.status, "version": request.version,
                                   "url": request.shown_url, "at": time.time(),
                                   **{k: v for k, v in failure.fields.items()
                                      if k in ("outcome", "runningVersion", "refusedVersion",
                                               "reason")}})
        self.updates.set_outcome(failure.fields.get("outcome", IDLE))

    def _after_failure(self, request: UpdateRequest, failure: UpdateFailed,
                       seconds: float) -> None:
        """Metrics; and for ``failed`` (nothing confirmed runs): unready, Warning Event."""
        outcome = failure.fields.get("outcome", "")
        running = failure.fields.get("runningVersion", "")
        self.stages.loaded(running, False)
        self.ctx.set_gauge("kidecar_hot_update_last_duration_seconds", round(seconds, 6))
        if outcome != FAILED:
            return
        self._unconfirmed = True
        self.ctx.set_ready(False)
        try:
            self.store.emit_event("HotUpdateFailed", f"hot update to {request.version} failed "
                                  f"and the previous version could not be restored and "
                                  f"confirmed either: {failure.message}", warning=True)
        except Exception as exc:
            log.error("cannot emit the HotUpdateFailed event: %s", exc)

    def _timed(self, stage: str, **running: Any) -> None:
        """Enter ``stage``; the stage before it gets its duration observed."""
        now = time.monotonic()
        if self._stage_started is not None:
            previous, since = self._stage_started
            self.stages.observe(previous, now - since)
        self._stage_started = (stage, now) if stage else None
        if stage:
            self.updates.set_stage(stage, **running)

    def _preflight(self) -> None:
        """Refuse before downloading what cannot end well: no marker, no game to reload."""
        if not self.marker.available:
            try:
                self.marker.ensure()
            except MarkerUnavailable as exc:
                raise UpdateFailed("state", 507, _no_marker_message(exc)) from None
        signal_cfg = self.cfg.signal
        if self.cfg.load_patch_type == "signal" and signal_cfg is not None:
            if not find_processes(signal_cfg.process_name):
                raise UpdateFailed("reload", 424, not_found_message(signal_cfg))

    def _fetch(self, request: UpdateRequest, progress: Any, cancel: threading.Event,
               source: KeptVersion | None) -> Downloaded:
        """The new file as a temp file in fileDir: downloaded, or copied from a kept version."""
        self._stage_started = (DOWNLOADING, time.monotonic())
        if source is not None:
            return self._from_kept(source)
        if is_redacted(request.url):
            # never guess: the same path without its query may be another file entirely
            self._timed("")
            raise UpdateFailed(
                "download", 422, f"the recorded URL {request.url} was stored without its "
                "credentials (they never leave the request) and no copy of "
                f"{request.version} is kept in the state dir: post the update again")
        try:
            fetched = download(request.url, self.slot.dir, self.limits, request.sha256,
                               progress=progress, cancel=cancel)
        except DownloadError as err:
            self._timed("")
            raise UpdateFailed("download", err.status, err.message, **err.fields) from None
        self._timed(VERIFYING)
        return fetched

    def _from_kept(self, entry: KeptVersion) -> Downloaded:
        """Copy a kept version's bytes (and mtime) next to its target, ready for the rename."""
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.slot.dir)
        os.close(fd)
        temp = Path(name)
        try:
            self.kept.copy_out(entry, temp)
            os.chmod(temp, 0o644)
        except OSError as exc:
            remove_quietly(temp)
            raise UpdateFailed("install", 500, f"cannot copy the kept version {entry.version}: "
                               f"{exc.strerror or exc}") from None
        return Downloaded(temp_path=temp, size=entry.size, sha256=entry.sha256,
                          final_url=entry.url)

    def _keep_previous(self, file_name: str, fetched: Downloaded) -> KeptVersion | None:
        """Copy the file about to be replaced into the state dir: what a rollback puts back.

        Its version is what the marker says, else what the game reports loaded. Without
        ``confirm`` a state dir with no room only costs the backup (the seed never had
        one): the update goes on. With ``confirm`` a rollback must be possible: 507.
        """
        target = self.slot.target(file_name)
        self._no_backup = False
        if not target.exists():
            return None
        in_place = self.marker.in_place(self.slot.dir)
        if in_place is not None and in_place.file_name == file_name:
            version, url, at = in_place.version, in_place.url, in_place.at
        else:
            reported = loaded_version(self.cfg.confirm) if self.cfg.confirm else None
            version, url, at = reported or "", "", target.stat().st_mtime
        try:
            return self.kept.keep_file(target, version, url, at)
        except OSError as exc:
            if self.cfg.confirm is None:
                self._no_backup = True
                log.warning("cannot keep a copy of the previous %s in the state dir (%s): "
                            "a failed reload cannot put it back", file_name,
                            exc.strerror or exc)
                return None
            remove_quietly(fetched.temp_path)
            raise UpdateFailed("state", 507, "cannot keep a copy of the previous "
                               f"{file_name} in the state dir ({exc.strerror or exc}); "
                               "without it a rollback is impossible: nothing was changed. "
                               "Free space in the state dir") from None

    def _mark(self, request: UpdateRequest, fetched: Downloaded, stamp: float) -> None:
        """Write the version marker *before* the file goes into place (see version_marker).

        The rename keeps size and mtime, so the marker can describe the temp file.
        If the marker cannot be written the game's file is not touched: a file the
        marker does not know about is what a restart would roll back.
        """
        try:
            self.marker.ensure()
            info = fetched.temp_path.stat()
            self.marker.write(AppliedFile(
                version=request.version, url=request.shown_url, file_name=request.file_name,
                size=info.st_size, mtime_ns=info.st_mtime_ns,
                sha256=fetched.sha256 or request.sha256, at=stamp))
        except (OSError, ValueError) as exc:
            remove_quietly(fetched.temp_path)
            raise UpdateFailed("state", 507, _no_marker_message(exc)) from None

    def _journal(self, request: UpdateRequest, fetched: Downloaded, stamp: float,
                 previous: KeptVersion | None, rollback: bool = False) -> None:
        """Say what is about to change, so a restart can finish it (pending.py)."""
        try:
            self.pending.write(Pending(
                version=request.version, url=request.shown_url, file_name=request.file_name,
                sha256=fetched.sha256 or request.sha256, at=stamp,
                previous_key=previous.key if previous else "",
                previous_version=previous.version if previous else "", rollback=rollback))
        except OSError as exc:
            if self.cfg.confirm is not None:
                remove_quietly(fetched.temp_path)
                raise UpdateFailed("state", 507, "cannot journal the update in the state dir "
                                   f"({exc.strerror or exc}); nothing was changed") from None
            log.warning("cannot journal the update in the state dir: %s", exc.strerror or exc)

    def _install_and_reload(self, request: UpdateRequest, fetched: Downloaded,
                            previous: KeptVersion | None, restoring: bool,
                            cancel: threading.Event) -> ReloadOutcome:
        try:
            self.slot.install(fetched.temp_path, request.file_name)
        except OSError as exc:
            remove_quietly(fetched.temp_path)  # never leave the download behind
            self.pending.clear()
            raise UpdateFailed("install", 500, f"cannot put {request.file_name} into place: "
                               f"{exc.strerror or exc}") from None
        self._timed(RELOADING)
        self._stale_error = current_error(self.cfg.confirm)
        try:
            return self._reload(restoring, cancel)
        except ReloadError as err:
            # the game did not reload: it still runs the previous file, put it back as it was
            put_back = self._put_back(previous, request.file_name)
            self.pending.clear()
            self._timed("")
            raise UpdateFailed("reload", err.status, f"{err.message}; {put_back}",
                               **err.fields) from None

    def _put_back(self, previous: KeptVersion | None, file_name: str) -> str:
        """Restore the previous bytes (or remove the new file if there was none); say what."""
        target = self.slot.target(file_name)
        if previous is None:
            if self._no_backup:
                return "the previous file could not be kept (state dir full): the new one stays"
            remove_quietly(target)
            fsync_dir(self.slot.dir)
            return "there was no previous file: the new one was removed"
        fetched = self._from_kept(previous)
        if previous.version:  # a file of unknown version gets no marker: nothing to restore
            self.marker.write(AppliedFile(
                version=previous.version, url=previous.url, file_name=previous.file_name,
                size=previous.size, mtime_ns=previous.mtime_ns, sha256=previous.sha256,
                at=previous.at))
        self.slot.install(fetched.temp_path, previous.file_name)
        return "the previous file was put back"

    def _reload(self, restoring: bool, cancel: threading.Event) -> ReloadOutcome:
        try:
            if self.cfg.load_patch_type == "request" and self.cfg.request is not None:
                return request_reload(self.cfg.request, cancel)
            assert self.cfg.signal is not None
            return signal_reload(self.cfg.signal)
        except GameNotRunning as err:
            if not restoring:
                raise
            # the game has not started yet (sidecar starts first): it reads the file at start
            return ReloadOutcome(f"file in place; the game is not running yet ({err.message})")

    def _confirm(self, request: UpdateRequest, previous: KeptVersion | None,
                 outcome: ReloadOutcome, restoring: bool,
                 cancel: threading.Event) -> str:
        """Wait for the game's ACK of ``request.version``; roll back on a NACK or timeout.

        Returns what the reply says about confirmation ("" without ``confirm``).
        """
        cfg = self.cfg.confirm
        pids = list(outcome.details.get("pids", []))
        if cfg is None:
            self.pending.clear()
            self._timed("")
            return ""
        if restoring and not outcome.details and "not running yet" in outcome.message:
            self.pending.clear()
            self._timed("")
            return "not confirmed: the game was not running yet (it reads the file at start)"
        self._timed(CONFIRMING)
        try:
            reported = wait_for_version(cfg, request.version, pids, cancel,
                                        stale_error=self._stale_error)
        except ConfirmFailed as failed:
            self._timed("")
            self._roll_back(request, previous, failed.reason, cancel)
            raise AssertionError("unreachable: _roll_back always raises") from None
        self.pending.clear()
        self._timed("")
        return f"the game reports {reported} at {cfg.source}"

    def _roll_back(self, request: UpdateRequest, previous: KeptVersion | None, reason: str,
                   cancel: threading.Event) -> None:
        """The game did not confirm: put the previous files back, reload, confirm; raise.

        UpdateFailed with ``outcome`` rolledBack (424) when the game confirms the previous
        version, or failed (500) when it cannot be restored and confirmed either.
        """
        cfg = self.cfg.confirm
        refused = request.version
        if cfg is not None and not self.cfg.rollback_on_failure:
            self.pending.clear()
            raise UpdateFailed("confirming", 500, f"version {refused} was not confirmed: "
                               f"{reason}; rollback.onFailure is false, so it stays in place "
                               "unconfirmed", outcome=FAILED, refusedVersion=refused,
                               reason=reason, runningVersion="")
        log.warning("version %s was not confirmed (%s): rolling back to %s", refused, reason,
                    previous.version if previous else "(no previous file)")
        self._timed(INSTALLING, rollingBack=True)
        back = previous.version if previous else ""
        try:
            put_back = self._put_back(previous, request.file_name)
            self._timed(RELOADING, rollingBack=True)
            stale = current_error(cfg)
            self._reload(True, cancel)
            reported = back or "the previous file"
            if cfg is not None:
                self._timed(CONFIRMING, rollingBack=True)
                # no NACK on a death here: a game restarted by its kubelet (crash-looping
                # on the refused file until now) reads the restored file at its start
                reported = wait_for_version(cfg, back or None, [], cancel, refused=refused,
                                            stale_error=stale)
        except (ConfirmFailed, ReloadError, OSError, UpdateFailed) as exc:
            self._timed("")
            self.pending.clear()
            why = getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc)
            raise UpdateFailed(
                "rollback", 500, f"version {refused} was not confirmed ({reason}) and the "
                f"rollback to {back or 'the previous file'} failed too: {why}",
                outcome=FAILED, refusedVersion=refused, reason=reason, runningVersion="",
            ) from None
        self._timed("")
        self.pending.clear()
        if previous is not None:
            self.updates.set_applied(Applied(previous.version, previous.url,
                                             previous.file_name, previous.sha256, time.time()))
        if self._unconfirmed:
            self._unconfirmed = False
            self.ctx.set_ready(True)
        raise UpdateFailed(
            "confirming", ROLLED_BACK_STATUS, f"version {refused} was not confirmed: {reason}; "
            f"rolled back: {put_back}, and the game reports {reported} again",
            outcome=ROLLED_BACK, refusedVersion=refused, reason=reason, runningVersion=reported,
        )

    def _keep_new(self, request: UpdateRequest, stamp: float) -> None:
        """Keep the confirmed file too (a later rollback, a restore with no URL), then prune."""
        try:
            self.kept.keep_file(self.slot.target(request.file_name), request.version,
                                request.shown_url, stamp)
            self.kept.prune()
        except OSError as exc:
            log.warning("cannot keep a copy of %s in the state dir: %s", request.version,
                        exc.strerror or exc)

    def _succeeded(self, request: UpdateRequest, fetched: Downloaded, outcome: ReloadOutcome,
                   confirmed: str, seconds: float, stamp: float,
                   note: str = "") -> dict[str, Any]:
        sha256 = fetched.sha256 or request.sha256
        message = f"applied {request.file_name} ({fetched.size} bytes); {outcome.message}"
        if note:
            message = f"{note}: {message}"
        if confirmed:
            message += f"; confirmed: {confirmed}"
        record = ResultRecord(plugin=PLUGIN_NAME, version=request.version,
                              url=request.shown_url, success=True, message=message,
                              sha256=sha256, timestamp=stamp)
        recorded = self.recorder.record(record)
        self.updates.succeeded(
            Applied(request.version, request.shown_url, request.file_name, sha256, time.time()),
            record,
        )
        self.stages.loaded(request.version, True)
        self.ctx.set_gauge("kidecar_hot_update_last_duration_seconds", round(seconds, 6))
        if self._unconfirmed:
            self._unconfirmed = False
            self.ctx.set_ready(True)
        log.info("hot update to %s done in %.3fs: %s", request.version, seconds, message)
        out = {"status": "updated", "outcome": SUCCEEDED, "version": request.version,
               "url": request.shown_url, "file": request.file_name, "bytes": fetched.size,
               "sha256": sha256, "reload": outcome.message, "reloadDetails": outcome.details,
               "durationMs": round(seconds * 1000, 1), **recorded.fields()}
        if confirmed:
            out["confirmed"] = confirmed
        return out

    # -- recording ---------------------------------------------------------------
    def _record_failure(self, request: UpdateRequest, stage: str, message: str) -> Recorded:
        record = ResultRecord(plugin=PLUGIN_NAME, version=request.version, url=request.shown_url,
                              success=False, message=f"{stage} failed: {message}",
                              sha256=request.sha256)
        log.warning("hot update to %s failed (%s): %s", request.version, stage, message)
        recorded = self.recorder.record(record)
        self.updates.failed(record, {**(self.updates.snapshot()["lastError"] or {}),
                                     **recorded.fields()})
        return recorded

    def _rejected(self, err: PluginCallError, params: Any) -> None:
        version = params.get("version") if isinstance(params, dict) else None
        log.warning("hot update request rejected (%s): %s", err.status, err.message)
        try:
            self.store.emit_event("HotUpdateRejected",
                                  f"hot update request (version {version!r}) rejected with "
                                  f"{err.status}: {err.message}", warning=True)
        except Exception as exc:
            log.error("cannot emit the rejection event: %s", exc)

    # -- restore at start -------------------------------------------------------------
    def _apply_desired_at_start(self) -> bool:
        """DESIGN §10: at start the pod's desired version wins over the recorded one."""
        answer = self.desired.apply_at_start()
        if answer is None:
            return False
        self.updates.set_restore(state="desired", version=answer.get("version"),
                                 outcome=answer.get("status"))
        return True

    def _warn_event(self, reason: str, message: str) -> None:
        log.warning("%s", message)
        try:
            self.store.emit_event(reason, message, warning=True)
        except Exception as exc:  # noqa: BLE001 - an Event is best effort
            log.error("cannot emit the %s event: %s", reason, exc)

    def _prepare_marker(self) -> None:
        """Create the version marker while there is room; take over a legacy manifest.

        kidecar up to 0.1 kept its manifest in fileDir, the game's directory (DESIGN §5
        says never): its content moves into the marker and the file goes away.
        """
        try:
            self.marker.ensure()
        except MarkerUnavailable as exc:
            log.error("%s", _no_marker_message(exc))
            return
        legacy = self.slot.take_legacy_manifest()
        if legacy is not None and self.marker.newest() is None:
            self.marker.write(AppliedFile(**legacy, at=legacy["mtime_ns"] / 1e9))
            log.info("moved the version manifest of %s out of fileDir into %s",
                     legacy["version"], self.marker.path)

    def _adopt_in_place(self) -> None:
        """What is on disk now: the file a previous run of this sidecar put in place."""
        applied = self.marker.in_place(self.slot.dir)
        if applied is not None:
            self.updates.set_applied(Applied(applied.version, applied.url, applied.file_name,
                                             applied.sha256, applied.at))

    def _finish_pending(self) -> None:
        """An update a previous run did not finish (killed while confirming): finish it.

        With ``confirm``: the game reporting the new version confirms it now; anything
        else rolls back to the kept previous file (confirmed). Without ``confirm``: the
        previous file goes back, as the seed did with a reload that never finished.
        """
        if self.pending.read() is None:
            return
        # read again under fileDir's lock: during a hot upgrade the other instance may be
        # in the middle of the update this journal describes, and finish it meanwhile
        with self._busy, self.slot.locked():
            pending = self.pending.read()
            if pending is None:
                return
            request = UpdateRequest(version=pending.version, url=pending.url,
                                    file_name=pending.file_name, sha256=pending.sha256)
            previous = self.kept.by_key(pending.previous_key) if pending.previous_key else None
            in_place = self.marker.in_place(self.slot.dir)
            placed = in_place is not None and (in_place.version, in_place.file_name) == (
                pending.version, pending.file_name)
            if not placed and (previous is None or in_place is None
                               or in_place.version == previous.version):
                log.info("the unfinished update to %s never reached fileDir: nothing to undo",
                         pending.version)
                self.pending.clear()
                return
            log.warning("the previous run stopped before version %s was confirmed: "
                        "finishing it now", pending.version)
            self.updates.start(pending.version, pending.url, restoring=True)
            try:
                self._settle(request, pending, previous, placed)
            except UpdateFailed as failure:
                self._failed_status(request, failure)
                self._after_failure(request, failure, 0.0)
                self._record_failure(request, failure.stage, f"at start: {failure.message}")

    def _settle(self, request: UpdateRequest, pending: Pending, previous: KeptVersion | None,
                placed: bool) -> None:
        """Confirm the pending version, or roll back (which raises UpdateFailed)."""
        reason = "the sidecar stopped before the update was confirmed"
        cfg = self.cfg.confirm
        if cfg is not None and placed and not pending.rollback:
            self._timed(CONFIRMING)
            try:
                reported = wait_for_version(cfg, pending.version, [], self._stopping)
            except ConfirmFailed as failed:
                reason = f"{reason}, and then {failed.reason}"
            else:
                self._timed("")
                self.pending.clear()
                self._keep_new(request, pending.at)
                record = ResultRecord(
                    plugin=PLUGIN_NAME, version=pending.version, url=pending.url, success=True,
                    message=f"confirmed at start after a restart: the game reports {reported}",
                    sha256=pending.sha256, timestamp=pending.at)
                self.recorder.record(record)
                self.updates.succeeded(Applied(pending.version, pending.url, pending.file_name,
                                               pending.sha256, time.time()), record)
                self.stages.loaded(pending.version, True)
                return
        self._timed("")
        self._roll_back(request, previous, reason, self._stopping)

    def _restore(self) -> None:
        """Re-apply the recorded version before becoming ready (see the module docstring)."""
        error = ""
        for attempt in range(1, self.cfg.restore_attempts + 1):
            if self._stopping.is_set() or self.ctx.stop_requested.is_set():
                return
            done, error = self._restore_once(attempt)
            if done:
                return
            delay = min(10.0, 2.0 ** (attempt - 1))
            if attempt < self.cfg.restore_attempts and self.ctx.stop_requested.wait(delay):
                return
        log.error("giving up restoring the recorded hot update after %d attempt(s): %s; "
                  "becoming ready with the file that is in place", self.cfg.restore_attempts,
                  error)
        self.updates.set_restore(state="failed", error=error,
                                 attempts=self.cfg.restore_attempts)

    def _restore_once(self, attempt: int) -> tuple[bool, str]:
        """One restore attempt: (finished, error).

        The whole attempt holds the update lock: a POST arriving meanwhile gets 409
        instead of being overwritten by the older recorded version afterwards.
        """
        with self._busy:
            return self._restore_once_locked(attempt)

    def _restore_once_locked(self, attempt: int) -> tuple[bool, str]:
        try:
            record, scope = self._recorded_target()
        except Exception as exc:
            log.warning("restore attempt %d: cannot read the result store: %s", attempt, exc)
            return False, f"cannot read the result store: {exc}"
        in_place = self.marker.in_place(self.slot.dir)
        if in_place is not None and (record is None or in_place.at > record.timestamp or (
                in_place.version, in_place.url) == (record.version, redact(record.url))):
            self._keep_in_place(in_place, record, scope)
            return True, ""
        if record is None:
            self.updates.set_restore(state="nothing-recorded")
            return True, ""
        if scope == "pod":
            self.updates.seed_history([record])  # the store may keep no history of its own
        # the bytes may still be kept (a container restart keeps the state dir): no download,
        # and no need for a URL whose secret was redacted before it was stored
        kept = self.kept.find(record.version, record.sha256)
        try:
            request = parse_update_request(
                {"version": record.version, "url": record.url, "sha256": record.sha256 or None},
                self.cfg.allow_file_urls,
            )
        except PluginCallError as err:
            self._restore_gave_up(record, f"the recorded update is not valid here: {err.message}")
            return True, err.message
        running = InFlight(request, restoring=True)
        with self._admission:  # a POST of this very version joins the restore
            self._in_flight = running
        try:
            result = self._apply(request, restoring=True, recorded_at=record.timestamp,
                                 source=kept)
        except UpdateFailed as failure:
            log.warning("restore attempt %d of %s failed (%s): %s", attempt,
                        request.version, failure.stage, failure.message)
            if attempt >= self.cfg.restore_attempts:
                self._record_failure(request, failure.stage,
                                     f"restore after {attempt} attempt(s): {failure.message}")
            self._end_restore(running, error=PluginCallError(
                failure.status, f"restoring the recorded version failed: {failure.message}",
                stage=failure.stage, version=request.version, **failure.fields))
            return False, failure.message
        except BaseException:
            self._end_restore(running, error=PluginCallError(500, "the restore ended unexpectedly"))
            raise
        self._end_restore(running, result=result)
        self.updates.set_restore(state="applied", version=request.version, scope=scope,
                                 attempts=attempt, reload=result["reload"])
        return True, ""

    def _keep_in_place(self, in_place: AppliedFile, record: ResultRecord | None,
                       scope: str) -> None:
        """The file in place is the recorded version, or newer than any record: keep it.

        Newer happens when its result could not be stored (a full state dir, a
        replaced database): putting the recorded version back would roll the game
        back. It is recorded now, with the time it was applied, so the store catches up.
        """
        self.updates.set_applied(Applied(in_place.version, in_place.url, in_place.file_name,
                                         in_place.sha256, in_place.at))
        if record is not None and (record.version, redact(record.url)) == (in_place.version,
                                                                            in_place.url):
            self.updates.set_restore(state="in-place", version=in_place.version, scope=scope)
            log.info("recorded version %s (%s) is already in place", in_place.version, scope)
            return
        known = f"the store's latest is {record.version}" if record else "the store has none"
        log.warning("version %s in fileDir is newer than what the result store knows (%s): "
                    "keeping it and recording it now", in_place.version, known)
        recorded = self.recorder.record(ResultRecord(
            plugin=PLUGIN_NAME, version=in_place.version, url=in_place.url, success=True,
            message=f"kept in place at start: newer than the recorded result ({known})",
            sha256=in_place.sha256, timestamp=in_place.at))
        self.updates.set_restore(state="kept-newer", version=in_place.version,
                                 recordedVersion=record.version if record else None,
                                 scope=scope, **recorded.fields())

    def _end_restore(self, running: InFlight, result: dict[str, Any] | None = None,
                     error: PluginCallError | None = None) -> None:
        """The restore attempt is over: joiners get its outcome (the update lock stays held)."""
        with self._admission:
            if self._in_flight is running:
                self._in_flight = None
        running.finish(result, error)

    def _restore_gave_up(self, record: ResultRecord, error: str) -> None:
        log.error("cannot restore version %s: %s", record.version, error)
        self.updates.set_restore(state="failed", version=record.version, error=error)

    def _recorded_target(self) -> tuple[ResultRecord | None, str]:
        """This pod's own latest version, else the newest of its workload."""
        own = self.store.latest_for_pod(PLUGIN_NAME)
        if own is not None:
            return own, "pod"
        return self.store.latest_for_workload(PLUGIN_NAME), "workload"


def _no_marker_message(exc: BaseException) -> str:
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return (f"the state dir has no room for the version marker ({reason}); the update is "
            "refused before touching fileDir, since a restart could otherwise put an older "
            "version back over it. Free space in the state dir")


def _as_config(config: Any) -> HotUpdateConfig:
    if isinstance(config, HotUpdateConfig):
        return config
    return HotUpdateConfig.parse(ConfigReader(config, "config"))
