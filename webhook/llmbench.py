"""``gpu-shard-webhook bench-llm``: the test plan's Test 5 throughput script as a real tool.

Sends ``--iterations`` chat completions to a llama-server (or any OpenAI-style
``/v1/chat/completions``) one after another, and reports completion tokens per
second (from ``usage.completion_tokens`` and the wall time, as the plan's
script does), request latency p50/p99, time to first token when streaming, and
errors; then prints the plan's comparison-matrix row. Standard library only:
the tool runs wherever the webhook is installed.
"""

from __future__ import annotations

import http.client
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO
from urllib.parse import urlsplit

DEFAULT_PROMPT = "Explain the theory of relativity in detail"


@dataclass(frozen=True)
class Sample:
    seconds: float
    completion_tokens: int
    first_token_seconds: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Summary:
    iterations: int
    errors: int
    total_tokens: int
    total_seconds: float
    tokens_per_second: float
    latency_p50: float
    latency_p99: float
    ttft_p50: float | None
    ttft_p99: float | None
    error_messages: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: with 5 samples p99 is the slowest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarise(samples: Sequence[Sample]) -> Summary:
    good = [s for s in samples if s.error is None]
    total_tokens = sum(s.completion_tokens for s in good)
    total_seconds = sum(s.seconds for s in good)
    first = [s.first_token_seconds for s in good if s.first_token_seconds is not None]
    return Summary(
        iterations=len(samples),
        errors=len(samples) - len(good),
        total_tokens=total_tokens,
        total_seconds=total_seconds,
        tokens_per_second=total_tokens / total_seconds if total_seconds > 0 else 0.0,
        latency_p50=percentile([s.seconds for s in good], 0.50),
        latency_p99=percentile([s.seconds for s in good], 0.99),
        ttft_p50=percentile(first, 0.50) if first else None,
        ttft_p99=percentile(first, 0.99) if first else None,
        error_messages=[s.error for s in samples if s.error],
    )


def matrix_row(summary: Summary, configuration: str, model: str, gpus: str, target: str) -> str:
    header = "| Configuration | Model | GPU Count | Target tok/s | Actual tok/s | Latency P99 |\n|---|---|---|---|---|---|"
    return f"{header}\n| {configuration} | {model} | {gpus} | {target} | {summary.tokens_per_second:.2f} | {summary.latency_p99:.2f}s |"


def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return connection_class(parts.hostname or "localhost", parts.port, timeout=timeout), parts.path.rstrip("/")


def one_completion(url: str, prompt: str, max_tokens: int, stream: bool, timeout: float = 600.0) -> Sample:
    connection, prefix = _connection(url, timeout)
    body: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    started = time.perf_counter()
    try:
        connection.request("POST", f"{prefix}/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            return Sample(time.perf_counter() - started, 0, error=f"HTTP {response.status}: {response.read(200).decode(errors='replace')}")
        if not stream:
            payload = json.loads(response.read())
            return Sample(time.perf_counter() - started, int(payload["usage"]["completion_tokens"]))
        return _read_stream(response, started)
    except (OSError, ValueError, KeyError, http.client.HTTPException) as error:
        return Sample(time.perf_counter() - started, 0, error=f"{type(error).__name__}: {error}")
    finally:
        connection.close()


def _read_stream(response: http.client.HTTPResponse, started: float) -> Sample:
    first: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    for raw in response:
        line = raw.decode(errors="replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - started
        if event.get("usage"):
            usage_tokens = int(event["usage"].get("completion_tokens", 0))
    return Sample(time.perf_counter() - started, usage_tokens if usage_tokens is not None else chunks, first)


def progress(done: int, total: int, out: TextIO) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    out.write(f"\r[{'#' * filled}{' ' * (width - filled)}] {done}/{total}")
    if done == total:
        out.write("\n")
    out.flush()


def run(url: str, iterations: int, max_tokens: int, prompt: str, stream: bool, out: TextIO = sys.stderr) -> Summary:
    samples = []
    progress(0, iterations, out)
    for index in range(iterations):
        samples.append(one_completion(url, prompt, max_tokens, stream))
        progress(index + 1, iterations, out)
    return summarise(samples)


def report(summary: Summary) -> str:
    lines = [
        "Results:",
        f"  Iterations: {summary.iterations} ({summary.errors} errors)",
        f"  Average Time: {summary.total_seconds / max(1, summary.iterations - summary.errors):.2f}s",
        f"  Average Tokens: {summary.total_tokens / max(1, summary.iterations - summary.errors):.2f}",
        f"  Tokens/Second: {summary.tokens_per_second:.2f}",
        f"  Latency p50/p99: {summary.latency_p50:.3f}s / {summary.latency_p99:.3f}s",
    ]
    if summary.ttft_p50 is not None and summary.ttft_p99 is not None:
        lines.append(f"  Time to first token p50/p99: {summary.ttft_p50:.3f}s / {summary.ttft_p99:.3f}s")
    lines += [f"  error: {message}" for message in summary.error_messages[:5]]
    return "\n".join(lines)


def as_json(summary: Summary) -> str:
    """JSON with NaN (no successful request) written as null."""
    fields = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(summary).items()}
    return json.dumps(fields, indent=2)
