"""From the reading of a pod to a sharding plan: how many GPUs, which settings, where it may run.

Planning decides; it never edits. :func:`plan_pod` returns a :class:`Planning`: the
GPU count and where it comes from, the :class:`ShardingPlan` when the pod can be
sharded, the problems that stop it (as violations) and the warnings a person should
see. The mutation applies the plan; the rules judge the pod it produces.

GPU count, in this order:

* extended-resource limits (``nvidia.com/gpu``, AMD, Intel) and DRA claims together:
  ``ambiguous-gpu-source`` -- the container would get both sets of devices;
* the ``gpu-count`` annotation against the limit: equal, or one of them, or
  ``count-conflict`` (``--precedence annotation`` rewrites the limit instead);
* the annotation against a claim: a claim cannot be rewritten, so they must agree
  when the claim's count is known; when it is not (``allocationMode: All``), the
  annotation says it;
* a claim whose object is not known yet (created in the same ``kubectl apply``,
  after the Deployment): nothing is injected and a warning says so (fail open).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from webhook.config import Config
from webhook.images import Image
from webhook.launch import Channel
from webhook.llamacpp import FIT, GPU_LAYERS, MAX_TENSOR_SPLIT_VALUES, SPLIT_MODE, SPLIT_MODES, TENSOR_SPLIT
from webhook.objects import container_field, is_whole_number, parse_quantity
from webhook.reading import ContainerReading, PodReading
from webhook.scheduling import conventional_taint, gpu_node_expressions
from webhook.violation import Violation

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


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
        return "tensor-split-invalid", f"'{text}' is not a comma list of numbers; write numbers, e.g. 1,1 or 3,1"
    if len(values) > MAX_TENSOR_SPLIT_VALUES:
        return (
            "tensor-split-too-long",
            f"has {len(values)} values and llama-server takes at most {MAX_TENSOR_SPLIT_VALUES}; "
            "drop it (llama.cpp splits evenly by itself)",
        )
    if any(v < 0 for v in values):
        return "tensor-split-invalid", f"'{text}' has a negative share; use non-negative numbers"
    if not any(v > 0 for v in values):
        return "tensor-split-invalid", f"'{text}' gives every GPU a zero share; give at least one a positive share"
    return None


def parse_gpu_layers(text: str) -> str | None:
    """The normalised annotation value ('all', 'auto' or digits), or None if invalid."""
    value = text.strip().lower()
    if value in ("all", "auto") or is_whole_number(value):
        return str(int(value)) if is_whole_number(value) else value
    return None


def gpu_layers_accepted(text: str) -> bool:
    """What llama-server's -ngl parser takes: 'auto', 'all' or an integer (std::stoi; -1 is auto)."""
    value = text.strip()
    return value in ("auto", "all") or bool(re.fullmatch(r"[+-]?[0-9]+", value))


GpuSource = Literal["none", "limits", "annotation", "claim"]


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class GpuCount:
    """How many GPUs the llama.cpp container gets, and where that is written."""

    count: int | None  # None: not known at admission (a claim with allocationMode All, say)
    source: GpuSource
    resource: str | None = None  # the extended resource; for claims, the device class
    claims: tuple[str, ...] = ()
    claim_objects: tuple[str, ...] = ()
    set_count: bool = False  # write the count into limits/requests (the annotation decided it)
    unknown_reason: str | None = None

    def describe(self) -> str:
        """e.g. '2 nvidia.com/gpu', or '2 GPUs from claim gpu (ResourceClaimTemplate llama-gpus)'."""
        if self.source == "claim":
            amount = "GPUs" if self.count is None else f"{self.count} GPU{'s' if self.count != 1 else ''}"
            return f"{amount} from claim {', '.join(self.claims)} ({', '.join(self.claim_objects)})"
        return f"{self.count} {self.resource}"


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class ShardingPlan:
    """What the llama.cpp container gets. Settings keys are llamacpp option keys."""

    container: str
    index: int
    gpus: GpuCount
    channel: Channel
    gpu_layers: str | None
    split_mode: str | None
    tensor_split: str | None
    toleration: str | None = None  # taint key to tolerate
    node_expressions: tuple[dict[str, Any], ...] = ()
    products: tuple[str, ...] = ()
    router: bool = False
    argv_understood: bool = True

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


ClaimLookup = Literal["none", "found", "missing"]


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Planning:
    target: ContainerReading | None
    gpus: GpuCount | None  # None when undecidable (conflicting counts, a bad annotation)
    plan: ShardingPlan | None
    problems: tuple[Violation, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    claim_lookup: ClaimLookup = "none"  # whether the container's claims were found in the snapshot


NOT_OPTED_IN = Planning(None, None, None)


def _annotated_count(value: str | None, key: str) -> tuple[int | None, list[Violation]]:
    if value is None:
        return None, []
    count = parse_quantity(value)
    if count is None:
        return None, [
            Violation(
                "bad-annotation",
                f"gpu-count '{value}' is not a whole number of GPUs; write a number, e.g. \"2\"",
                f"metadata.annotations[{key}]",
            )
        ]
    return count, []


def decide_count(reading: PodReading, target: ContainerReading, config: Config) -> tuple[GpuCount | None, list[Violation], list[str]]:
    """(the GPU count, problems, warnings) -- the count is None when a problem stops the decision."""
    ask = target.gpus
    key = config.annotation("gpu-count")
    annotated, problems = _annotated_count(reading.annotation(config, "gpu-count"), key)
    where = container_field(target.index, "resources")
    resource = ask.resource or config.gpu_resources[0]
    for raw, parsed, kind in ((ask.limit_raw, ask.limit, "limits"), (ask.request_raw, ask.request, "requests")):
        if raw is not None and parsed is None:
            problems.append(
                Violation(
                    "bad-gpu-quantity",
                    f"{kind}[{resource}] '{raw}' is not a whole number of GPUs; use a whole number, e.g. 2",
                    f"{where}.{kind}",
                )
            )
    if problems:
        return None, problems, []
    claims, declared = ask.claims, ask.from_limits
    if declared and claims.claims:
        message = f"gets {declared} {resource} from limits and GPUs from claim {', '.join(claims.claims)}; ask for GPUs one way"
        return None, [Violation("ambiguous-gpu-source", message, where)], []
    if claims.claims or (claims.missing and not declared):
        return _claim_count(reading, target, annotated, key)
    # A claim not known yet beside a GPU limit is most often not a GPU (a NIC, say): the limit counts.
    warnings = [f"gpu-shard: {', '.join(claims.missing)} not known (yet): counted the {resource} limit only"] if claims.missing else []
    count, problems = _limits_count(declared, annotated, resource, key, where, config)
    return count, problems, warnings


def _claim_count(
    reading: PodReading, target: ContainerReading, annotated: int | None, key: str
) -> tuple[GpuCount | None, list[Violation], list[str]]:
    claims = target.gpus.claims
    if claims.missing:
        # Fail open: the template may be created in the same apply, after this object.
        why = "not known (yet)" if reading.claims_synced else "not looked up: the DRA objects are not synced"
        return None, [], [f"gpu-shard: {', '.join(claims.missing)} {why}: admitted unchanged, no GPU flags injected"]
    count = GpuCount(claims.count, "claim", claims.device_classes[0], claims.claims, claims.objects, unknown_reason=claims.unknown_reason)
    if annotated is None:
        return count, [], []
    if claims.count is None:  # the scheduler decides; the annotation says how many the user expects
        return replace(count, count=annotated, unknown_reason=None), [], []
    if annotated == claims.count:
        return count, [], []
    message = (
        f"annotation {key}={annotated} but claim {', '.join(claims.claims)} gives {claims.count} GPUs, "
        "and a claim cannot be rewritten; make them equal or drop the annotation"
    )
    return None, [Violation("count-conflict", message, container_field(target.index, "resources"))], []


def _limits_count(
    declared: int | None, annotated: int | None, resource: str, key: str, where: str, config: Config
) -> tuple[GpuCount | None, list[Violation]]:
    if annotated is None:
        return GpuCount(declared or 0, "limits", resource), []
    if declared is None or declared == annotated:
        return GpuCount(annotated, "annotation", resource, set_count=declared is None and annotated > 0), []
    if config.precedence == "annotation":
        return GpuCount(annotated, "annotation", resource, set_count=True), []
    message = f"annotation {key}={annotated} but {resource} limit is {declared}; make them equal or drop one"
    return None, [Violation("count-conflict", message, where)]


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Asked:
    """What the sharding annotations ask for (``gpu_layers`` None: llama.cpp's --fit decides)."""

    gpu_layers: str | None
    split_mode: str | None
    tensor_split: str | None
    products: tuple[str, ...]


def read_annotations(reading: PodReading, config: Config, gpus: int | None) -> tuple[Asked, list[Violation]]:
    """The sharding annotations, checked: n-gpu-layers, split-mode, tensor-split, gpu-product."""
    problems: list[Violation] = []

    def where(name: str) -> str:
        return f"metadata.annotations[{config.annotation(name)}]"

    layers = reading.annotation(config, "n-gpu-layers")
    gpu_layers: str | None = config.default_gpu_layers
    if layers is not None:
        gpu_layers = parse_gpu_layers(layers)
        if gpu_layers is None:
            problems.append(
                Violation(
                    "bad-annotation",
                    f"n-gpu-layers '{layers}' is not a layer count; use a whole number, 'all' or 'auto'",
                    where("n-gpu-layers"),
                )
            )
    split_mode = reading.annotation(config, "split-mode")
    if split_mode is not None and split_mode not in SPLIT_MODES:
        problems.append(
            Violation(
                "split-mode-unknown",
                f"split-mode '{split_mode}' is not a split mode; use one of {', '.join(SPLIT_MODES)}",
                where("split-mode"),
            )
        )
    tensor_split = reading.annotation(config, "tensor-split")
    if tensor_split is not None:
        problem = tensor_split_problem(tensor_split)
        if problem is not None:
            problems.append(Violation(problem[0], problem[1], where("tensor-split")))
        elif gpus is not None and (count := len(parse_tensor_split(tensor_split) or ())) != gpus:
            problems.append(
                Violation(
                    "tensor-split-arity",
                    f"tensor-split '{tensor_split}' has {count} values for {gpus} GPUs; give exactly {gpus}",
                    where("tensor-split"),
                )
            )
    product_text = reading.annotation(config, "gpu-product")
    products: tuple[str, ...] = ()
    if product_text is not None:
        products = tuple(p.strip() for p in product_text.split(",") if p.strip())
        if not products or not all(_LABEL_VALUE.match(p) for p in products):
            problems.append(
                Violation(
                    "bad-annotation",
                    f"gpu-product '{product_text}' is not a list of node label values; use e.g. NVIDIA-L4 or NVIDIA-L4,NVIDIA-A10G",
                    where("gpu-product"),
                )
            )
    return Asked(None if gpu_layers == "auto" else gpu_layers, split_mode, tensor_split, products), problems


def _uncounted_warnings(target: ContainerReading, config: Config) -> list[str]:
    ask = target.gpus
    warnings = [
        f"gpu-shard: {name} is not counted as a GPU, so nothing is injected; add it to --gpu-resources (GSW_GPU_RESOURCES) "
        "or --gpu-device-classes to shard it"
        for name in ask.lookalikes
    ]
    if target.device_access and not ask.any:
        warnings.append(
            f"gpu-shard: container {target.name} reaches devices without asking for them ({', '.join(target.device_access)}); "
            "ask for GPUs as resources or claims to shard them"
        )
    return warnings


def plan_pod(reading: PodReading, config: Config) -> Planning:
    """Everything the mutation needs to know, or why it cannot proceed."""
    if not reading.opted_in:
        return NOT_OPTED_IN
    target = reading.target
    if target is None:
        return Planning(None, None, None, reading.problems)
    count, problems, warnings = decide_count(reading, target, config)
    warnings += _uncounted_warnings(target, config)
    claims = target.gpus.claims
    lookup: ClaimLookup = "missing" if claims.missing else "found" if claims.claims else "none"
    annotated, annotation_problems = read_annotations(reading, config, count.count if count else None)
    problems += annotation_problems
    if count is not None and count.count is not None and count.count > config.max_gpus_per_node:
        problems.append(
            Violation(
                "too-many-gpus",
                f"{count.count} GPUs asked, at most {config.max_gpus_per_node} fit a node; use fewer GPUs",
                container_field(target.index, "resources"),
            )
        )
    if problems or count is None:
        return Planning(target, count, None, tuple(problems), tuple(warnings), lookup)
    if count.count == 0:
        return Planning(target, count, None, (), tuple(warnings), lookup)

    gpus = count.count
    split_mode = annotated.split_mode
    tensor_split = annotated.tensor_split
    if gpus is None:
        split_mode, tensor_split = None, None
        warnings.append(
            f"gpu-shard: GPU count unknown until the scheduler allocates ({count.unknown_reason}): --n-gpu-layers only, no split"
        )
    elif gpus >= 2:
        split_mode = split_mode or "layer"
        if tensor_split is None and gpus <= MAX_TENSOR_SPLIT_VALUES:
            tensor_split = ",".join(["1"] * gpus)
    else:
        split_mode, tensor_split = None, None
    if split_mode == "none":
        tensor_split = None

    products = annotated.products
    if count.source == "claim" and products:
        warnings.append("gpu-shard: gpu-product is ignored for DRA claims; select the product in the claim's CEL selector")
    toleration, expressions = placement(count, target, products, config)
    router = target.router
    channel: Channel = "env" if router else (target.launch.channel if target.launch else "env")
    plan = ShardingPlan(
        container=target.name,
        index=target.index,
        gpus=count,
        channel=channel,
        gpu_layers=annotated.gpu_layers,
        split_mode=split_mode,
        tensor_split=tensor_split,
        toleration=toleration,
        node_expressions=tuple(expressions),
        products=products,
        router=router,
        argv_understood=target.launch.recognised if target.launch else False,
    )
    return Planning(target, count, plan, (), tuple(warnings), lookup)


def placement(
    count: GpuCount, target: ContainerReading, products: tuple[str, ...], config: Config
) -> tuple[str | None, list[dict[str, Any]]]:
    """(taint key to tolerate, required node expressions) for a pod holding ``count`` GPUs.

    The scheduler picks a DRA pod's node from its claim's allocation, not from node labels:
    no expressions, only the vendor's conventional taint. A pod with no GPU gets neither.
    """
    if count.count == 0:
        return None, []
    if count.source == "claim":
        return conventional_taint(target.gpus.vendor), []
    expressions = gpu_node_expressions(count.count or 0, products, count.resource or "", _needs_cuda13_driver(target.image), config)
    return count.resource, expressions


def _needs_cuda13_driver(image: Image) -> bool:
    return image.backend == "cuda13"
