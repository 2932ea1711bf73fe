"""From a pod (or pod template) to a sharding plan: which container, how many GPUs, which flags.

Planning reads; it never edits. :func:`plan_pod` returns a :class:`Planning`:
the chosen container and GPU count, the :class:`ShardingPlan` when the pod can
be sharded, and the problems that stop it (as violations). The mutation
applies the plan; the rules judge the pod it produces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from webhook.config import Config
from webhook.llamacpp import (
    FIT,
    GPU_LAYERS,
    INJECTED_SPELLING,
    MAX_TENSOR_SPLIT_VALUES,
    SPLIT_MODE,
    SPLIT_MODES,
    TENSOR_SPLIT,
    Channel,
    Launch,
    detect_launch,
)
from webhook.violation import Violation

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
MIG_PREFIX = "nvidia.com/mig-"


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def container_field(index: int, *path: str) -> str:
    return ".".join([f"spec.containers[{index}]", *path])


def parse_tensor_split(text: str) -> list[float] | None:
    """llama.cpp's reading of -ts: numbers separated by ',' or '/'; None if unparsable."""
    parts = re.split(r"[,/]", text.strip())
    try:
        return [float(part) for part in parts]
    except ValueError:
        return None


def tensor_split_problem(text: str) -> tuple[str, str] | None:
    """(code, message) when llama-server would refuse or misuse this split."""
    values = parse_tensor_split(text)
    if values is None or any(v != v or v in (float("inf"), float("-inf")) for v in values):
        return "tensor-split-invalid", f"'{text}' is not a comma list of numbers, e.g. 1,1 or 3,1"
    if len(values) > MAX_TENSOR_SPLIT_VALUES:
        return "tensor-split-too-long", f"{len(values)} values; llama-server takes at most {MAX_TENSOR_SPLIT_VALUES}"
    if any(v < 0 for v in values):
        return "tensor-split-invalid", f"'{text}' has a negative share; use non-negative numbers"
    if not any(v > 0 for v in values):
        return "tensor-split-invalid", f"'{text}' gives every GPU a zero share; give at least one a positive share"
    return None


def is_whole_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' and other characters int() refuses."""
    return text.isascii() and text.isdigit()


def parse_gpu_layers(text: str) -> str | None:
    """The normalised -ngl value ('all', 'auto' or digits), or None if invalid."""
    value = text.strip().lower()
    if value in ("all", "auto") or is_whole_number(value):
        return str(int(value)) if is_whole_number(value) else value
    return None


def parse_quantity(value: Any) -> int | None:
    """A whole-number extended-resource quantity; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and is_whole_number(value.strip()):
        return int(value.strip())
    return None


def gpu_quantities(container: Mapping[str, Any], config: Config) -> tuple[str, Any, Any]:
    """(resource, raw limit, raw request) of the first configured GPU resource present."""
    resources = as_dict(container.get("resources"))
    limits = as_dict(resources.get("limits"))
    requests = as_dict(resources.get("requests"))
    for resource in config.gpu_resources:
        if resource in limits or resource in requests:
            return resource, limits.get(resource), requests.get(resource)
    return config.gpu_resources[0], None, None


def asks_for_gpus(container: Any, config: Config) -> bool:
    if not isinstance(container, dict):
        return False
    _, limit, request = gpu_quantities(container, config)
    return bool(parse_quantity(limit) or parse_quantity(request))


@dataclass(frozen=True)
class ShardingPlan:
    """What the llama.cpp container gets. ``settings`` keys are llamacpp option keys."""

    container: str
    index: int
    resource: str
    gpus: int
    channel: Channel
    gpu_layers: str | None
    split_mode: str | None
    tensor_split: str | None
    set_count: bool  # write the GPU count into limits/requests (annotation decided it)
    products: tuple[str, ...] = ()
    argv_understood: bool = True  # False: a wrapper we cannot read; settings go through env

    def settings(self) -> list[tuple[str, str]]:
        """(option key, value) in injection order."""
        ordered: list[tuple[str, str]] = []
        if self.gpu_layers is not None:
            ordered.append((GPU_LAYERS, self.gpu_layers))
        if self.split_mode is not None:
            ordered.append((SPLIT_MODE, self.split_mode))
        if self.tensor_split is not None:
            ordered.append((TENSOR_SPLIT, self.tensor_split))
        if self.split_mode == "tensor":
            ordered.append((FIT, "off"))
        return ordered

    def status(self) -> str:
        """The compact JSON record written to the status annotation."""
        record = {
            "container": self.container,
            "gpus": self.gpus,
            "resource": self.resource,
            "gpuLayers": self.gpu_layers or "auto",
            "splitMode": self.split_mode,
            "tensorSplit": self.tensor_split,
            "channel": self.channel,
        }
        return json.dumps(record, separators=(",", ":"), sort_keys=True)

    def flags(self) -> str:
        """The settings as the container gets them: flags, or LLAMA_ARG_* assignments."""
        if self.channel == "args":
            return " ".join(f"{INJECTED_SPELLING[key]} {value}" for key, value in self.settings()) or "no flags"
        return " ".join(f"{key}={value}" for key, value in self.settings()) or "no flags"

    def summary(self) -> str:
        """One line for a person: what llama.cpp will be started with."""
        text = f"container {self.container} gets {self.gpus} {self.resource}: {self.flags()}"
        if self.gpus > MAX_TENSOR_SPLIT_VALUES and self.tensor_split is None:
            text += f" (over {MAX_TENSOR_SPLIT_VALUES} GPUs: split left to llama.cpp)"
        if self.gpu_layers is None:
            text += " (layers: llama.cpp --fit decides)"
        if not self.argv_understood:
            text += " (its command is not llama-server itself: it must pass LLAMA_ARG_* through)"
        return text


@dataclass(frozen=True)
class Target:
    index: int
    name: str
    launch: Launch


@dataclass(frozen=True)
class Planning:
    target: Target | None
    gpus: int | None  # None when undecidable (e.g. conflicting counts)
    plan: ShardingPlan | None
    problems: tuple[Violation, ...]


def is_opted_in(pod: Mapping[str, Any], config: Config) -> bool:
    labels = as_dict(as_dict(pod.get("metadata")).get("labels"))
    return labels.get(config.enabled_label) == "true"


def annotations_of(pod: Mapping[str, Any]) -> dict[str, Any]:
    return as_dict(as_dict(pod.get("metadata")).get("annotations"))


def find_target(pod: Mapping[str, Any], config: Config) -> tuple[Target | None, list[Violation]]:
    containers = as_list(as_dict(pod.get("spec")).get("containers"))
    annotation = config.annotation("container")
    named = annotations_of(pod).get(annotation)
    if named is not None:
        for index, container in enumerate(containers):
            if isinstance(container, dict) and container.get("name") == named:
                launch = detect_launch(container, named=True)
                assert launch is not None  # named=True always yields a launch for a dict
                return Target(index, str(named), launch), []
        names = ", ".join(str(as_dict(c).get("name")) for c in containers) or "none"
        return None, [
            Violation(
                "unknown-container",
                f"no container named '{named}' (containers: {names}); fix the annotation",
                f"metadata.annotations[{annotation}]",
            )
        ]

    gpu_indexes = [i for i, c in enumerate(containers) if asks_for_gpus(c, config)]
    if len(gpu_indexes) > 1:
        names = ", ".join(str(containers[i].get("name")) for i in gpu_indexes)
        return None, [
            Violation(
                "ambiguous-gpu-containers", f"containers {names} all ask for GPUs; set {annotation} to the llama.cpp one", "spec.containers"
            )
        ]
    launches = [(i, detect_launch(c)) for i, c in enumerate(containers)]
    candidates = [(i, launch) for i, launch in launches if launch is not None]
    if len(candidates) > 1:
        candidates = [(i, launch) for i, launch in candidates if i in gpu_indexes]
        if len(candidates) != 1:
            return None, [
                Violation(
                    "ambiguous-llama-containers",
                    f"several containers run llama-server; set {annotation} to the one to shard",
                    "spec.containers",
                )
            ]
    if not candidates:
        return None, [
            Violation(
                "no-llama-container",
                f"no container runs llama-server; set the annotation {annotation}: <container name>",
                "spec.containers",
            )
        ]
    index, launch = candidates[0]
    return Target(index, str(containers[index].get("name")), launch), []


def _annotated_count(value: Any, key: str) -> tuple[int | None, list[Violation]]:
    if value is None:
        return None, []
    count = parse_quantity(value)
    if count is None:
        return None, [Violation("bad-annotation", f"gpu-count '{value}' is not a whole number of GPUs", f"metadata.annotations[{key}]")]
    return count, []


def decide_count(pod: Mapping[str, Any], target: Target, config: Config) -> tuple[int | None, str, bool, list[Violation]]:
    """(N, resource, whether the annotation sets the count, problems)."""
    container = as_list(as_dict(pod.get("spec")).get("containers"))[target.index]
    resource, raw_limit, raw_request = gpu_quantities(container, config)
    key = config.annotation("gpu-count")
    annotated, problems = _annotated_count(annotations_of(pod).get(key), key)
    where = container_field(target.index, "resources")
    limit = parse_quantity(raw_limit)
    request = parse_quantity(raw_request)
    for raw, parsed, kind in ((raw_limit, limit, "limits"), (raw_request, request, "requests")):
        if raw is not None and parsed is None:
            problems.append(Violation("bad-gpu-quantity", f"{kind}[{resource}] '{raw}' is not a whole number of GPUs", f"{where}.{kind}"))
    if problems:
        return None, resource, False, problems

    declared = limit if limit is not None else request
    if annotated is None:
        return declared or 0, resource, False, []
    if declared is None or declared == annotated:
        return annotated, resource, declared is None and annotated > 0, []
    if config.precedence == "annotation":
        return annotated, resource, True, []
    return (
        None,
        resource,
        False,
        [
            Violation(
                "count-conflict",
                f"annotation {key}={annotated} but {resource} limit is {declared}; make them equal or drop one",
                where,
            )
        ],
    )


def plan_pod(pod: Mapping[str, Any], config: Config) -> Planning:
    """Everything the mutation needs to know, or why it cannot proceed."""
    target, problems = find_target(pod, config)
    if target is None:
        return Planning(None, None, None, tuple(problems))
    gpus, resource, set_count, problems = decide_count(pod, target, config)
    annotations = annotations_of(pod)

    def annotation(name: str) -> tuple[str, str | None]:
        key = config.annotation(name)
        value = annotations.get(key)
        return key, (None if value is None else str(value))

    layers_key, layers = annotation("n-gpu-layers")
    gpu_layers: str | None = config.default_gpu_layers
    if layers is not None:
        gpu_layers = parse_gpu_layers(layers)
        if gpu_layers is None:
            problems.append(
                Violation(
                    "bad-annotation",
                    f"n-gpu-layers '{layers}' must be a whole number, 'all' or 'auto'",
                    f"metadata.annotations[{layers_key}]",
                )
            )
    if gpu_layers == "auto":
        gpu_layers = None

    mode_key, split_mode = annotation("split-mode")
    if split_mode is not None and split_mode not in SPLIT_MODES:
        problems.append(
            Violation(
                "split-mode-unknown",
                f"split-mode '{split_mode}' must be one of {', '.join(SPLIT_MODES)}",
                f"metadata.annotations[{mode_key}]",
            )
        )

    split_key, tensor_split = annotation("tensor-split")
    if tensor_split is not None:
        problem = tensor_split_problem(tensor_split)
        if problem is not None:
            problems.append(Violation(problem[0], problem[1], f"metadata.annotations[{split_key}]"))
        elif gpus is not None and (count := len(parse_tensor_split(tensor_split) or ())) != gpus:
            problems.append(
                Violation(
                    "tensor-split-arity",
                    f"tensor-split '{tensor_split}' has {count} values for {gpus} GPUs; give exactly {gpus}",
                    f"metadata.annotations[{split_key}]",
                )
            )

    product_key, product_text = annotation("gpu-product")
    products: tuple[str, ...] = ()
    if product_text is not None:
        products = tuple(p.strip() for p in product_text.split(",") if p.strip())
        if not products or not all(_LABEL_VALUE.match(p) for p in products):
            problems.append(
                Violation(
                    "bad-annotation",
                    f"gpu-product '{product_text}' must be a comma list of node label values, e.g. NVIDIA-L4",
                    f"metadata.annotations[{product_key}]",
                )
            )

    if gpus is not None and gpus > config.max_gpus_per_node:
        problems.append(
            Violation(
                "too-many-gpus",
                f"{gpus} GPUs asked, at most {config.max_gpus_per_node} fit a node; use fewer GPUs",
                container_field(target.index, "resources"),
            )
        )

    if problems or gpus is None:
        return Planning(target, gpus, None, tuple(problems))
    if gpus == 0:
        return Planning(target, 0, None, ())

    if gpus >= 2:
        split_mode = split_mode or "layer"
        if tensor_split is None and gpus <= MAX_TENSOR_SPLIT_VALUES:
            tensor_split = ",".join(["1"] * gpus)
    else:
        split_mode = None
        tensor_split = None
    if split_mode == "none":
        tensor_split = None
    plan = ShardingPlan(
        container=target.name,
        index=target.index,
        resource=resource,
        gpus=gpus,
        channel=target.launch.channel,
        gpu_layers=gpu_layers,
        split_mode=split_mode,
        tensor_split=tensor_split,
        set_count=set_count,
        products=products,
        argv_understood=target.launch.recognised,
    )
    return Planning(target, gpus, plan, ())
