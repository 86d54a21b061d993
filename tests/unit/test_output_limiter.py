"""A binary's output limits: exact numbers, a clock of our own."""

from __future__ import annotations

from kidecar_supervisor.output_limiter import OutputLimiter, OutputLimits, TokenBucket

LIMITS = OutputLimits(lines_per_second=10, bytes_per_second=10_000, burst_lines=20,
                      burst_bytes=20_000, max_line_bytes=100, report_every_seconds=5)


def lines(n: int, text: bytes = b"x") -> bytes:
    return b"".join(text + b"%d\n" % i for i in range(n))


def test_token_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    bucket = TokenBucket(rate=2, capacity=4, now=0)
    assert all(bucket.take(1) for _ in range(4)) and not bucket.take(1)
    bucket.refill(1.0)
    assert bucket.tokens == 2
    bucket.refill(100.0)
    assert bucket.tokens == 4
    bucket.refill(50.0)  # the clock never runs backwards for a bucket
    assert bucket.tokens == 4


def test_lines_within_the_limits_all_come_out_in_order() -> None:
    limiter = OutputLimiter(LIMITS, now=0)
    assert limiter.feed(b"hello\nwor", 0) == ["hello"]
    assert limiter.feed(b"ld\r\n\n\nbye\n", 0) == ["world", "bye"]
    assert limiter.dropped_lines_total == 0


def test_beyond_the_burst_lines_are_dropped_and_counted() -> None:
    limiter = OutputLimiter(LIMITS, now=0)
    out = limiter.feed(lines(1000), 0)
    assert out == [f"x{i}" for i in range(20)]
    assert limiter.dropped_lines_total == 980
    assert limiter.dropped_bytes_total == len(lines(1000)) - len(lines(20))


def test_the_budget_comes_back_with_time() -> None:
    limiter = OutputLimiter(LIMITS, now=0)
    limiter.feed(lines(100), 0)
    assert len(limiter.feed(lines(100), 1.0)) == 10  # 10 lines/s
    assert len(limiter.feed(lines(100), 100.0)) == 20  # never more than the burst


def test_the_bytes_limit_holds_for_long_lines() -> None:
    limits = OutputLimits(lines_per_second=1000, bytes_per_second=1000, burst_lines=1000,
                          burst_bytes=1000, max_line_bytes=500)
    limiter = OutputLimiter(limits, now=0)
    out = limiter.feed((b"y" * 299 + b"\n") * 10, 0)
    assert len(out) == 3 and limiter.dropped_lines_total == 7


def test_a_line_longer_than_the_cut_is_logged_in_pieces() -> None:
    limiter = OutputLimiter(LIMITS, now=0)
    out = limiter.feed(b"z" * 250, 0)
    assert out == ["z" * 100, "z" * 100]
    assert limiter.flush() == ["z" * 50]
    assert limiter.flush() == []


def test_a_line_begun_before_the_budget_ran_out_is_dropped_whole() -> None:
    limiter = OutputLimiter(LIMITS, now=0)
    limiter.feed(lines(19) + b"start-of-", 0)
    out = limiter.feed(b"line\n" + lines(50) + b"tail", 0)
    assert out[-1] == "start-of-line" and len(out) == 1
    assert limiter.dropped_lines_total == 50
    assert limiter.flush() == ["tail"]  # the last words of an exiting program always show


def test_drops_are_reported_at_once_then_at_most_every_interval() -> None:
    limiter = OutputLimiter(LIMITS, now=0)
    assert limiter.report(0) is None
    limiter.feed(lines(30), 0)
    first = limiter.report(0.5)
    assert first is not None and first.lines == 10 and first.seconds == 0.5
    limiter.feed(lines(30), 1)
    assert limiter.report(2) is None
    second = limiter.report(5.5)
    assert second is not None and second.lines == 30 - 10 and second.seconds == 5.0
    assert limiter.report(20) is None  # nothing new dropped
    assert limiter.dropped_lines_total == 30


def test_the_pending_report_ignores_the_interval() -> None:
    limiter = OutputLimiter(LIMITS, now=0)
    limiter.feed(lines(25), 0)
    assert limiter.report(0) is not None
    limiter.feed(lines(40), 1)
    pending = limiter.pending_report()
    assert pending is not None and pending.lines == 30
    assert limiter.pending_report() is None


def test_a_flood_costs_one_pass_per_chunk() -> None:
    limiter = OutputLimiter(OutputLimits(), now=0)
    chunk = b"x\n" * 32768  # one 64 KiB read of a program printing "x" in a loop
    out = limiter.feed(chunk, 0)
    assert len(out) == 200  # the burst
    for second in range(1, 11):
        limiter.feed(chunk, float(second))
    assert limiter.dropped_lines_total == 11 * 32768 - 200 - 10 * 100


def test_a_binary_plugin_sets_its_own_rates() -> None:
    import pytest

    from kidecar_supervisor.config_reader import ConfigError, ConfigReader
    from workers.binary import BinaryConfig

    cfg = BinaryConfig.parse(ConfigReader(
        {"path": "yes", "outputLinesPerSecond": 5, "outputBytesPerSecond": 4096}, "b", "t.yaml"))
    limits = OutputLimits.for_rates(cfg.output_lines_per_second, cfg.output_bytes_per_second)
    assert (limits.lines_per_second, limits.burst_lines) == (5, 10)
    assert (limits.bytes_per_second, limits.burst_bytes) == (4096, 16 * 1024)
    default = BinaryConfig.parse(ConfigReader({"path": "yes"}, "b", "t.yaml"))
    assert OutputLimits.for_rates(default.output_lines_per_second,
                                  default.output_bytes_per_second) == OutputLimits()
    with pytest.raises(ConfigError, match="outputLinesPerSecond"):
        BinaryConfig.parse(ConfigReader({"path": "yes", "outputLinesPerSecond": 0}, "b", "t"))
