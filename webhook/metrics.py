"""Prometheus metrics of the admission server.

prometheus-client keeps metrics in a process-wide registry by design. Under
gunicorn each worker is a process, so ``serve`` sets PROMETHEUS_MULTIPROC_DIR
before anything imports prometheus_client and ``/metrics`` aggregates every
worker's files; without it (tests, a single process) the default registry is
served.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

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
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
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


_CHILDREN: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, remembered: labels() takes a lock and builds a key on every call."""
    key = (id(metric), *labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*labels)
    return found


def exposition() -> tuple[bytes, str]:
    """The text format body and its content type."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
