"""What the admission path writes in batches -- metrics (webhook.metrics.Tally) and log lines
(webhook.logsink) -- ends up exactly as if written one by one, promptly, once, and at exit."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from tests.harness import ROOT, eventually
from webhook import metrics
from webhook.logsink import BatchedStreamHandler
from webhook.metrics import Tally

BUCKETS = metrics.LATENCY._upper_bounds[:-1]


def metric_pair() -> tuple[CollectorRegistry, Counter, Histogram]:
    registry = CollectorRegistry()
    counter = Counter("admissions_total", "help", ["webhook", "result"], registry=registry)
    histogram = Histogram("duration_seconds", "help", ["webhook"], buckets=BUCKETS, registry=registry)
    return registry, counter, histogram


def exposition_without_timestamps(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


# Bucket bounds themselves and values either side of them: where a batched bucket index could be off by one.
VALUES = st.one_of(
    st.sampled_from([0.0, *BUCKETS, *(b * 1.000001 for b in BUCKETS), 5.0]),
    st.floats(min_value=0, max_value=3, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["mutate", "validate"]), st.sampled_from(["patched", "denied"]), VALUES), max_size=40))
def test_a_flushed_tally_exposes_what_observing_one_by_one_exposes(events: list[tuple[str, str, float]]) -> None:
    batched, batched_counter, batched_histogram = metric_pair()
    direct, direct_counter, direct_histogram = metric_pair()
    tally = Tally(interval=3600)
    for webhook, result, seconds in events:
        tally.inc(batched_counter, webhook, result)
        tally.observe(batched_histogram, seconds, webhook)
        direct_counter.labels(webhook, result).inc()
        direct_histogram.labels(webhook).observe(seconds)
    tally.flush()
    assert exposition_without_timestamps(batched) == exposition_without_timestamps(direct)


def test_the_tally_writes_within_its_interval_without_being_asked() -> None:
    registry, counter, _ = metric_pair()
    tally = Tally(interval=0.05)
    tally.inc(counter, "mutate", "patched")
    eventually(lambda: registry.get_sample_value("admissions_total", {"webhook": "mutate", "result": "patched"}) == 1.0, timeout=5)


def test_a_forked_child_does_not_write_what_its_parent_counted() -> None:
    registry, counter, _ = metric_pair()
    metrics.TALLY.inc(counter, "mutate", "patched")  # pending in the parent
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: flush, and say what it sees
        metrics.TALLY.flush()
        os.write(write_end, str(registry.get_sample_value("admissions_total", {"webhook": "mutate", "result": "patched"})).encode())
        os._exit(0)
    os.close(write_end)
    seen_by_child = os.read(read_end, 100).decode()
    os.waitpid(pid, 0)
    metrics.TALLY.flush()
    assert seen_by_child == "None"
    assert registry.get_sample_value("admissions_total", {"webhook": "mutate", "result": "patched"}) == 1.0


def handler_writing_to(stream: io.StringIO, interval: float = 3600, max_buffered: int = 1 << 20) -> logging.Logger:
    handler = BatchedStreamHandler(stream, interval, max_buffered)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"batching-test-{id(stream)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def test_info_lines_wait_for_the_batch_and_a_warning_takes_them_along_in_order() -> None:
    stream = io.StringIO()
    logger = handler_writing_to(stream)
    logger.info("one")
    logger.handlers[0].write_line("two")  # type: ignore[attr-defined]
    assert stream.getvalue() == ""
    logger.warning("three")
    assert stream.getvalue() == "one\ntwo\nthree\n"


def test_lines_are_written_within_the_interval_and_when_the_buffer_fills() -> None:
    stream = io.StringIO()
    handler_writing_to(stream, interval=0.05).info("soon")
    eventually(lambda: stream.getvalue() == "soon\n", timeout=5)
    full = io.StringIO()
    logger = handler_writing_to(full, max_buffered=100)
    for index in range(30):
        logger.info(f"line {index:03d}")
    assert full.getvalue().startswith("line 000\n") and len(full.getvalue()) >= 100


@pytest.mark.parametrize("ending", ["exit normally", "sys.exit(3)", "raise SystemExit"])
def test_a_process_that_ends_writes_every_line(ending: str) -> None:
    script = textwrap.dedent(
        f"""
        import logging, sys
        from webhook.serving import configure_logging
        configure_logging("info")
        log = logging.getLogger("gpu_shard_webhook.admission")
        for index in range(5000):
            log.info("line %d", index)
        {"pass" if ending == "exit normally" else ending}
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stderr.splitlines() == [f"line {index}" for index in range(5000)]


def test_a_forked_child_does_not_repeat_its_parents_lines() -> None:
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    logger = handler_writing_to(stream)  # type: ignore[arg-type]
    logger.info("the parent's")
    pid = os.fork()
    if pid == 0:
        logger.info("the child's")
        logger.handlers[0].flush()
        os._exit(0)
    os.waitpid(pid, 0)
    logger.handlers[0].flush()
    stream.close()
    with os.fdopen(read_end) as lines:
        assert sorted(lines.read().splitlines()) == ["the child's", "the parent's"]
