"""The chaos soak's books: every request it sent with its answer, every fault it
injected, every invariant violation, and the one table it prints.

Kept apart from the runner (tests/support/chaos_soak.py) because the rule that
decides which versions may be recorded at the end is pure logic over the
ledger, and must be readable on its own: a 200 is a promise, a definite refusal
is a promise too, and anything the client never heard back (connection reset
by a SIGKILL, a timeout) may have gone either way.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: answers that say "this update did not happen, the previous state is kept"
#: the version of requests that name none (a body too big, a slow client)
NO_VERSION = "-"
DEFINITE_FAILURES = frozenset({400, 403, 409, 413, 422, 424, 502, 504, 507})


@dataclass
class Request:
    """One hot-update request as the client saw it."""

    kind: str
    version: str
    sent: float
    answered: float = 0.0
    status: int | None = None  # None: no HTTP answer at all
    outcome: str = ""  # body "outcome"/"status", or the client-side error
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How the table counts it: '200 updated', '424 rolledBack', 'no answer (...)'."""
        if self.status is None:
            return f"no answer ({self.outcome})"
        if self.status == 0:  # a raw-socket client: what the server did to it
            return self.outcome
        parts = [str(self.status), self.outcome, "joined" if self.body.get("joined") else ""]
        return " ".join(p for p in parts if p)

    @property
    def verdict(self) -> str:
        """ok (the update is in place), failed (definitely not), unknown (either)."""
        if self.status == 200:
            return "ok"
        if self.status in DEFINITE_FAILURES:
            return "failed"
        if self.status == 500 and self.outcome == "failed":
            return "failed"  # its previous version could not be restored: not this one
        return "unknown"


class Ledger:
    """Thread-safe record of requests, faults, side events and violations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self.faults: Counter[str] = Counter()
        self.violations: list[str] = []
        self.notes: list[str] = []
        self.started = time.monotonic()

    def add(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def fault(self, kind: str) -> None:
        with self._lock:
            self.faults[kind] += 1

    def violation(self, text: str) -> None:
        with self._lock:
            self.violations.append(text)

    def note(self, text: str) -> None:
        with self._lock:
            self.notes.append(text)

    def answered(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.answered]

    def allowed_final_versions(self) -> tuple[str | None, set[str]]:
        """The last version answered 200, and every version the end state may show.

        Allowed: the last 200'd version, plus versions of requests sent after it whose
        answer never came (the sidecar may have finished them, e.g. a pending update
        confirmed at the next start). A version that was definitely refused never is.
        """
        done = self.answered()
        oks = [r for r in done if r.verdict == "ok"]
        last = max(oks, key=lambda r: r.answered) if oks else None
        allowed = {last.version} if last else set()
        since = last.sent if last else 0.0
        refused = {r.version for r in done if r.verdict == "failed"}
        for r in done:
            if r.version == NO_VERSION:
                continue
            if r.verdict == "unknown" and r.sent >= since and r.version not in refused:
                allowed.add(r.version)
        return (last.version if last else None), allowed

    def refused_versions(self) -> set[str]:
        return {r.version for r in self.answered() if r.verdict == "failed"}

    def table(self, seed: int, minutes: float, extra: dict[str, Any]) -> str:
        """The one table the soak prints: faults, requests by outcome, violations."""
        rows: list[tuple[str, str, str]] = []
        for kind, count in sorted(self.faults.items()):
            rows.append(("fault", kind, str(count)))
        by_kind: Counter[tuple[str, str]] = Counter(
            (r.kind, r.label) for r in self.answered())
        for (kind, label), count in sorted(by_kind.items()):
            rows.append(("request", f"{kind}: {label}", str(count)))
        for key, value in extra.items():
            rows.append(("check", key, str(value)))
        rows.append(("violations", "invariant violations (must be 0)",
                     str(len(self.violations))))
        width = max(len(r[1]) for r in rows)
        lines = [f"chaos soak: seed={seed} minutes={minutes:g} "
                 f"ran={time.monotonic() - self.started:.0f}s "
                 f"requests={len(self.answered())} faults={sum(self.faults.values())}",
                 f"| {'what':<10} | {'item':<{width}} | {'count':>5} |",
                 f"|{'-' * 12}|{'-' * (width + 2)}|{'-' * 7}|"]
        lines += [f"| {a:<10} | {b:<{width}} | {c:>5} |" for a, b, c in rows]
        lines += [f"VIOLATION: {v}" for v in self.violations]
        return "\n".join(lines)
