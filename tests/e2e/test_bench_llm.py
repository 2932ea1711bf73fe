"""``gpu-shard-webhook bench-llm`` against the real tiny llama-server."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.llama import RunningLlama, llama_process, localise, wait_healthy
from tests.harness import ROOT, free_port
from tests.monitoring import dashboard_metrics, exposed_names
from webhook.llmbench import Sample, matrix_row, percentile, summarise

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def llama(llama_binary: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLlama]:
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "llama.log"
    with llama_process([str(llama_binary), *localise([], tiny_model, port), "--metrics"], {}, port, log) as server:
        assert wait_healthy(server), server.log()
        yield server


def bench(url: str, *flags: str, tmp: Path) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "bench-llm", "--url", url, "--iterations", "3", "--max-tokens", "16", "--json", str(out), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, json.loads(out.read_text())


def test_non_streaming_run_reports_tokens_per_second(llama: RunningLlama, tmp_path: Path) -> None:
    result, figures = bench(llama.url, tmp=tmp_path)
    assert result.returncode == 0, result.stderr
    assert figures["iterations"] == 3 and figures["errors"] == 0
    assert figures["total_tokens"] > 0 and figures["tokens_per_second"] > 0
    assert figures["latency_p50"] <= figures["latency_p99"]
    assert "| Dual GPU | 13B | 2 | 40-50 |" in result.stdout
    assert "3/3" in result.stderr, "the progress bar reached the end"


def test_streaming_run_measures_time_to_first_token(llama: RunningLlama, tmp_path: Path) -> None:
    result, figures = bench(
        llama.url, "--stream", "--configuration", "Single GPU", "--model", "3B", "--gpus", "1", "--target", "64", tmp=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert figures["errors"] == 0 and figures["total_tokens"] > 0
    assert 0 < figures["ttft_p50"] <= figures["latency_p50"]
    assert "| Single GPU | 3B | 1 | 64 |" in result.stdout


def test_unreachable_server_counts_errors_and_exits_1(tmp_path: Path) -> None:
    result, figures = bench(f"http://127.0.0.1:{free_port()}", tmp=tmp_path)
    assert result.returncode == 1
    assert figures["errors"] == 3 and figures["tokens_per_second"] == 0
    assert figures["latency_p99"] is None


def test_every_llama_server_metric_the_dashboard_queries_is_exposed(llama: RunningLlama, tmp_path: Path) -> None:
    bench(llama.url, tmp=tmp_path)  # some traffic first
    with urllib.request.urlopen(llama.url + "/metrics", timeout=10) as response:
        exposed = exposed_names(response.read().decode())
    wanted = {name for name in dashboard_metrics() if name.startswith("llamacpp:")}
    assert wanted and wanted <= exposed, wanted - exposed


def test_summary_arithmetic() -> None:
    samples = [Sample(2.0, 100), Sample(1.0, 50), Sample(4.0, 100, first_token_seconds=0.5), Sample(9.0, 0, error="HTTP 500")]
    summary = summarise(samples)
    assert summary.errors == 1 and summary.total_tokens == 250
    assert summary.tokens_per_second == pytest.approx(250 / 7.0)
    assert summary.latency_p50 == 2.0 and summary.latency_p99 == 4.0
    assert summary.ttft_p50 == 0.5
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9) == 9
    assert "| Quad GPU | 70B | 4 | 30-40 | 35.71 | 4.00s |" in matrix_row(summary, "Quad GPU", "70B", "4", "30-40")
