"""The validating rules: every reason a GPU pod can never work, as violations.

Rules judge the pod as it will run, i.e. after :func:`webhook.mutation.mutate`;
a pod the mutation fixes is therefore never rejected. Each rule is a small
function ``(context) -> list[Violation]`` listed in :data:`RULES`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from webhook.config import Config
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
    ContainerSettings,
    Setting,
    env_value,
    read_settings,
)
from webhook.plan import (
    MIG_PREFIX,
    Planning,
    annotations_of,
    as_dict,
    as_list,
    container_field,
    gpu_quantities,
    is_opted_in,
    is_whole_number,
    parse_gpu_layers,
    parse_quantity,
    parse_tensor_split,
    plan_pod,
    tensor_split_problem,
)
from webhook.violation import Violation

# Values of GPU options that do not pretend the container has a GPU.
_CPU_SAFE = {GPU_LAYERS: "0", DEVICE: "none", SPLIT_MODE: "none"}
_ANNOTATED = {GPU_LAYERS: "n-gpu-layers", SPLIT_MODE: "split-mode", TENSOR_SPLIT: "tensor-split"}


@dataclass(frozen=True)
class Context:
    pod: Mapping[str, Any]
    config: Config
    index: int
    container: Mapping[str, Any]
    settings: ContainerSettings
    gpus: int

    def where(self, setting: Setting) -> str:
        if setting.source == "env":
            return container_field(self.index, f"env[{setting.spelling}]")
        return container_field(self.index, "args" if self.container.get("args") else "command")


def same_value(key: str, a: str, b: str) -> bool:
    if key == GPU_LAYERS:
        return parse_gpu_layers(a) == parse_gpu_layers(b)
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
        for s in ctx.settings.inline
        if s.key in GPU_ONLY_KEYS
    ]


def missing_values(ctx: Context) -> list[Violation]:
    return [
        Violation("missing-value", f"'{s.spelling}' ends the argv without its value; llama-server will not start", ctx.where(s))
        for s in ctx.settings.incomplete
    ]


def gpu_flags_without_gpus(ctx: Context) -> list[Violation]:
    if ctx.gpus != 0:
        return []
    found = []
    for source in (ctx.settings.argv, ctx.settings.env):
        for key in GPU_ONLY_KEYS:
            setting = source.get(key)
            if setting is None or (setting.value or "").strip().lower() == _CPU_SAFE.get(key):
                continue
            found.append(
                Violation(
                    "gpu-flags-without-gpus",
                    f"{setting.spelling} is set but the container asks for no GPU; "
                    f"add resources.limits[{ctx.config.gpu_resources[0]}] or remove it",
                    ctx.where(setting),
                )
            )
    return found


def tensor_split(ctx: Context) -> list[Violation]:
    setting = ctx.settings.effective(TENSOR_SPLIT)
    if ctx.gpus == 0 or setting is None or setting.value is None:
        return []
    problem = tensor_split_problem(setting.value)
    if problem is not None:
        return [Violation(problem[0], f"{setting.spelling} {problem[1]}", ctx.where(setting))]
    count = len(parse_tensor_split(setting.value) or ())
    if count == ctx.gpus:
        return []
    if ctx.gpus > MAX_TENSOR_SPLIT_VALUES:
        fix = f"remove it: over {MAX_TENSOR_SPLIT_VALUES} GPUs llama.cpp splits evenly by itself"
    else:
        fix = f"give exactly {ctx.gpus} values, e.g. {','.join(['1'] * ctx.gpus)}"
    return [
        Violation(
            "tensor-split-arity", f"{setting.spelling} '{setting.value}' has {count} values for {ctx.gpus} GPUs; {fix}", ctx.where(setting)
        )
    ]


def split_mode(ctx: Context) -> list[Violation]:
    setting = ctx.settings.effective(SPLIT_MODE)
    if ctx.gpus == 0 or setting is None or setting.value is None:
        return []
    mode = setting.value.strip().lower()
    if mode not in SPLIT_MODES:
        return [
            Violation(
                "split-mode-unknown", f"{setting.spelling} '{setting.value}' must be one of {', '.join(SPLIT_MODES)}", ctx.where(setting)
            )
        ]
    if mode == "none" and ctx.gpus >= 2:
        return [
            Violation(
                "split-mode-none-multi-gpu",
                f"{setting.spelling} none uses 1 of {ctx.gpus} GPUs; use layer (or ask for 1 GPU)",
                ctx.where(setting),
            )
        ]
    if mode == "tensor" and ctx.gpus >= 2:
        found = []
        fit = ctx.settings.effective(FIT)
        if fit is None or (fit.value is not None and fit.value.strip().lower() != "off"):
            found.append(Violation("tensor-mode-fit", "split mode tensor needs --fit off", ctx.where(fit or setting)))
        attention = ctx.settings.effective(FLASH_ATTN)
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
    setting = ctx.settings.effective(MAIN_GPU)
    if ctx.gpus == 0 or setting is None or setting.value is None:
        return []
    text = setting.value.strip()
    if is_whole_number(text) and int(text) < ctx.gpus:
        return []
    return [Violation("main-gpu-out-of-range", f"{setting.spelling} '{text}' is not a GPU index of 0..{ctx.gpus - 1}", ctx.where(setting))]


def device_count(ctx: Context) -> list[Violation]:
    setting = ctx.settings.effective(DEVICE)
    if ctx.gpus == 0 or setting is None or setting.value is None:
        return []
    names = [] if setting.value.strip().lower() == "none" else [d for d in setting.value.split(",") if d.strip()]
    if len(names) == ctx.gpus:
        return []
    return [
        Violation(
            "device-count-mismatch",
            f"{setting.spelling} '{setting.value}' names {len(names)} devices for {ctx.gpus} GPUs; list {ctx.gpus} or remove it",
            ctx.where(setting),
        )
    ]


def visible_devices(ctx: Context) -> list[Violation]:
    value = env_value(ctx.container.get("env"), "CUDA_VISIBLE_DEVICES")
    if ctx.gpus == 0 or value is None or value.strip().lower() == "all":
        return []
    count = len([d for d in value.split(",") if d.strip()])
    if count == ctx.gpus:
        return []
    return [
        Violation(
            "cuda-visible-devices-mismatch",
            f"CUDA_VISIBLE_DEVICES '{value}' shows {count} of {ctx.gpus} GPUs; remove it (the device plugin sets visibility)",
            container_field(ctx.index, "env[CUDA_VISIBLE_DEVICES]"),
        )
    ]


def annotation_conflicts(ctx: Context) -> list[Violation]:
    annotations = annotations_of(ctx.pod)
    found = []
    for key, name in _ANNOTATED.items():
        asked = annotations.get(ctx.config.annotation(name))
        setting = ctx.settings.effective(key)
        if asked is None or setting is None or setting.value is None or same_value(key, str(asked), setting.value):
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
    for key, from_argv in ctx.settings.argv.items():
        from_env = ctx.settings.env.get(key)
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
    gpu_flags_without_gpus,
    tensor_split,
    split_mode,
    main_gpu,
    device_count,
    visible_devices,
    annotation_conflicts,
    flag_conflicts,
)


def resource_violations(pod: Mapping[str, Any], config: Config) -> list[Violation]:
    """GPU resource shapes Kubernetes or the device plugin cannot honour, in any container."""
    found = []
    for index, container in enumerate(as_list(as_dict(pod.get("spec")).get("containers"))):
        if not isinstance(container, dict):
            continue
        resource, raw_limit, raw_request = gpu_quantities(container, config)
        limit, request = parse_quantity(raw_limit), parse_quantity(raw_request)
        where = container_field(index, "resources")
        if limit is not None and request is not None and limit != request:
            found.append(
                Violation(
                    "requests-limits-mismatch",
                    f"requests[{resource}]={request} but limits[{resource}]={limit}; set both to the same number",
                    where,
                )
            )
        resources = as_dict(container.get("resources"))
        names = set(as_dict(resources.get("limits"))) | set(as_dict(resources.get("requests")))
        if (limit or request) and any(name.startswith(MIG_PREFIX) for name in names):
            found.append(Violation("mixed-mig", f"asks for whole {resource} and MIG slices; use one or the other", where))
    return found


def violations(pod: Mapping[str, Any], config: Config, planning: Planning | None = None) -> list[Violation]:
    """Everything wrong with an opted-in pod as it will run; [] for pods that did not opt in.

    ``planning`` may be passed when it was made for this very pod (not for the pod
    before a mutation changed it), to save planning twice.
    """
    if not is_opted_in(pod, config):
        return []
    planning = planning or plan_pod(pod, config)
    found = list(planning.problems)
    found.extend(v for v in resource_violations(pod, config) if v not in found)
    target = planning.target
    if target is None or planning.gpus is None:
        return found
    container = as_list(as_dict(pod.get("spec")).get("containers"))[target.index]
    settings = read_settings(target.launch, container.get("env"))
    ctx = Context(pod, config, target.index, container, settings, planning.gpus)
    for rule in RULES:
        found.extend(rule(ctx))
    return found
