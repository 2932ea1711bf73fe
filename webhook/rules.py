"""The validating rules: every reason a GPU pod can never work, as violations.

Rules judge the reading of the pod as it will run, i.e. after
:func:`webhook.mutation.mutate`; a pod the mutation fixes is therefore never
rejected. Each rule is a small function ``(context) -> list[Violation]`` listed in
:data:`RULES`. A value the kubelet fills in from a Secret or ConfigMap is never a
reason to deny: rules only judge what they can see.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from webhook.config import Config
from webhook.expansion import read_environment
from webhook.llamacpp import (
    DEVICE,
    FIT,
    FLASH_ATTN,
    GPU_LAYERS,
    GPU_ONLY_KEYS,
    MAIN_GPU,
    MAX_TENSOR_SPLIT_VALUES,
    SPLIT_MODE,
    SPLIT_MODES,
    TENSOR_SPLIT,
    Setting,
)
from webhook.objects import as_dict, as_list, container_field, is_whole_number
from webhook.plan import GpuCount, Planning, gpu_layers_accepted, parse_gpu_layers, parse_tensor_split, tensor_split_problem
from webhook.reading import ContainerReading, PodReading
from webhook.violation import Violation

# Values of GPU options that do not pretend the container has a GPU (-ngl -1 is llama.cpp's "auto", its default).
_CPU_SAFE = {GPU_LAYERS: ("0", "auto", "-1"), DEVICE: ("none",), SPLIT_MODE: ("none",)}
_ANNOTATED = {GPU_LAYERS: "n-gpu-layers", SPLIT_MODE: "split-mode", TENSOR_SPLIT: "tensor-split"}
# NVIDIA_VISIBLE_DEVICES values that show no GPU (the container toolkit's "void" and "none").
_NO_DEVICES = ("", "void", "none")


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Context:
    reading: PodReading  # of the pod as it will run
    target: ContainerReading
    count: GpuCount
    config: Config

    @property
    def gpus(self) -> int | None:
        return self.count.count

    def where(self, setting: Setting) -> str:
        if setting.source == "env":
            return container_field(self.target.index, f"env[{setting.spelling}]")
        return container_field(self.target.index, "args" if self.target.container.get("args") else "command")


def same_value(key: str, a: str, b: str) -> bool:
    if key == GPU_LAYERS:
        left, right = parse_gpu_layers(a), parse_gpu_layers(b)
        return left == right if left is not None and right is not None else a.strip() == b.strip()
    if key == TENSOR_SPLIT:
        return parse_tensor_split(a) == parse_tensor_split(b)
    return a.strip().lower() == b.strip().lower()


def inline_values(ctx: Context) -> list[Violation]:
    return [
        Violation(
            "inline-value",
            f"'{s.spelling}={s.value}' is refused by llama-server; write '{s.spelling} {s.value}' as two tokens",
            ctx.where(s),
        )
        for s in ctx.target.settings.inline
        if s.key in GPU_ONLY_KEYS
    ]


def missing_values(ctx: Context) -> list[Violation]:
    return [
        Violation("missing-value", f"'{s.spelling}' ends the argv without its value; llama-server will not start", ctx.where(s))
        for s in ctx.target.settings.incomplete
    ]


def repeated_entrypoint(ctx: Context) -> list[Violation]:
    launch, image = ctx.target.launch, ctx.target.image
    if launch is None or launch.repeated_entrypoint is None or image.entrypoint is None:
        return []
    return [
        Violation(
            "repeated-entrypoint",
            f"the image already starts {image.entrypoint[0]}, so '{launch.repeated_entrypoint}' reaches it as an argument it refuses; "
            f"drop it from args, or set command: [{launch.repeated_entrypoint}]",
            container_field(ctx.target.index, "args"),
        )
    ]


def gpu_layers_value(ctx: Context) -> list[Violation]:
    setting = ctx.target.settings.effective(GPU_LAYERS)
    if setting is None or setting.value is None or gpu_layers_accepted(setting.value):
        return []
    return [
        Violation(
            "gpu-layers-invalid",
            f"{setting.spelling} '{setting.value}' is not a number of layers, 'auto' or 'all', and llama-server will not start; "
            "use one of those (a $(VAR) of an undefined variable stays literal)",
            ctx.where(setting),
        )
    ]


def gpu_flags_without_gpus(ctx: Context) -> list[Violation]:
    target = ctx.target
    if ctx.gpus != 0 or target.gpus.lookalikes or target.device_access:
        return []  # GPUs the webhook does not count: a warning says so, no denial
    found = []
    for source in (target.settings.argv, target.settings.env):
        for key in GPU_ONLY_KEYS:
            setting = source.get(key)
            if setting is None or setting.value is None or setting.value.strip().lower() in _CPU_SAFE.get(key, ()):
                continue
            found.append(
                Violation(
                    "gpu-flags-without-gpus",
                    f"{setting.spelling} is set but the container asks for no GPU; "
                    f"add resources.limits[{ctx.config.gpu_resources[0]}] (or a DRA claim) or remove it",
                    ctx.where(setting),
                )
            )
    return found


def image_backend(ctx: Context) -> list[Violation]:
    image, ask = ctx.target.image, ctx.target.gpus
    vendors = image.vendors
    if vendors is None or (not ctx.gpus and ctx.count.source != "claim"):
        return []
    where = container_field(ctx.target.index, "image")
    held = ctx.count.describe()
    if not vendors:
        return [
            Violation(
                "cpu-image-with-gpus",
                f"{image.reference} is llama.cpp's CPU build: the pod would hold {held} and run on the CPU; "
                f"use :{image.suggestion(ask.vendor or 'nvidia')}",
                where,
            )
        ]
    vendor = ask.vendor
    if vendor is None or vendor in vendors:
        return []
    return [
        Violation(
            "image-backend-mismatch",
            f"{image.reference} is the {image.backend} build, which cannot drive {vendor} GPUs ({held}); "
            f"use :{image.suggestion(vendor)} or a -vulkan tag",
            where,
        )
    ]


def tensor_split(ctx: Context) -> list[Violation]:
    setting = ctx.target.settings.effective(TENSOR_SPLIT)
    gpus = ctx.gpus
    if not gpus or setting is None or setting.value is None:
        return []
    problem = tensor_split_problem(setting.value)
    if problem is not None:
        return [Violation(problem[0], f"{setting.spelling} {problem[1]}", ctx.where(setting))]
    count = len(parse_tensor_split(setting.value) or ())
    if count == gpus:
        return []
    if gpus > MAX_TENSOR_SPLIT_VALUES:
        fix = f"remove it: over {MAX_TENSOR_SPLIT_VALUES} GPUs llama.cpp splits evenly by itself"
    else:
        fix = f"give exactly {gpus} values, e.g. {','.join(['1'] * gpus)}"
    return [
        Violation(
            "tensor-split-arity", f"{setting.spelling} '{setting.value}' has {count} values for {gpus} GPUs; {fix}", ctx.where(setting)
        )
    ]


def split_mode(ctx: Context) -> list[Violation]:
    setting = ctx.target.settings.effective(SPLIT_MODE)
    gpus = ctx.gpus
    if not gpus or setting is None or setting.value is None:
        return []
    mode = setting.value.strip().lower()
    if mode not in SPLIT_MODES:
        return [
            Violation(
                "split-mode-unknown",
                f"{setting.spelling} '{setting.value}' is not a split mode; use one of {', '.join(SPLIT_MODES)}",
                ctx.where(setting),
            )
        ]
    if mode == "none" and gpus >= 2:
        return [
            Violation(
                "split-mode-none-multi-gpu",
                f"{setting.spelling} none uses 1 of {gpus} GPUs; use layer (or ask for 1 GPU)",
                ctx.where(setting),
            )
        ]
    if mode == "tensor" and gpus >= 2:
        found = []
        fit = ctx.target.settings.effective(FIT)
        if fit is None or (fit.value is not None and fit.value.strip().lower() != "off"):
            found.append(
                Violation(
                    "tensor-mode-fit",
                    "split mode tensor needs --fit off; set --fit off or use another split mode",
                    ctx.where(fit or setting),
                )
            )
        attention = ctx.target.settings.effective(FLASH_ATTN)
        if attention is not None and (attention.value or "").strip().lower() == "off":
            found.append(
                Violation(
                    "tensor-mode-flash-attn",
                    f"split mode tensor needs flash attention; drop {attention.spelling} off",
                    ctx.where(attention),
                )
            )
        return found
    return []


def main_gpu(ctx: Context) -> list[Violation]:
    setting = ctx.target.settings.effective(MAIN_GPU)
    gpus = ctx.gpus
    if not gpus or setting is None or setting.value is None:
        return []
    text = setting.value.strip()
    if is_whole_number(text) and int(text) < gpus:
        return []
    return [
        Violation(
            "main-gpu-out-of-range",
            f"{setting.spelling} '{text}' is not a GPU index of 0..{gpus - 1}; use one or remove it",
            ctx.where(setting),
        )
    ]


def device_count(ctx: Context) -> list[Violation]:
    setting = ctx.target.settings.effective(DEVICE)
    gpus = ctx.gpus
    if not gpus or setting is None or setting.value is None:
        return []
    names = [] if setting.value.strip().lower() == "none" else [d for d in setting.value.split(",") if d.strip()]
    if len(names) == gpus:
        return []
    return [
        Violation(
            "device-count-mismatch",
            f"{setting.spelling} '{setting.value}' names {len(names)} devices for {gpus} GPUs; list {gpus} or remove it",
            ctx.where(setting),
        )
    ]


def visible_count(name: str, value: str) -> int | None:
    """How many devices a visibility variable shows; None when its syntax does not say (a type, '*')."""
    text = value.strip()
    if name == "ONEAPI_DEVICE_SELECTOR":
        devices: set[str] = set()
        for term in text.split(";"):
            if not term.strip() or term.strip().startswith("!"):
                continue
            _, _, selected = term.partition(":")
            for device in selected.split(","):
                device = device.strip()
                if not device.split(".")[0].isdigit():
                    return None  # '*', 'gpu', 'cpu': not a count
                devices.add(device.split(".")[0])
        return len(devices)
    if name == "CUDA_VISIBLE_DEVICES" and text.lower() == "all":
        return None
    roots = {item.strip().split(".")[0] for item in text.split(",") if item.strip()}
    return len(roots)


def visible_devices(ctx: Context) -> list[Violation]:
    gpus = ctx.gpus
    if not gpus:
        return []
    found = []
    for name, value in ctx.target.visibility():
        count = visible_count(name, value)
        if count is None or count == gpus:
            continue
        code = "cuda-visible-devices-mismatch" if name == "CUDA_VISIBLE_DEVICES" else "visible-devices-mismatch"
        found.append(
            Violation(
                code,
                f"{name} '{value}' shows {count} of {gpus} GPUs; remove it (the device plugin or DRA driver sets visibility)",
                container_field(ctx.target.index, f"env[{name}]"),
            )
        )
    return found


def annotation_conflicts(ctx: Context) -> list[Violation]:
    found = []
    for key, name in _ANNOTATED.items():
        asked = ctx.reading.annotation(ctx.config, name)
        setting = ctx.target.settings.effective(key)
        if asked is None or setting is None or setting.value is None or same_value(key, asked, setting.value):
            continue
        found.append(
            Violation(
                "annotation-conflict",
                f"annotation {ctx.config.annotation(name)}={asked} but {setting.spelling} is '{setting.value}'; keep one",
                ctx.where(setting),
            )
        )
    return found


def flag_conflicts(ctx: Context) -> list[Violation]:
    found = []
    for key, from_argv in ctx.target.settings.argv.items():
        from_env = ctx.target.settings.env.get(key)
        if from_env is None or from_env.value is None or from_argv.value is None:
            continue
        if not same_value(key, from_argv.value, from_env.value):
            found.append(
                Violation(
                    "flag-conflict",
                    f"{from_argv.spelling} '{from_argv.value}' overrides {from_env.spelling}='{from_env.value}'; keep one",
                    ctx.where(from_env),
                )
            )
    return found


RULES: tuple[Callable[[Context], list[Violation]], ...] = (
    inline_values,
    missing_values,
    repeated_entrypoint,
    gpu_layers_value,
    gpu_flags_without_gpus,
    image_backend,
    tensor_split,
    split_mode,
    main_gpu,
    device_count,
    visible_devices,
    annotation_conflicts,
    flag_conflicts,
)


def resource_violations(reading: PodReading) -> list[Violation]:
    """GPU resource shapes Kubernetes or the device plugin cannot honour, in any container."""
    found = []
    for container in reading.containers:
        ask = container.gpus
        limit, request = ask.limit, ask.request
        where = container_field(container.index, "resources")
        if limit is not None and request is not None and limit != request:
            found.append(
                Violation(
                    "requests-limits-mismatch",
                    f"requests[{ask.resource}]={request} but limits[{ask.resource}]={limit}; set both to the same number",
                    where,
                )
            )
        if (limit or request) and ask.mig:
            found.append(Violation("mixed-mig", f"asks for whole {ask.resource} and MIG slices; use one or the other", where))
    return found


def device_plugin_visibility(reading: PodReading) -> list[Violation]:
    """NVIDIA_VISIBLE_DEVICES set by hand shows a container GPUs it was not allocated."""
    spec = as_dict(reading.pod.get("spec"))
    found = []
    for field, containers in (("containers", spec.get("containers")), ("initContainers", spec.get("initContainers"))):
        for index, container in enumerate(as_list(containers)):
            if not any(as_dict(v).get("name") == "NVIDIA_VISIBLE_DEVICES" for v in as_list(as_dict(container).get("env"))):
                continue  # the usual case, without reading the whole environment
            value = read_environment(as_dict(container)).literal("NVIDIA_VISIBLE_DEVICES")
            if value is None or value.strip().lower() in _NO_DEVICES:
                continue
            found.append(
                Violation(
                    "nvidia-visible-devices-set",
                    f"NVIDIA_VISIBLE_DEVICES '{value}' lets the container see GPUs it was not allocated; "
                    "remove it (the device plugin sets it to the allocated GPUs)",
                    f"spec.{field}[{index}].env[NVIDIA_VISIBLE_DEVICES]",
                )
            )
    return found


def violations(reading: PodReading, planning: Planning, config: Config) -> list[Violation]:
    """Everything wrong with an opted-in pod as it will run; [] for pods that did not opt in.

    ``reading`` is of the pod as it will run; ``planning`` is the decision made for it
    (the GPU count does not change in the mutation).
    """
    if not reading.opted_in:
        return []
    found = list(planning.problems)
    found.extend(v for v in [*resource_violations(reading), *device_plugin_visibility(reading)] if v not in found)
    target = reading.target
    if target is None or planning.gpus is None:
        return found
    ctx = Context(reading, target, planning.gpus, config)
    for rule in RULES:
        found.extend(rule(ctx))
    return found
