"""The rollout loop: one pass reads the record and the pods, decides, writes, sleeps.

Every decision is written to the record *before* it is acted on (the desired
version is written to a batch's pods only after the record says they are
UPDATING), so a driver killed at any moment and started again finds the batch
in flight, writes the same desired value again where it is missing (an
unchanged annotation is no new update for the sidecar) and never touches a pod
that is DONE.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from kidecar_supervisor.rollout import plan
from kidecar_supervisor.rollout.fleet import Fleet, desired_text
from kidecar_supervisor.rollout.plan import Observed
from kidecar_supervisor.rollout.record import (
    ABORTED,
    ABORTING,
    COMPLETED_WITH_FAILURES,
    COMPLETED_WITH_SKIPS,
    PAUSED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    RecordStore,
    RolloutRecord,
)
from kidecar_supervisor.rollout.spec import RolloutSpec
from kidecar_supervisor.storage.kube_api import KubeUnavailable

EXIT_SUCCEEDED = 0
EXIT_ABORTED = 1
EXIT_SKIPPED = 2


@dataclass
class Outcome:
    phase: str
    exit_code: int
    record: RolloutRecord


class Driver:
    """Drives one rollout; ``say`` gets one line per event, ``progress`` the record."""

    def __init__(self, records: RecordStore, fleet: Fleet, spec: RolloutSpec,
                 say: Callable[[str], None] = print,
                 progress: Callable[[RolloutRecord], None] | None = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.records = records
        self.fleet = fleet
        self.spec = spec
        self.say = say
        self.progress = progress or (lambda record: None)
        self.clock = clock
        self.sleep = sleep
        self.writes = 0

    # -- entry points --------------------------------------------------------------
    def run(self, wait: bool = True) -> Outcome:
        """Create or continue the rollout; with ``wait`` drive it to its end, else one
        pass (the next batch written) and return."""
        record, created = self.records.create_or_continue(self.spec)
        self.say(f"rollout {self.spec.name}: {'started' if created else 'continuing'} "
                 f"({record.phase}, batch {record.batch})")
        self._rewrite_in_flight(record)
        outage = 0
        while True:
            try:
                if outage:  # the record may have moved on meanwhile
                    record = self._fresh()
                record = self._pass(record)
            except KubeUnavailable as exc:
                if not wait:
                    raise
                outage += 1  # an API server restart must not end a Job's rollout
                delay = min(30.0, self.spec.poll_seconds * 2 ** min(outage, 5))
                self.say(f"Kubernetes API unavailable ({exc}); retrying in {delay:.0f}s")
                self.sleep(delay)
                continue
            outage = 0
            self.progress(record)
            if record.phase in TERMINAL:
                if record.phase == ABORTED and wait:
                    self._await_reverts(record)
                return Outcome(record.phase, _exit_code(record.phase), record)
            if not wait:
                return Outcome(record.phase, EXIT_SUCCEEDED, record)
            self.sleep(self.spec.poll_seconds)
            try:
                record = self._fresh()
            except KubeUnavailable:
                outage = 1

    def _fresh(self) -> RolloutRecord:
        fresh = self.records.get(self.spec.name)
        if fresh is None:
            raise RuntimeError(f"rollout {self.spec.name!r} was deleted")
        fresh.spec = self.spec
        return fresh

    # -- one pass ------------------------------------------------------------------
    def _pass(self, record: RolloutRecord) -> RolloutRecord:
        now = self.clock()
        if record.phase in TERMINAL:  # e.g. `kidecar rollout abort` did the abort itself
            return record
        if record.control == "abort":
            record.phase, record.message = ABORTING, record.message or "aborted on request"
        if record.phase == ABORTING:
            self._abort(record)
            return record
        if record.control == "pause" and record.phase == RUNNING:
            self._set_phase(record, PAUSED, "paused on request")
            return record
        if record.phase == PAUSED:
            if record.control != "resume":
                return record
            record.phase, record.message = RUNNING, "resumed"
            self.say(f"rollout {self.spec.name}: resumed")
        pods = self.fleet.pods(self.spec)
        by_name = {p.name: p for p in pods}
        events = plan.forget_gone(record.entries, by_name)
        events += plan.adopt(record.entries, pods, self.spec, now)
        events += plan.settle(record.entries, by_name, self.spec, now)
        batch_open = bool(plan.in_flight(record.entries))
        if not batch_open and record.batch and record.batch_ended < record.batch_started:
            record.batch_ended = now
            events.append(f"batch {record.batch} done: {_summary(record)}")
        failed = plan.failures(record.entries)
        if failed > self.spec.max_failures:
            record.phase = ABORTING
            record.message = (f"{failed} failure(s), more than --max-failures "
                              f"{self.spec.max_failures}")
            events.append(f"aborting: {record.message}")
            self._tell(events)
            self.records.save(record)
            self._abort(record)
            return record
        if not batch_open:
            self._next_batch(record, by_name, now, events)
        else:
            self._tell(events)
            self.records.save(record)
        return record

    def _next_batch(self, record: RolloutRecord, pods: dict[str, Observed], now: float,
                    events: list[str]) -> None:
        if plan.remaining(record.entries) == 0:
            counts = plan.counts(record.entries)
            record.phase = (COMPLETED_WITH_FAILURES if counts.get(plan.FAILED)
                            else COMPLETED_WITH_SKIPS if counts.get(plan.SKIPPED)
                            else SUCCEEDED)
            record.finished = now
            record.message = _summary(record)
            events.append(f"rollout {self.spec.name}: {record.phase} ({record.message})")
            self._tell(events)
            self.records.save(record)
            return
        if record.batch and now < record.batch_ended + self.spec.pause_seconds:
            self._tell(events)
            self.records.save(record)
            return
        step = plan.next_batch(record.entries, pods, self.spec, record.batch + 1, now)
        events += step.events
        if step.write:
            record.batch += 1
            record.batch_started = now
            events.append(f"batch {record.batch}: {len(step.write)} pod(s): "
                          f"{', '.join(step.write)}")
        self._tell(events)
        self.records.save(record)  # first the record, then the pods (see the docstring)
        for name in step.write:
            self._write(name, self.spec.desired_value())

    # -- abort ---------------------------------------------------------------------
    def _abort(self, record: RolloutRecord) -> None:
        """Every pod the rollout wrote to gets its previous version back as desired."""
        for name in plan.to_revert(record.entries):
            entry = record.entries[name]
            previous = entry.previous
            if previous is None:
                self._write(name, None)
                entry.reason = (entry.reason + "; " if entry.reason else "") + \
                    "no previous version known: desired version removed"
            else:
                value = {k: v for k, v in previous.items() if v}
                value["rollout"] = f"{self.spec.name}-abort"
                self._write(name, value)
            if entry.state in (plan.UPDATING, plan.PENDING, plan.DEFERRED):
                entry.reason = entry.reason or "aborted before it answered"
            entry.state = plan.REVERTED if entry.state != plan.FAILED else plan.FAILED
            entry.written = False
        for entry in record.entries.values():
            if entry.state in (plan.PENDING, plan.DEFERRED, plan.UPDATING):
                entry.state = plan.SKIPPED
                entry.reason = entry.reason or "not updated: the rollout aborted"
        record.phase = ABORTED
        record.finished = self.clock()
        self.records.save(record)
        self.say(f"rollout {self.spec.name}: Aborted ({record.message})")

    def _await_reverts(self, record: RolloutRecord) -> None:
        """Follow the reverted pods until each runs its previous version (or time out)."""
        deadline = self.clock() + self.spec.batch_timeout_seconds
        want = {n: e.previous["version"] for n, e in record.entries.items()
                if e.previous and e.batch}
        while want and self.clock() < deadline:
            pods = {p.name: p for p in self.fleet.pods(self.spec)}
            for name in list(want):
                running = plan.running_version(pods[name].result) if name in pods else None
                if name not in pods or (running and running["version"] == want[name]):
                    want.pop(name)
            if want:
                self.sleep(self.spec.poll_seconds)
        if want:
            self.say(f"not yet back on their previous version: {', '.join(sorted(want))}")

    # -- helpers -------------------------------------------------------------------
    def _rewrite_in_flight(self, record: RolloutRecord) -> None:
        """After a restart: pods the record says are UPDATING get the desired value if
        the previous driver died between saving the record and writing the pod."""
        names = plan.in_flight(record.entries)
        if not names or record.phase not in (RUNNING, PAUSED):
            return
        wanted = desired_text(self.spec.desired_value())
        pods = {p.name: p for p in self.fleet.pods(self.spec)}
        for name in names:
            pod = pods.get(name)
            if pod is not None and pod.desired != wanted:
                self._write(name, self.spec.desired_value())

    def _write(self, pod: str, value: dict[str, str] | None) -> None:
        self.writes += 1
        self.fleet.write_desired(pod, self.spec, value)

    def _set_phase(self, record: RolloutRecord, phase: str, message: str) -> None:
        record.phase, record.message = phase, message
        self.records.save(record)
        self.say(f"rollout {self.spec.name}: {phase} ({message})")

    def _tell(self, events: list[str]) -> None:
        for line in events:
            self.say(line)


def _summary(record: RolloutRecord) -> str:
    counts = plan.counts(record.entries)
    return ", ".join(f"{counts[k]} {k}" for k in sorted(counts))


def _exit_code(phase: str) -> int:
    return {SUCCEEDED: EXIT_SUCCEEDED, ABORTED: EXIT_ABORTED}.get(phase, EXIT_SKIPPED)


def failed_pods(record: RolloutRecord) -> list[tuple[str, str]]:
    """(pod, why) of every pod that failed, for the summary an aborted rollout prints."""
    return sorted((n, e.reason) for n, e in record.entries.items() if e.state == plan.FAILED)
