"""Everything an operator can tune, in one table.

Each setting is a field of :class:`Config` and a row of :data:`SETTINGS`, which
the CLI turns into ``--flags`` and ``GSW_*`` environment variables and the
README's configuration table repeats. Flags beat environment variables, which
beat the defaults here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Precedence = Literal["reject", "annotation"]


@dataclass(frozen=True)
class Config:
    """How the webhook decides. Pure data: no I/O, safe to share between threads."""

    prefix: str = "gpu-shard.io"
    gpu_resources: tuple[str, ...] = ("nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/i915", "gpu.intel.com/xe")
    gpu_device_classes: tuple[str, ...] = ("gpu.nvidia.com", "gpu.amd.com", "gpu.intel.com")
    default_gpu_layers: str = "999"
    max_gpus_per_node: int = 8
    precedence: Precedence = "reject"
    inject_affinity: bool = True
    affinity_resources: tuple[str, ...] = ("nvidia.com/gpu",)
    gpu_count_label: str = "nvidia.com/gpu.count"
    sharing_strategy_label: str = "nvidia.com/gpu.sharing-strategy"
    shared_strategies: tuple[str, ...] = ("time-slicing", "mps")
    product_label: str = "nvidia.com/gpu.product"
    cuda_driver_label: str = "nvidia.com/cuda.driver.major"
    body_limit: int = 4 * 1024 * 1024

    @property
    def enabled_label(self) -> str:
        return f"{self.prefix}/enabled"

    def annotation(self, name: str) -> str:
        return f"{self.prefix}/{name}"


@dataclass(frozen=True)
class Setting:
    """One row of the configuration table."""

    name: str
    env: str
    parse: Callable[[str], Any]
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def parse_boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _precedence(text: str) -> Precedence:
    if text not in ("reject", "annotation"):
        raise ValueError(f"expected 'reject' or 'annotation', got {text!r}")
    return text  # type: ignore[return-value]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, got {text!r}")
    return value


def _gpu_layers(text: str) -> str:
    if text in ("all", "auto") or (text.isascii() and text.isdigit()):
        return text
    raise ValueError(f"expected an integer, 'all' or 'auto', got {text!r}")


SETTINGS: tuple[Setting, ...] = (
    Setting("prefix", "GSW_PREFIX", str, "Label and annotation prefix (opt-in label is PREFIX/enabled)."),
    Setting("gpu_resources", "GSW_GPU_RESOURCES", _csv, "Extended resources counted as GPUs, comma list."),
    Setting(
        "gpu_device_classes",
        "GSW_GPU_DEVICE_CLASSES",
        _csv,
        "DRA DeviceClasses whose devices are GPUs, comma list (NVIDIA's, AMD's and Intel's DRA drivers).",
    ),
    Setting("default_gpu_layers", "GSW_DEFAULT_GPU_LAYERS", _gpu_layers, "--n-gpu-layers injected when no annotation says otherwise."),
    Setting("max_gpus_per_node", "GSW_MAX_GPUS_PER_NODE", _positive_int, "Largest GPU count a pod may ask for."),
    Setting(
        "precedence",
        "GSW_PRECEDENCE",
        _precedence,
        "gpu-count annotation vs limit disagreeing: 'reject' or 'annotation' (annotation wins, limit rewritten).",
    ),
    Setting(
        "inject_affinity",
        "GSW_INJECT_AFFINITY",
        parse_boolean,
        "Inject node affinity on GPU Feature Discovery labels (off for clusters without GFD).",
    ),
    Setting(
        "affinity_resources",
        "GSW_AFFINITY_RESOURCES",
        _csv,
        "GPU resources whose pods get the node affinity (the default labels are NVIDIA GPU Feature Discovery's).",
    ),
    Setting("gpu_count_label", "GSW_GPU_COUNT_LABEL", str, "Node label holding the number of physical GPUs."),
    Setting("sharing_strategy_label", "GSW_SHARING_STRATEGY_LABEL", str, "Node label naming the GPU sharing strategy."),
    Setting("shared_strategies", "GSW_SHARED_STRATEGIES", _csv, "Sharing strategies multi-GPU pods must avoid, comma list."),
    Setting("product_label", "GSW_PRODUCT_LABEL", str, "Node label naming the GPU product."),
    Setting(
        "cuda_driver_label",
        "GSW_CUDA_DRIVER_LABEL",
        str,
        "Node label with the NVIDIA driver's major version (GFD's); CUDA 13 images need 580 or newer.",
    ),
    Setting("body_limit", "GSW_BODY_LIMIT", _positive_int, "Largest request body in bytes; larger ones get HTTP 413."),
)


def config_from(environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Config:
    """Build a Config from ``GSW_*`` variables, then explicit overrides (CLI flags).

    A malformed value raises ValueError naming the variable, so a typo in a
    Deployment fails the pod at start rather than changing behaviour silently.
    """
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = environ.get(setting.env)
        if raw is None:
            continue
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as error:
            raise ValueError(f"{setting.env}: {error}") from None
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = value
    return dataclasses.replace(Config(), **values)
