"""The real-world corpus (tests/realworld/): manifests people run, and what the webhook must do with each.

Every file is a manifest from a public repository (its header names repository, path
and commit) with only the opt-in label added. :data:`CORPUS` states, per file, the
verdict and what the llama.cpp container must run with; :func:`variant` makes the
2- and 4-GPU versions of each GPU manifest (the extended-resource limit, or the
count of the ResourceClaimTemplate in the same file), whose verdicts are stated too.
The unit tier, the server tier and the e2e tier (the real llama-server) all read it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from webhook.claims import claim_objects_from
from webhook.cluster import Cluster
from webhook.objects import as_dict, as_list
from webhook.workloads import TEMPLATE_PATHS

DIRECTORY = Path(__file__).resolve().parent / "realworld"


@dataclass(frozen=True)
class Verdict:
    denied: frozenset[str] = frozenset()
    changed: bool = True  # the pod gets anything at all (flags, toleration, status)
    status: tuple[tuple[str, Any], ...] = ()  # status annotation fields ("origin.gpuLayers" for nested ones)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RealWorld:
    file: str
    verdict: Verdict
    variants: dict[int, Verdict] = field(default_factory=dict)  # GPU count -> verdict of that variant
    not_runnable: str | None = None  # why the e2e tier cannot start it with upstream llama-server

    def documents(self) -> list[dict[str, Any]]:
        return [d for d in yaml.safe_load_all((DIRECTORY / self.file).read_text()) if isinstance(d, dict)]


def user(field_name: str, value: str, where: str) -> tuple[tuple[str, Any], ...]:
    return ((field_name, value), (f"origin.{field_name}", f"user:{where}"))


def webhook(field_name: str, value: str, where: str) -> tuple[tuple[str, Any], ...]:
    return ((field_name, value), (f"origin.{field_name}", f"webhook:{where}"))


SPLIT = webhook("splitMode", "layer", "--split-mode")
NO_LLAMA = Verdict(denied=frozenset({"no-llama-container"}), changed=False)

CORPUS: tuple[RealWorld, ...] = (
    RealWorld(
        "asm582--learn-quantization--llama-server.yaml",
        Verdict(status=(("gpus", 1), *user("gpuLayers", "99", "--n-gpu-layers"), ("splitMode", None))),
        {2: Verdict(status=(*SPLIT, *webhook("tensorSplit", "1,1", "--tensor-split"))), 4: Verdict(status=(("tensorSplit", "1,1,1,1"),))},
    ),
    RealWorld(
        "ebongard--renfield--llama-server.yaml",
        Verdict(status=(("gpus", 2), *user("gpuLayers", "99", "-ngl"), *SPLIT, *user("tensorSplit", "16,16", "--tensor-split"))),
        {4: Verdict(denied=frozenset({"tensor-split-arity"}))},
    ),
    RealWorld("janos-gyorgy--homelab-ai-inference-starter--llama-server.yaml", Verdict(changed=False)),
    RealWorld("fruitiex--homelab--llama-cpp.yaml", Verdict(changed=False)),
    RealWorld("israa-benrjab--genai-platform--llama-cpp.yaml", Verdict(changed=False)),
    RealWorld(
        "antoniolago--lag0-fleet-manifests--llama-cpp.yaml",
        NO_LLAMA,  # a home-built image whose entrypoint is not known: the message says to name the container
    ),
    RealWorld(
        "kush-gupt--ramalama-k8s--qwen-4b.yaml",
        Verdict(changed=False),  # -ngl -1 is llama.cpp's 'auto', not a GPU claim; no GPU asked
        not_runnable="the image's own llama-server takes --log-colors without a value; upstream's needs one",
    ),
    RealWorld(
        "kcirtapfromspace--gemma4--llama-server.yaml",
        Verdict(changed=False, warnings=("reaches devices without asking for them",)),
    ),
    RealWorld(
        "rrumana--k8s-homelab-2--llama-static-a.yaml",
        Verdict(
            status=(
                ("gpus", 1),
                ("resource", "amd.com/gpu"),
                ("gpuLayers", "unknown"),
                ("origin.gpuLayers", "unknown:configMap/llama-static-a-config"),
            )
        ),
        {2: Verdict(status=(*SPLIT, ("tensorSplit", "1,1")))},
    ),
    RealWorld(
        "rrumana--k8s-homelab-2--llama-static-b.yaml",
        Verdict(status=(("gpuLayers", "unknown"), ("origin.gpuLayers", "unknown:configMap/llama-static-b-config"))),
        {4: Verdict(status=(*SPLIT, ("tensorSplit", "1,1,1,1")))},
    ),
    RealWorld("rrumana--k8s-homelab-2--llama-swap.yaml", NO_LLAMA),  # llama-swap starts llama-server from its own config
    RealWorld(
        "jhart99--home-ops--llama-cpp-dgx.yaml",
        Verdict(status=(("gpus", 1), ("resource", "gpu.nvidia.com"), *user("gpuLayers", "99", "-ngl"))),
        {2: Verdict(status=(("gpus", 2), *SPLIT, ("tensorSplit", "1,1")))},
        not_runnable="a fork: --dflash and its options are not upstream llama-server's",
    ),
    RealWorld(
        "eleboucher--homelab--llama-cpp-two-models.yaml",
        Verdict(denied=frozenset({"ambiguous-gpu-containers"}), changed=False),  # two llama-servers share one claim
    ),
    RealWorld(
        "eleboucher--homelab--llama-cpp-qwen.yaml",
        Verdict(changed=False, warnings=("ResourceClaimTemplate default/llama-cpp-qwen-gpu not known (yet)",)),
    ),
    RealWorld(
        "brianporeilly--home-ops--llama-cpp.yaml",
        Verdict(status=(("gpus", 1), *user("gpuLayers", "-1", "--n-gpu-layers"))),
        {2: Verdict(status=(*SPLIT, ("tensorSplit", "1,1")))},
    ),
    RealWorld(
        "chingcodes--home-ops--llama-cpp-rocm.yaml",
        Verdict(status=(("resource", "amd.com/gpu"), *user("gpuLayers", "99", "--n-gpu-layers"))),
        {2: Verdict(denied=frozenset({"visible-devices-mismatch"}))},  # HIP_VISIBLE_DEVICES "0" would hide the second GPU
    ),
    RealWorld(
        "dsluo--homelab--llama-cpp-router-intel.yaml",
        Verdict(status=(("gpus", 1), ("router", True), ("channel", "env"), *webhook("gpuLayers", "999", "LLAMA_ARG_N_GPU_LAYERS"))),
        {2: Verdict(status=(("router", True), *webhook("tensorSplit", "1,1", "LLAMA_ARG_TENSOR_SPLIT")))},
    ),
    RealWorld(
        "janpuc--home-ops--llama-cpp-vulkan.yaml",
        Verdict(changed=False, warnings=("ResourceClaimTemplate default/llama-cpp-gpu not known (yet)",)),
    ),
    RealWorld(
        "nachtschatt3n--cberg-home-nextgen--llama-cpp-intel.yaml",
        Verdict(status=(("resource", "gpu.intel.com/i915"), ("channel", "env"), *user("gpuLayers", "20", "--n-gpu-layers"))),
        {2: Verdict(status=(*webhook("splitMode", "layer", "LLAMA_ARG_SPLIT_MODE"), ("tensorSplit", "1,1")))},
    ),
    RealWorld(
        "tscibilia--home-ops--llama-cpp-router-cuda.yaml",
        Verdict(status=(("router", True), *webhook("gpuLayers", "999", "LLAMA_ARG_N_GPU_LAYERS"))),
        {4: Verdict(status=(("tensorSplit", "1,1,1,1"), ("origin.tensorSplit", "webhook:LLAMA_ARG_TENSOR_SPLIT")))},
    ),
    RealWorld(
        "vikaspogu--k8s-gitops--llama-cpp-full-cuda.yaml",
        # the full image without --server prints tools.sh's help; NVIDIA_VISIBLE_DEVICES=all shows every GPU
        Verdict(denied=frozenset({"no-llama-container", "nvidia-visible-devices-set"}), changed=False),
    ),
    RealWorld(
        "liana64--home-infra--llama-cpp-env.yaml",
        Verdict(status=(("gpus", 1), *user("gpuLayers", "99", "LLAMA_ARG_N_GPU_LAYERS"))),
        {2: Verdict(status=(*SPLIT, ("tensorSplit", "1,1")))},
    ),
    RealWorld("j0sh3rs--home-ops--llama-swap-vulkan.yaml", NO_LLAMA),
    RealWorld("gabrielcosi--home-ops--llama-swap-dra.yaml", NO_LLAMA),
    RealWorld(
        "tanguille--cluster--llama-server-router-cuda13.yaml",
        Verdict(status=(("router", True), *webhook("gpuLayers", "999", "LLAMA_ARG_N_GPU_LAYERS"))),
        {2: Verdict(status=(("tensorSplit", "1,1"),))},
    ),
    RealWorld(
        "jrmatherly--home-cluster--llama-server-env.yaml",
        Verdict(status=(*user("gpuLayers", "all", "LLAMA_ARG_N_GPU_LAYERS"),)),
        {2: Verdict(status=(*SPLIT, ("tensorSplit", "1,1")))},
    ),
)


def workloads(documents: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from (d for d in documents if d.get("kind") == "Pod" or d.get("kind") in TEMPLATE_PATHS)


def cluster_of(documents: list[dict[str, Any]]) -> Cluster:
    """What the webhook would know: the DRA objects applied with the manifest."""
    claims = claim_objects_from(documents)
    return Cluster(claims=lambda: claims)


def config_maps(documents: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {
        str(d["metadata"]["name"]): {k: str(v) for k, v in (d.get("data") or {}).items()} for d in documents if d.get("kind") == "ConfigMap"
    }


def variant(documents: list[dict[str, Any]], gpus: int) -> list[dict[str, Any]]:
    """The same manifest asking for ``gpus`` GPUs the way it asks for one."""
    changed = copy.deepcopy(documents)
    for document in workloads(changed):
        spec = (
            as_dict(as_dict(as_dict(document.get("spec")).get("template")).get("spec"))
            if document.get("kind") != "Pod"
            else document["spec"]
        )
        for container in as_list(spec.get("containers")):
            resources = as_dict(container.get("resources"))
            for kind in ("limits", "requests"):
                for name in list(as_dict(resources.get(kind))):
                    if "gpu" in name:
                        resources[kind][name] = gpus
    for document in changed:
        if document.get("kind") == "ResourceClaimTemplate":
            for request in document["spec"]["spec"]["devices"]["requests"]:
                request["exactly"]["count"] = gpus
    return changed
