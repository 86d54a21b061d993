"""The http_probe plugin: probe the game's HTTP endpoints, mirror their state as markers.

Threads (all in this plugin's process):

* one probing thread per endpoint — its own schedule (``startDelaySeconds``,
  then every ``probeIntervalSeconds``, skipping ticks a slow probe overran),
  so one slow or hanging endpoint never delays another's probes;
* one writer thread — woken when an endpoint's marker state changes, it
  resolves every endpoint's claims into one desired set of fields
  (``markers.resolve``), and writes only fields that differ from what was last
  written. Store I/O never runs on a probing thread, and a steady state costs
  zero writes.

A write the store journaled (API unreachable) counts as done for planning:
the store's journal owns delivering it, in order, so the latest state wins
when the API is back, and a probe does not write it again. But the journal's
replay may give up on it later (it moves to ``failed/``, e.g. a 403 for ten
minutes), and nothing tells the plugin: so journaled fields stay
*unconfirmed* and are re-sent (their current desired values) every
``RESEND_SECONDS`` doubling to ``MAX_RESEND_SECONDS`` until a write answers
``written``. The store merges marker writes in its journal, so a re-send while
the API is still down costs no journal growth. A write that raised is retried
with backoff (1 s doubling to 30 s) or as soon as the state changes again,
never once per probe.

Probe failures: ``failureThreshold`` consecutive failures put the endpoint in
state ``Failed``; a policy with ``state: Failed`` then applies like any other.
Without such a policy the markers stay as they are (``status()`` still shows
the failure). ``type: HTTPMetric`` endpoints write nothing: their (numeric)
state is published as a gauge (NaN while ``Failed``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import replace
from typing import Any, ClassVar

from kidecar_supervisor.plugin_api import (
    JOURNALED,
    MarkerUpdate,
    Plugin,
    PluginContext,
    ResultStore,
    StorageConfig,
)
from workers.http_probe.config import EndpointConfig, HttpProbeConfig
from workers.http_probe.markers import (
    FieldKey,
    endpoint_claims,
    plan_writes,
    pointer_writes,
    policy_for,
    resolve,
)
from workers.http_probe.prober import FAILED, HttpProber, ProbeResult, ThresholdTracker

log = logging.getLogger("kidecar.http_probe")

MAX_BACKOFF = 30.0
JOIN_TIMEOUT = 3.0
#: a journaled write is re-sent after this long (doubling) until one is written
RESEND_SECONDS = 15.0
MAX_RESEND_SECONDS = 300.0


class _Endpoint:
    """One endpoint's config, prober, thresholds, store and status counters."""

    def __init__(self, index: int, cfg: EndpointConfig, store: ResultStore | None) -> None:
        self.index = index
        self.cfg = cfg
        self.store = store
        self.prober = HttpProber(cfg)
        self.tracker = ThresholdTracker(
            cfg.success_threshold, cfg.failure_threshold,
            has_failed_policy=policy_for(cfg.storage, FAILED) is not None,
        )
        self.is_metric = cfg.storage.type == "HTTPMetric"
        self.last_state: str | None = None
        self.last_probe_time: float | None = None
        self.last_elapsed = 0.0
        self.last_error = ""
        self.write_error = ""
        self.last_write = ""
        self.probes = 0
        self.failures = 0
        self.writes = 0

    def record(self, result: ProbeResult) -> None:
        self.probes += 1
        self.last_probe_time = time.time()
        self.last_elapsed = result.elapsed
        if result.ok:
            self.last_state = result.state
            self.last_error = ""
        else:
            self.failures += 1
            self.last_error = result.error

    def status(self) -> dict[str, Any]:
        return {
            "url": self.cfg.url,
            "storage": self.cfg.storage.type,
            "lastState": self.last_state,
            "lastProbeTime": self.last_probe_time,
            "lastProbeSeconds": round(self.last_elapsed, 4),
            "consecutiveFailures": self.tracker.consecutive_failures,
            "lastError": self.last_error or self.write_error,
            "appliedState": self.tracker.applied,
            "markerState": self.tracker.marker_state,
            "probes": self.probes,
            "failures": self.failures,
            "writes": self.writes,
            "lastWrite": self.last_write,
        }


class HttpProbePlugin(Plugin):
    """Probes HTTP endpoints; maps their states onto GameServer opsState, labels, annotations."""

    name: ClassVar[str] = "http_probe"
    version: ClassVar[str] = "0.1.0"
    config_type: ClassVar[type] = HttpProbeConfig

    def init(self, ctx: PluginContext) -> None:
        self.ctx = ctx
        self.config: HttpProbeConfig = ctx.config
        self._stop = ctx.stop_requested
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._written: dict[FieldKey, str | None] = {}
        self._pending = False
        #: fields whose last write was only journaled: re-sent until one is written
        self._unconfirmed: set[FieldKey] = set()
        self._resend_after = RESEND_SECONDS
        self._resend_at: float | None = None
        self._warned: set[tuple[int, str]] = set()
        stores: dict[StorageConfig, ResultStore] = {}
        self._stores = stores
        self._endpoints = [
            _Endpoint(i, ep, self._store_for(ep.storage, stores))
            for i, ep in enumerate(self.config.endpoints)
        ]
        for ep in self.config.endpoints:  # jsonPathConfigs' stores, made once like the others
            for policy in ep.storage.marker_policies:
                for pointer, _ in policy.target_values:
                    self._store_for(_pointer_storage(ep.storage, pointer), stores)

    def _store_for(
        self, cfg: StorageConfig, stores: dict[StorageConfig, ResultStore]
    ) -> ResultStore | None:
        if cfg.type == "HTTPMetric":
            return None
        if cfg not in stores:
            stores[cfg] = self.ctx.storage(cfg)
        return stores[cfg]

    # -- lifecycle ---------------------------------------------------------------
    def run(self) -> None:
        threads = [
            threading.Thread(target=self._probe_loop, args=(ep,), daemon=True,
                             name=f"http_probe-{ep.index}")
            for ep in self._endpoints
        ]
        threads.append(threading.Thread(target=self._write_loop, daemon=True,
                                        name="http_probe-writer"))
        for thread in threads:
            thread.start()
        log.info("probing %d endpoint(s) every %gs after %gs", len(self._endpoints),
                 self.config.probe_interval_seconds, self.config.start_delay_seconds)
        self._stop.wait()
        for ep in self._endpoints:
            ep.prober.abort()
        self._dirty.set()
        deadline = time.monotonic() + JOIN_TIMEOUT
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for ep in self._endpoints:
            ep.prober.close()

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, Any]:
        with self._lock:
            endpoints = [ep.status() for ep in self._endpoints]
            pending = self._pending
        return {
            "endpoints": endpoints,
            "writes": sum(ep["writes"] for ep in endpoints),
            "pendingWrite": pending,
        }

    # -- probing -------------------------------------------------------------------
    def _probe_loop(self, ep: _Endpoint) -> None:
        interval = self.config.probe_interval_seconds
        if self._stop.wait(self.config.start_delay_seconds):
            return
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self._probe(ep)
            except Exception:  # a bug must not end this endpoint's probing silently
                log.exception("probe of %s crashed", ep.cfg.url)
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # the probe overran whole ticks: skip them, keep the phase
                next_at += math.ceil((now - next_at) / interval) * interval
            if self._stop.wait(next_at - now):
                return

    def _probe(self, ep: _Endpoint) -> None:
        result = ep.prober.probe()
        with self._lock:
            was_failing = ep.tracker.consecutive_failures > 0
            before = ep.tracker.applied
            ep.record(result)
            markers_changed = ep.tracker.observe(result)
            applied = ep.tracker.applied
        if not result.ok and not was_failing:
            log.warning("probe of %s failed: %s", ep.cfg.url, result.error)
        if applied != before:
            log.info("endpoint %s: state %r -> %r", ep.cfg.url, before, applied)
            if ep.is_metric:
                self._publish_gauge(ep, applied)
        if markers_changed:
            self._dirty.set()

    def _publish_gauge(self, ep: _Endpoint, state: str | None) -> None:
        if state is None:
            return
        value = math.nan if state == FAILED else _as_float(state)
        if value is None:
            self._warn_once(ep, state, f"state {state!r} is not a number; gauge not updated")
            return
        self.ctx.set_gauge(ep.cfg.metric_name, value, {"endpoint": ep.cfg.url})

    def _warn_once(self, ep: _Endpoint, key: str, message: str) -> None:
        with self._lock:
            ep.last_error = message
            if (ep.index, key) in self._warned:
                return
            self._warned.add((ep.index, key))
        log.warning("endpoint %s: %s", ep.cfg.url, message)

    # -- writing ---------------------------------------------------------------------
    def _write_loop(self) -> None:
        backoff = 0.0
        while True:
            self._dirty.wait(timeout=self._wait_timeout(backoff))
            self._dirty.clear()
            stopping = self._stop.is_set()
            self._resend_if_due()
            ok = self._flush()
            if stopping:
                return
            backoff = 0.0 if ok else min(max(1.0, backoff * 2), MAX_BACKOFF)

    def _wait_timeout(self, backoff: float) -> float | None:
        """Sleep until the next retry or the next re-send of journaled fields."""
        with self._lock:
            resend_at = self._resend_at
        waits = [backoff] if backoff else []
        if resend_at is not None:
            waits.append(max(0.0, resend_at - time.monotonic()))
        return min(waits) if waits else None

    def _resend_if_due(self) -> None:
        """Forget that journaled fields were written, so ``_flush`` sends them again."""
        with self._lock:
            if self._resend_at is None or time.monotonic() < self._resend_at:
                return
            for field_key in self._unconfirmed:
                self._written.pop(field_key, None)
            count = len(self._unconfirmed)
            self._resend_at = None
        log.info("re-sending %d journaled marker field(s): the journal may have given up "
                 "on them", count)

    def _note_outcome(self, fields: dict[FieldKey, str | None], result: str) -> None:
        """Track journaled fields (caller holds the lock); a written one is confirmed."""
        if result == JOURNALED:
            self._unconfirmed.update(fields)
            if self._resend_at is None:
                self._resend_at = time.monotonic() + self._resend_after
                self._resend_after = min(self._resend_after * 2, MAX_RESEND_SECONDS)
            return
        self._unconfirmed.difference_update(fields)
        if not self._unconfirmed:
            self._resend_at = None
            self._resend_after = RESEND_SECONDS

    def _flush(self) -> bool:
        """Write every field whose desired value differs from the last written one."""
        with self._lock:
            claims = [
                endpoint_claims(ep.cfg.storage, ep.tracker.marker_state) for ep in self._endpoints
            ]
            desired = resolve(claims)
            plan = plan_writes(desired, self._written)
            pointers = pointer_writes(desired, self._written)
        ok = self._write_pointers(pointers)
        for owner, (update, fields) in sorted(plan.items()):
            ep = self._endpoints[owner]
            assert ep.store is not None  # HTTPMetric endpoints claim nothing
            try:
                result = ep.store.apply_markers(update)
            except Exception as exc:  # the store's own errors: keep them pending, retry later
                ok = False
                with self._lock:
                    ep.write_error = f"writing markers failed: {exc}"
                log.warning("endpoint %s: writing markers failed (will retry): %s",
                            ep.cfg.url, exc)
                continue
            with self._lock:
                self._written.update(fields)
                self._note_outcome(fields, result)
                ep.writes += 1
                ep.last_write = result
                ep.write_error = ""
            log.info("endpoint %s: markers %s (%s)", ep.cfg.url, _describe_update(fields), result)
        with self._lock:
            self._pending = not ok
        return ok


    def _write_pointers(self, writes: dict[tuple[int, str], tuple[str, FieldKey]]) -> bool:
        """The Go kidecar's ``jsonPathConfigs`` values: each written into the endpoint's
        target at its own pointer, through a store for that pointer (the same object)."""
        ok = True
        for (owner, pointer), (value, field_key) in sorted(writes.items()):
            ep = self._endpoints[owner]
            try:
                store = self._store_for(_pointer_storage(ep.cfg.storage, pointer), self._stores)
                assert store is not None
                result = store.apply_markers(MarkerUpdate(target_value=value))
            except Exception as exc:  # the store's own errors: keep them pending, retry later
                ok = False
                log.warning("endpoint %s: writing %s=%r failed (will retry): %s",
                            ep.cfg.url, pointer, value, exc)
                continue
            with self._lock:
                self._written[field_key] = value
                self._note_outcome({field_key: value}, result)
            log.info("endpoint %s: target %s=%r (%s)", ep.cfg.url, pointer, value, result)
        return ok


def _pointer_storage(cfg: StorageConfig, pointer: str) -> StorageConfig:
    """``cfg``'s target with ``pointer`` as its field, and nothing else to write."""
    return replace(cfg, json_path=pointer, marker_policies=(), annotation_key="", label_key="")


def _as_float(state: str) -> float | None:
    try:
        value = float(state)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _describe_update(fields: dict[FieldKey, str | None]) -> str:
    return ", ".join(f"{f.kind} {f.key}={v!r}" for f, v in fields.items())
