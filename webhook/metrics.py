"""Prometheus metrics of the admission server.

prometheus-client keeps metrics in a process-wide registry by design. Under
gunicorn each worker is a process, so ``serve`` sets PROMETHEUS_MULTIPROC_DIR
before anything imports prometheus_client and ``/metrics`` aggregates every
worker's files; without it (tests, a single process) the default registry is
served.

The per-admission updates go through :data:`TALLY`: in multiprocess mode every
``inc()`` takes a lock, checks the pid and writes the memory-mapped file, and the
four of them an admission made cost more server CPU than its JSON (bench/RESULTS.md,
*Log lines and metrics*). The tally adds them up in memory and writes them every
:data:`FLUSH_INTERVAL` seconds, before this process answers ``/metrics``, and when
it exits; a scrape may miss at most the last second of another worker's admissions,
and a SIGKILLed worker loses at most that.
"""

from __future__ import annotations

import atexit
import bisect
import os
import threading
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

ADMISSIONS = Counter(
    "gpu_shard_admissions_total",
    "Admission requests answered, by webhook, operation and result.",
    ["webhook", "operation", "result"],
)
REJECTIONS = Counter(
    "gpu_shard_rejections_total",
    "Violations in denied admissions, by violation code.",
    ["code"],
)
LATENCY = Histogram(
    "gpu_shard_admission_duration_seconds",
    "Time from request body read to response built.",
    ["webhook"],
    # Up to the API server's timeouts (5 s shipped, 30 s at most), so an alert can see a p99 near them.
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SHARDED = Counter(
    "gpu_shard_injected_gpus_total",
    "Pods sharded by the mutating webhook, by the GPU count the admitted pod runs with.",
    ["gpus"],
)
CONNECTIONS_CLOSED = Counter(
    "gpu_shard_connections_closed_total",
    "Connections the server closed itself, by why: a phase's deadline (handshake, headers, body, write, idle), "
    "refused past the per-worker cap, or a TLS error.",
    ["reason"],
)
CLAIM_LOOKUPS = Counter(
    "gpu_shard_claim_lookups_total",
    "Admissions of containers with DRA claims, by whether the claim objects were known (missing: admitted unchanged).",
    ["webhook", "result"],
)

# Gauges are set by the workers only (never the gunicorn master, whose value would outlive a
# rotation); "livemin": what the worst live worker reports.
READY = Gauge(
    "gpu_shard_ready",
    "1 when the worker's last readiness check passed (the certificate served is the one on disk, the rules plan the canary pod).",
    multiprocess_mode="livemin",
)
WATCH_SYNCED = Gauge(
    "gpu_shard_watch_synced",
    "1 while the watch of a resource is synced; 0 while it fails (the checks that need it are skipped: fail open).",
    ["resource"],
    multiprocess_mode="livemin",
)
CERTIFICATE_EXPIRY = Gauge(
    "gpu_shard_certificate_expiry_timestamp_seconds",
    "Not-after of the serving certificate, as Unix time.",
    multiprocess_mode="livemin",
)

FLUSH_INTERVAL = 1.0


class Tally:
    """Counter increments and histogram observations added up here, written to prometheus_client in batches."""

    def __init__(self, interval: float = FLUSH_INTERVAL) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._counts: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._observations: dict[tuple[Any, tuple[str, ...]], list[float]] = {}  # per bucket counts, then the sum
        self._flusher: threading.Thread | None = None  # a thread: a forked child starts its own

    def inc(self, counter: Any, *labels: str) -> None:
        key = (counter, labels)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1
        if self._flusher is None:
            self._start_flusher()

    def observe(self, histogram: Any, value: float, *labels: str) -> None:
        key = (histogram, labels)
        with self._lock:
            found = self._observations.get(key)
            if found is None:
                found = self._observations[key] = [0.0] * (len(histogram._upper_bounds) + 1)
            found[bisect.bisect_left(histogram._upper_bounds, value)] += 1
            found[-1] += value
        if self._flusher is None:
            self._start_flusher()

    def flush(self) -> None:
        """Write what was added up since the last flush."""
        with self._lock:
            counts, self._counts = self._counts, {}
            observations, self._observations = self._observations, {}
        for (counter, labels), amount in counts.items():
            (counter.labels(*labels) if labels else counter).inc(amount)
        for (histogram, labels), tallies in observations.items():
            observed = histogram.labels(*labels) if labels else histogram
            # Histogram.observe(value) is _sum.inc(value) and one bucket's inc(1); these are n of them at once.
            # tests/test_monitoring.py checks the result against observe() one by one.
            observed._sum.inc(tallies[-1])
            for bucket, count in zip(observed._buckets, tallies[:-1], strict=True):
                if count:
                    bucket.inc(count)

    def _start_flusher(self) -> None:
        with self._lock:
            if self._flusher is not None:
                return
            self._flusher = threading.Thread(target=self._flush_periodically, name="metrics-flusher", daemon=True)
        self._flusher.start()

    def _flush_periodically(self) -> None:
        me = threading.current_thread()
        wait = threading.Event().wait
        while not wait(self.interval) and self._flusher is me:
            self.flush()

    def forget_after_fork(self) -> None:
        """In a forked child: what the parent added up is the parent's to write, and its flusher did not survive."""
        self._lock = threading.Lock()
        self._counts, self._observations = {}, {}
        self._flusher = None


TALLY = Tally()
atexit.register(TALLY.flush)
os.register_at_fork(after_in_child=TALLY.forget_after_fork)


def exposition() -> tuple[bytes, str]:
    """The text format body and its content type."""
    TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def master_ready() -> None:
    """In the gunicorn master, before it forks: drop the master's own live gauges.

    The master imports this module, and an unlabelled gauge writes its initial 0 for the
    process that created it; a "livemin" over processes would read that 0 for ever (never
    ready, a certificate expired in 1970). The master never sets a gauge again.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


def worker_exited(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
