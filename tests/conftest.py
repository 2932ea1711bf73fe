"""Figures the fault and benchmark tiers measure are printed at the end of the run
(never asserted as timings), so CI's log carries them for bench/RESULTS.md."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

_FIGURES: list[tuple[str, dict[str, Any]]] = []


@pytest.fixture(scope="session")
def figures() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    yield _FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("measured figures")
    for name, values in _FIGURES:
        terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
