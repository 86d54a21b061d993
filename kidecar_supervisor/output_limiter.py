"""A binary plugin's output, bounded: lines per second, bytes per second, line length.

Every output line of a binary plugin becomes one JSON log line written by the
supervisor. Unbounded, a program printing short lines as fast as it can
amplified ~50x (20 MB of output, > 1.1 GB of log) and kept the supervisor's
main loop at 100 % CPU, so ``/healthz`` timed out (issue 17). This module is
the pure part of the cure (no I/O, no clock of its own, unit-tested exactly):
two token buckets per child decide which lines are logged; the rest are
counted and dropped in bulk (one ``bytes.count`` per chunk, not a Python loop
per line). The supervisor still reads every byte the program writes (its
stdout never blocks on us), at most one bounded chunk per wake-up.

Defaults (``OutputLimits``): 100 lines/s and 64 KiB/s sustained, bursts of 200
lines / 128 KiB, lines cut at 16 KiB. Dropped lines are reported in the log
(``report``: at once for the first, then at most every 10 s) and counted for
``/metrics`` (``kidecar_plugin_output_dropped_lines_total``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputLimits:
    lines_per_second: float = 100.0
    bytes_per_second: float = 64 * 1024
    burst_lines: int = 200
    burst_bytes: int = 128 * 1024
    #: a longer line is logged cut in pieces of this size (each piece one line)
    max_line_bytes: int = 16 * 1024
    #: at most one "dropped N lines" log line per this many seconds
    report_every_seconds: float = 10.0

    @classmethod
    def for_rates(cls, lines_per_second: float | None,
                  bytes_per_second: float | None) -> OutputLimits:
        """A binary plugin's ``outputLinesPerSecond``/``outputBytesPerSecond`` (None:
        the default), with bursts of two seconds' worth."""
        lines = cls.lines_per_second if lines_per_second is None else lines_per_second
        size = cls.bytes_per_second if bytes_per_second is None else bytes_per_second
        return cls(lines_per_second=lines, bytes_per_second=size,
                   burst_lines=max(1, int(2 * lines)),
                   burst_bytes=max(cls.max_line_bytes, int(2 * size)))


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` saved up (the burst)."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._at = now

    def refill(self, now: float) -> None:
        if now > self._at:
            self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.rate)
        self._at = max(self._at, now)

    def take(self, amount: float) -> bool:
        """Spend ``amount`` if that many tokens are there (call ``refill`` first)."""
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True


@dataclass(frozen=True)
class DropReport:
    lines: int
    bytes: int
    seconds: float


class OutputLimiter:
    """Splits a byte stream into lines and keeps those within the limits."""

    def __init__(self, limits: OutputLimits, now: float) -> None:
        self.limits = limits
        self._lines = TokenBucket(limits.lines_per_second, limits.burst_lines, now)
        self._bytes = TokenBucket(limits.bytes_per_second, limits.burst_bytes, now)
        self._partial = b""
        self.dropped_lines_total = 0
        self.dropped_bytes_total = 0
        self._unreported_lines = 0
        self._unreported_bytes = 0
        self._reported_at: float | None = None
        #: start of the period the next report covers
        self._window_start = now
        self._now = now

    def feed(self, data: bytes, now: float) -> list[str]:
        """Take the next chunk of output; the lines to log, in order."""
        self._now = max(self._now, now)
        self._lines.refill(now)
        self._bytes.refill(now)
        out: list[str] = []
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line = data[start:end]
            if self._partial:
                line, self._partial = self._partial + line, b""
            start = end + 1
            self._line(line, out)
            if self._lines.tokens < 1 or self._bytes.tokens < 1:
                start = self._drop_whole_lines(data, start)
                break
        self._partial += data[start:]
        while len(self._partial) > self.limits.max_line_bytes:
            piece = self._partial[:self.limits.max_line_bytes]
            self._partial = self._partial[self.limits.max_line_bytes:]
            self._line(piece, out)
        return out

    def flush(self) -> list[str]:
        """The program closed its output: its last, unterminated line."""
        out: list[str] = []
        if self._partial:
            self._line(self._partial, out, forced=True)
            self._partial = b""
        return out

    def _line(self, line: bytes, out: list[str], forced: bool = False) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if not text:
            return
        cost = min(len(line) + 1, self.limits.burst_bytes)
        if forced or (self._lines.tokens >= 1 and self._bytes.tokens >= cost):
            self._lines.take(1)
            self._bytes.take(cost)
            out.append(text)
            return
        self._count_dropped(1, len(line) + 1)

    def _drop_whole_lines(self, data: bytes, start: int) -> int:
        """No budget left: drop every complete line of ``data`` after ``start`` at once."""
        last = data.rfind(b"\n", start)
        if last < 0:
            return start
        if self._partial:  # a line begun in an earlier chunk ends here: dropped too
            self._partial = b""
        self._count_dropped(data.count(b"\n", start, last + 1), last + 1 - start)
        return last + 1

    def _count_dropped(self, lines: int, size: int) -> None:
        self.dropped_lines_total += lines
        self.dropped_bytes_total += size
        self._unreported_lines += lines
        self._unreported_bytes += size

    def report(self, now: float) -> DropReport | None:
        """Lines dropped since the last report: the first at once, then at most every
        ``report_every_seconds`` (the log says *that* output is lost, not how often)."""
        if not self._unreported_lines:
            return None
        last = self._reported_at
        if last is not None and now - last < self.limits.report_every_seconds:
            return None
        report = DropReport(self._unreported_lines, self._unreported_bytes,
                            max(0.0, now - self._window_start))
        self._unreported_lines = self._unreported_bytes = 0
        self._reported_at = self._window_start = now
        return report

    def pending_report(self) -> DropReport | None:
        """Whatever is unreported, regardless of the interval (the program exited)."""
        if not self._unreported_lines:
            return None
        report = DropReport(self._unreported_lines, self._unreported_bytes,
                            max(0.0, self._now - self._window_start))
        self._unreported_lines = self._unreported_bytes = 0
        self._window_start = self._now
        return report
