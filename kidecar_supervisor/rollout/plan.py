"""The batch logic of a rollout, pure: no API, no clock of its own (``now`` is given).

A pod moves PENDING → (DEFERRED while its GameServer is busy) → UPDATING (its
desired version written) → DONE (it reports the version, confirmed) or
FAILED (it reported the version failed or rolled back, or said nothing within
the batch timeout); SKIPPED when it stayed busy past the idle timeout; after
an abort, every pod the rollout wrote to is REVERTED (its previous version
written back as desired).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kidecar_supervisor.rollout.spec import RolloutSpec
from kidecar_supervisor.storage.result_codec import load_object

PENDING = "pending"
DEFERRED = "deferred"
UPDATING = "updating"
DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
REVERTED = "reverted"
#: states a pod never leaves (until an abort reverts the ones that were written)
FINAL = (DONE, FAILED, SKIPPED, REVERTED)
#: a result stamped this long before the desired version was written still counts as an
#: answer to it (the sidecar's and the driver's clocks are not the same clock)
CLOCK_SKEW_SECONDS = 30.0


@dataclass
class PodEntry:
    """What the rollout knows of one pod (stored compactly in the rollout object)."""

    state: str = PENDING
    batch: int = 0
    since: float = 0.0
    reason: str = ""
    #: the version the pod ran before the rollout wrote to it: {version, url, sha256}
    previous: dict[str, str] | None = None
    #: the desired value the pod had before (restored on abort when there was no version)
    written: bool = False

    def encode(self) -> list[Any]:
        return [self.state, self.batch, round(self.since, 3), self.reason, self.previous,
                self.written]

    @classmethod
    def decode(cls, data: list[Any]) -> PodEntry:
        state, batch, since, reason, previous, written = (list(data) + [None] * 6)[:6]
        return cls(str(state), int(batch or 0), float(since or 0.0), str(reason or ""),
                   previous if isinstance(previous, dict) else None, bool(written))


@dataclass
class Observed:
    """One selected pod as the API shows it now."""

    name: str
    result: dict[str, Any] | None = None
    desired: str | None = None
    #: the GameServer's spec.opsState; None: the pod has no GameServer (counts as idle)
    ops_state: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def parse_result(text: str | None) -> dict[str, Any] | None:
    """hot_update's result annotation (storage/result_codec.py), or None."""
    return load_object(text)


def running_version(result: dict[str, Any] | None) -> dict[str, str] | None:
    """The version the pod runs by its result annotation: the latest success, or the
    ``lastGood`` of a failed latest attempt."""
    if result is None:
        return None
    good = result if result.get("success") else result.get("lastGood")
    if not isinstance(good, dict) or not good.get("version"):
        return None
    return {"version": str(good["version"]), "url": str(good.get("url") or ""),
            "sha256": str(good.get("sha256") or "")}


def answer(result: dict[str, Any] | None, version: str, since: float) -> tuple[str, str]:
    """(DONE or FAILED or "", why) for a pod told to run ``version`` at ``since``."""
    if result is None or result.get("version") != version:
        return "", ""
    if result.get("success"):
        return DONE, ""
    stamp = float(result.get("timestamp") or 0.0)
    if stamp < since - CLOCK_SKEW_SECONDS:
        return "", ""  # an older failure of the same version: not this rollout's answer
    return FAILED, str(result.get("message") or "failed")[:300]


def is_idle(pod: Observed, spec: RolloutSpec) -> bool:
    return pod.ops_state is None or pod.ops_state in spec.idle_states


@dataclass
class Step:
    """What one pass decided: pods to write the desired version to, and news to tell."""

    write: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    batch_done: bool = False


def adopt(entries: dict[str, PodEntry], pods: list[Observed], spec: RolloutSpec,
          now: float) -> list[str]:
    """Add pods seen for the first time (new pods of the workload); those already on
    the version are done without being touched."""
    events = []
    for pod in pods:
        if pod.name in entries:
            continue
        entry = PodEntry(previous=running_version(pod.result), since=now)
        current = entry.previous
        if current is not None and current["version"] == spec.version:
            entry.state = DONE
            entry.reason = "already on the version"
        entries[pod.name] = entry
        events.append(f"pod {pod.name}: {entry.state}")
    return events


def forget_gone(entries: dict[str, PodEntry], pods: dict[str, Observed]) -> list[str]:
    """Pods deleted before they were done (scale-in, a rebuild) leave the rollout: there is
    nothing left to update; a pod recreated under the same name is adopted again."""
    gone = [n for n, e in entries.items()
            if n not in pods and e.state in (PENDING, DEFERRED, UPDATING)]
    for name in gone:
        del entries[name]
    return [f"pod {name}: gone, no longer part of the rollout" for name in sorted(gone)]


def settle(entries: dict[str, PodEntry], pods: dict[str, Observed], spec: RolloutSpec,
           now: float) -> list[str]:
    """Pods being updated that answered (or ran out of time) become DONE/FAILED."""
    events = []
    for name, entry in sorted(entries.items()):
        if entry.state != UPDATING:
            continue
        pod = pods.get(name)
        if pod is None:
            continue  # forget_gone's business
        state, why = answer(pod.result, spec.version, entry.since)
        if not state and now - entry.since > spec.batch_timeout_seconds:
            state = FAILED
            why = f"no answer within {spec.batch_timeout_seconds:g}s"
        if not state:
            continue
        entry.state, entry.reason = state, why
        events.append(f"pod {name}: {entry.state}" + (f" ({entry.reason})" if entry.reason
                                                       else ""))
    return events


def failures(entries: dict[str, PodEntry]) -> int:
    return sum(1 for e in entries.values() if e.state == FAILED)


def in_flight(entries: dict[str, PodEntry]) -> list[str]:
    return sorted(n for n, e in entries.items() if e.state == UPDATING)


def next_batch(entries: dict[str, PodEntry], pods: dict[str, Observed], spec: RolloutSpec,
               batch: int, now: float) -> Step:
    """Choose the next batch among PENDING/DEFERRED pods that exist and are idle.

    Busy pods wait (DEFERRED, since when); past ``idle_timeout_seconds`` they are
    SKIPPED, or chosen anyway with ``force``. Names are taken in order, so any
    driver run picks the same pods.
    """
    step = Step()
    size = spec.batch_count(len(pods))
    for name in sorted(entries):
        entry = entries[name]
        if entry.state not in (PENDING, DEFERRED) or name not in pods:
            continue
        if len(step.write) >= size:
            break
        pod = pods[name]
        if not is_idle(pod, spec):
            if entry.state == PENDING:
                entry.state, entry.since = DEFERRED, now
                entry.reason = f"GameServer opsState {pod.ops_state}"
                step.events.append(f"pod {name}: deferred ({entry.reason})")
                continue
            if now - entry.since <= spec.idle_timeout_seconds:
                continue
            if not spec.force:
                entry.state = SKIPPED
                entry.reason = (f"still {pod.ops_state} after "
                                f"{spec.idle_timeout_seconds:g}s")
                step.events.append(f"pod {name}: skipped ({entry.reason})")
                continue
        entry.state, entry.batch, entry.since, entry.reason = UPDATING, batch, now, ""
        entry.previous = entry.previous or running_version(pod.result)
        entry.written = True
        step.write.append(name)
    return step


def remaining(entries: dict[str, PodEntry]) -> int:
    return sum(1 for e in entries.values() if e.state not in FINAL)


def to_revert(entries: dict[str, PodEntry]) -> list[str]:
    """Every pod this rollout wrote a desired version to and has not reverted yet."""
    return sorted(n for n, e in entries.items() if e.written and e.state != REVERTED)


def counts(entries: dict[str, PodEntry]) -> dict[str, int]:
    out: dict[str, int] = {}
    for entry in entries.values():
        out[entry.state] = out.get(entry.state, 0) + 1
    return out
