"""The admission benchmark script runs end to end on a tiny load (figures are not judged here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT


def test_admission_benchmark_runs_on_a_tiny_load(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "bench/admission.py", "--quick", "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| /mutate | 2-GPU pod |" in result.stdout and "peak RSS per worker" in result.stdout
    rows = json.loads(out.read_text())["rows"]
    assert {row["endpoint"] for row in rows} == {"/mutate", "/validate", "/allow"}
    assert all(row["errors"] == 0 and row["rps"] > 0 for row in rows)
    assert any("open-loop" in row["generator"] for row in rows)
