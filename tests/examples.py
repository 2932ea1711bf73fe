"""What each file of manifests/examples/ must become: shared by the preview test,
the real llama-server tier and the control-plane tier."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import ROOT

EXAMPLES = ROOT / "manifests" / "examples"


@dataclass(frozen=True)
class ExampleExpect:
    name: str  # the workload's metadata.name
    injected: tuple[str, ...] = ()  # tokens appended to args, in order
    gpus: int = 0
    count_expression: str | None = None  # nvidia.com/gpu.count Gt value
    product: str | None = None
    denied: frozenset[str] = frozenset()
    opted_in: bool = True
    settings: dict[str, str] = field(default_factory=dict)  # GSW_* the webhook runs with


NGL = ("--n-gpu-layers", "999")

EXAMPLE_EXPECTATIONS: dict[str, list[ExampleExpect]] = {
    "llama-13b-2gpu.yaml": [ExampleExpect("llama-13b-multi-gpu", (*NGL, "--split-mode", "layer", "--tensor-split", "1,1"), 2, "1")],
    "llama-70b-4gpu.yaml": [ExampleExpect("llama-70b-multi-gpu", (*NGL, "--split-mode", "layer", "--tensor-split", "1,1,1,1"), 4, "3")],
    "llama-3b-1gpu.yaml": [ExampleExpect("llama-3b-gpu", NGL, 1)],
    "tinyllama-cpu.yaml": [ExampleExpect("tinyllama", opted_in=False), ExampleExpect("tinyllama-opted-in")],
    "precedence-4a-annotation-only.yaml": [ExampleExpect("llama-13b-4a", (*NGL, "--split-mode", "layer", "--tensor-split", "1,1"), 2, "1")],
    "precedence-4b-limit-only.yaml": [ExampleExpect("llama-13b-4b", (*NGL, "--split-mode", "layer", "--tensor-split", "1,1"), 2, "1")],
    "precedence-4c-both.yaml": [ExampleExpect("llama-13b-4c", denied=frozenset({"count-conflict"}))],
    "heterogeneous-split-3-1.yaml": [
        ExampleExpect("llama-13b-split-3-1", (*NGL, "--split-mode", "layer", "--tensor-split", "3,1"), 2, "1")
    ],
    "product-pinned-l4.yaml": [
        ExampleExpect("llama-13b-l4", (*NGL, "--split-mode", "layer", "--tensor-split", "1,1"), 2, "1", product="NVIDIA-L4")
    ],
    "statefulset-2gpu.yaml": [ExampleExpect("llama-13b-sts", (*NGL, "--split-mode", "layer", "--tensor-split", "1,1"), 2, "1")],
}

# The test plan's Test 4c behaviour, with the webhook configured for it.
PRECEDENCE_ANNOTATION = ExampleExpect(
    "llama-13b-4c", (*NGL, "--split-mode", "layer", "--tensor-split", "1,1"), 2, "1", settings={"GSW_PRECEDENCE": "annotation"}
)


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))
