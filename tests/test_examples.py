"""Every example manifest through the offline preview, checked against its expected result."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.examples import EXAMPLE_EXPECTATIONS, PRECEDENCE_ANNOTATION, ExampleExpect, example_files
from tests.harness import ROOT


def test_every_example_has_expectations() -> None:
    assert {p.name for p in example_files()} == set(EXAMPLE_EXPECTATIONS)


def preview(path: Path, settings: dict[str, str]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "preview", "-f", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **settings},
    )
    return result.returncode, result.stdout


def pods_by_name(stdout: str) -> dict[str, dict[str, Any]]:
    found = {}
    chunks = stdout.split("--- # ")[1:]
    for chunk in chunks:
        header = chunk.splitlines()[0]
        name = header.split()[1]
        document = yaml.safe_load("\n".join(chunk.splitlines()[1:]))
        found[name] = {"header": chunk, "pod": document}
    return found


def check_example(expect: ExampleExpect, original: dict[str, Any], result: dict[str, Any]) -> None:
    if expect.denied:
        assert "DENIED" in result["header"]
        for code in expect.denied:
            assert f"[{code}]" in result["header"]
        return
    pod = result["pod"]
    container = pod["spec"]["containers"][0]
    original_args = original["spec"]["template"]["spec"]["containers"][0]["args"]
    assert container["args"] == [*original_args, *expect.injected]
    if expect.gpus:
        assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == str(expect.gpus)
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
    else:
        assert "tolerations" not in pod["spec"] and "gpu-shard.io/status" not in (pod["metadata"].get("annotations") or {})
    expressions = [
        e
        for term in (pod["spec"].get("affinity") or {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
        for e in term["matchExpressions"]
    ]
    counts = [e["values"][0] for e in expressions if e["key"] == "nvidia.com/gpu.count"]
    assert counts == ([expect.count_expression] if expect.count_expression else [])
    products = [e["values"] for e in expressions if e["key"] == "nvidia.com/gpu.product"]
    assert products == ([[expect.product]] if expect.product else [])
    pod = {**pod, "metadata": {**pod["metadata"], "name": "x"}}
    kubernetes_validate.validate(pod, "1.30.0", strict=True)


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_example_through_preview(path: Path) -> None:
    originals = {d["metadata"]["name"]: d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] != "Service"}
    expectations = EXAMPLE_EXPECTATIONS[path.name]
    code, stdout = preview(path, {})
    assert code == (1 if any(e.denied for e in expectations) else 0)
    results = pods_by_name(stdout)
    for expect in expectations:
        check_example(expect, originals[expect.name], results[expect.name])


def test_precedence_4c_with_the_annotation_winning() -> None:
    path = ROOT / "manifests" / "examples" / "precedence-4c-both.yaml"
    original = next(d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] != "Service")
    code, stdout = preview(path, PRECEDENCE_ANNOTATION.settings)
    assert code == 0
    check_example(PRECEDENCE_ANNOTATION, original, pods_by_name(stdout)[PRECEDENCE_ANNOTATION.name])


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_examples_are_valid_kubernetes_objects(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
