"""The table of pod shapes and what the webhook must do with each.

One row per scenario of the user's test plan (shared/seed/multi-gpu-testing-plan.md)
and per rule of the core issue. The unit tests, the server tests and the
preview tests all read this table, so a behaviour is stated once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

from webhook.claims import claim_objects_from
from webhook.cluster import NO_CLUSTER, Cluster
from webhook.config import Config

SERVER_CUDA = "ghcr.io/ggml-org/llama.cpp:server-cuda"
ENABLED = {"gpu-shard.io/enabled": "true"}
COUNT_2 = {"key": "nvidia.com/gpu.count", "operator": "Gt", "values": ["1"]}
COUNT_4 = {"key": "nvidia.com/gpu.count", "operator": "Gt", "values": ["3"]}
NOT_SHARED = {"key": "nvidia.com/gpu.sharing-strategy", "operator": "NotIn", "values": ["time-slicing", "mps"]}
L4 = {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4"]}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def container(
    name: str = "llama",
    image: str = SERVER_CUDA,
    args: list[Any] | None = None,
    command: list[Any] | None = None,
    gpus: Any = None,
    requests: Any = None,
    env: list[dict[str, Any]] | None = None,
    resource: str = "nvidia.com/gpu",
    extra_limits: dict[str, Any] | None = None,
    claims: list[dict[str, Any]] | None = None,
    env_from: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "image": image}
    if command is not None:
        spec["command"] = command
    if args is not None:
        spec["args"] = args
    if env is not None:
        spec["env"] = env
    if env_from is not None:
        spec["envFrom"] = env_from
    limits = {**({resource: gpus} if gpus is not None else {}), **(extra_limits or {})}
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if requests is not None:
        resources["requests"] = {resource: requests}
    if claims is not None:
        resources["claims"] = claims
    if resources:
        spec["resources"] = resources
    return spec


MODEL_ARGS = ["-m", "/models/model.gguf", "--host", "0.0.0.0", "--port", "8080"]


def pod(
    *containers: dict[str, Any],
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    init: list[dict[str, Any]] | None = None,
    affinity: dict[str, Any] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    resource_claims: list[dict[str, Any]] | None = None,
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "generateName": "llama-7d9f8c-",
        "labels": {"app": "llama", "pod-template-hash": "7d9f8c", **(ENABLED if labels is None else labels)},
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {"containers": list(containers or [container(args=list(MODEL_ARGS), gpus="2")])}
    if init:
        spec["initContainers"] = init
    if affinity is not None:
        spec["affinity"] = affinity
    if tolerations is not None:
        spec["tolerations"] = tolerations
    if resource_claims is not None:
        spec["resourceClaims"] = resource_claims
    if volumes is not None:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {**metadata, "namespace": "default"}, "spec": spec}


def two_terms() -> dict[str, Any]:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-central1-a"]}]},
                    {"matchExpressions": [{"key": "cloud.google.com/gke-nodepool", "operator": "In", "values": ["gpu-pool"]}]},
                ]
            }
        }
    }


@dataclass(frozen=True)
class Expect:
    denied: frozenset[str] = frozenset()  # violation codes; empty: admitted
    args_has: tuple[tuple[str, ...], ...] = ()  # token runs in the llama container's argv
    args_lacks: tuple[str, ...] = ()  # tokens never in it
    env: tuple[tuple[str, str], ...] = ()  # env vars the llama container ends with
    gpus: int | None = None  # the final GPU limit (and request)
    node_expressions: tuple[dict[str, Any], ...] | None = None  # in every required term; () none added
    changed: bool = True
    toleration: bool | None = None
    status: tuple[tuple[str, Any], ...] = ()  # fields of the status annotation ("origin.gpuLayers" for nested ones)
    warnings: tuple[str, ...] = ()  # text each of some warning must contain


@dataclass(frozen=True)
class Case:
    name: str
    pod: dict[str, Any]
    expect: Expect
    config: Config = field(default_factory=Config)
    objects: tuple[dict[str, Any], ...] = ()  # cluster objects the webhook knows (DRA claim templates, classes, slices)

    def fresh_pod(self) -> dict[str, Any]:
        return copy.deepcopy(self.pod)

    def cluster(self) -> Cluster:
        if not self.objects:
            return NO_CLUSTER
        claims = claim_objects_from(self.objects)
        return Cluster(claims=lambda: claims)


def ngl(value: str = "999") -> tuple[str, ...]:
    return ("--n-gpu-layers", value)


SPLIT_2 = (("--split-mode", "layer"), ("--tensor-split", "1,1"))


def exactly(device_class: str, count: int = 1, mode: str = "ExactCount") -> dict[str, Any]:
    return {"deviceClassName": device_class, "allocationMode": mode, **({"count": count} if mode == "ExactCount" else {})}


def claim_template(
    name: str, count: int = 1, device_class: str = "gpu.nvidia.com", mode: str = "ExactCount", namespace: str = "default"
) -> dict[str, Any]:
    request = {"name": "gpu", "exactly": exactly(device_class, count, mode)}
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"spec": {"devices": {"requests": [request]}}},
    }


def claim(name: str, count: int = 1, device_class: str = "gpu.nvidia.com", namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": exactly(device_class, count)}]}},
    }


def first_available_template(name: str, counts: tuple[int, ...]) -> dict[str, Any]:
    alternatives = [{"name": f"option-{i}", **exactly("gpu.nvidia.com", c)} for i, c in enumerate(counts)]
    template = claim_template(name)
    template["spec"]["spec"]["devices"]["requests"] = [{"name": "gpu", "firstAvailable": alternatives}]
    return template


def multi_request_template(name: str, counts: dict[str, int]) -> dict[str, Any]:
    template = claim_template(name)
    template["spec"]["spec"]["devices"]["requests"] = [{"name": n, "exactly": exactly("gpu.nvidia.com", c)} for n, c in counts.items()]
    return template


CASES: tuple[Case, ...] = (
    Case(
        "plan test 1: 2-GPU Llama-2-13B Deployment pod",
        pod(container(args=[*MODEL_ARGS, "--ctx-size", "4096"], gpus="2")),
        Expect(args_has=(ngl(), *SPLIT_2), gpus=2, node_expressions=(COUNT_2, NOT_SHARED), toleration=True),
    ),
    Case(
        "plan test 3: 4-GPU 70B",
        pod(container(args=list(MODEL_ARGS), gpus=4)),
        Expect(args_has=(ngl(), ("--split-mode", "layer"), ("--tensor-split", "1,1,1,1")), gpus=4, node_expressions=(COUNT_4, NOT_SHARED)),
    ),
    Case(
        "plan test 4a: annotation says 2, no limit",
        pod(container(args=list(MODEL_ARGS)), annotations={"gpu-shard.io/gpu-count": "2"}),
        Expect(args_has=(ngl(), *SPLIT_2), gpus=2, node_expressions=(COUNT_2, NOT_SHARED), toleration=True),
    ),
    Case(
        "plan test 4b: limit says 2, no annotation",
        pod(container(args=list(MODEL_ARGS), gpus="2")),
        Expect(args_has=(ngl(), *SPLIT_2), gpus=2),
    ),
    Case(
        "plan test 4c: annotation 2, limit 1, default precedence rejects",
        pod(container(args=list(MODEL_ARGS), gpus="1"), annotations={"gpu-shard.io/gpu-count": "2"}),
        Expect(denied=frozenset({"count-conflict"}), changed=False),
    ),
    Case(
        "plan test 4c: annotation 2, limit 1, precedence=annotation rewrites the limit",
        pod(container(args=list(MODEL_ARGS), gpus="1"), annotations={"gpu-shard.io/gpu-count": "2"}),
        Expect(args_has=(ngl(), *SPLIT_2), gpus=2),
        Config(precedence="annotation"),
    ),
    Case(
        "annotation and limit agree",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/gpu-count": "2"}),
        Expect(args_has=(ngl(), *SPLIT_2), gpus=2),
    ),
    Case(
        "regression: single-GPU 3B gets layers only",
        pod(container(args=list(MODEL_ARGS), gpus="1")),
        Expect(args_has=(ngl(),), args_lacks=("--tensor-split", "--split-mode"), gpus=1, node_expressions=(), toleration=True),
    ),
    Case(
        "regression: CPU-only TinyLlama without the label is untouched",
        pod(container(image="ghcr.io/ggml-org/llama.cpp:server", args=list(MODEL_ARGS)), labels={}),
        Expect(changed=False, args_lacks=("--n-gpu-layers",)),
    ),
    Case(
        "regression: CPU-only pod that opts in with no GPU is untouched",
        pod(container(image="ghcr.io/ggml-org/llama.cpp:server", args=list(MODEL_ARGS))),
        Expect(changed=False, args_lacks=("--n-gpu-layers", "--tensor-split")),
    ),
    Case(
        "heterogeneous split from annotation",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/tensor-split": "3,1"}),
        Expect(args_has=(ngl(), ("--split-mode", "layer"), ("--tensor-split", "3,1"))),
    ),
    Case(
        "product pinned, one GPU",
        pod(container(args=list(MODEL_ARGS), gpus="1"), annotations={"gpu-shard.io/gpu-product": "NVIDIA-L4"}),
        Expect(args_has=(ngl(),), node_expressions=(L4,)),
    ),
    Case(
        "row split mode from annotation",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/split-mode": "row"}),
        Expect(args_has=(ngl(), ("--split-mode", "row"), ("--tensor-split", "1,1"))),
    ),
    Case(
        "tensor split mode adds --fit off",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/split-mode": "tensor"}),
        Expect(args_has=(("--split-mode", "tensor"), ("--tensor-split", "1,1"), ("--fit", "off"))),
    ),
    Case(
        "tensor split mode with flash attention off is refused",
        pod(container(args=[*MODEL_ARGS, "-fa", "off"], gpus="2"), annotations={"gpu-shard.io/split-mode": "tensor"}),
        Expect(denied=frozenset({"tensor-mode-flash-attn"})),
    ),
    Case(
        "tensor split mode with --fit on is refused",
        pod(container(args=[*MODEL_ARGS, "-sm", "tensor", "--fit", "on"], gpus="2")),
        Expect(denied=frozenset({"tensor-mode-fit"})),
    ),
    Case(
        "n-gpu-layers annotation all",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/n-gpu-layers": "all"}),
        Expect(args_has=(ngl("all"), *SPLIT_2)),
    ),
    Case(
        "n-gpu-layers annotation auto leaves layers to --fit",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/n-gpu-layers": "auto"}),
        Expect(args_has=SPLIT_2, args_lacks=("--n-gpu-layers",)),
    ),
    Case(
        "user's own -ngl is kept, not duplicated",
        pod(container(args=[*MODEL_ARGS, "-ngl", "40"], gpus="2")),
        Expect(args_has=(("-ngl", "40"), *SPLIT_2), args_lacks=("--n-gpu-layers",)),
    ),
    Case(
        "user's consistent --tensor-split and -sm are kept",
        pod(container(args=[*MODEL_ARGS, "-sm", "layer", "--tensor_split", "1/1"], gpus="2")),
        Expect(args_has=(ngl(), ("-sm", "layer"), ("--tensor_split", "1/1")), args_lacks=("--split-mode", "--tensor-split")),
    ),
    Case(
        "user's -ts with 3 values on 2 GPUs is refused",
        pod(container(args=[*MODEL_ARGS, "-ts", "1,1,1"], gpus="2")),
        Expect(denied=frozenset({"tensor-split-arity"})),
    ),
    Case(
        "--tensor-split=1,1 is refused (llama-server rejects =)",
        pod(container(args=[*MODEL_ARGS, "--tensor-split=1,1"], gpus="2")),
        Expect(denied=frozenset({"inline-value"})),
    ),
    Case(
        "non-numeric split is refused",
        pod(container(args=[*MODEL_ARGS, "-ts", "a,b"], gpus="2")),
        Expect(denied=frozenset({"tensor-split-invalid"})),
    ),
    Case(
        "negative split is refused",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/tensor-split": "1,-1"}),
        Expect(denied=frozenset({"tensor-split-invalid"}), changed=False),
    ),
    Case(
        "all-zero split is refused",
        pod(container(args=[*MODEL_ARGS, "-ts", "0,0"], gpus="2")),
        Expect(denied=frozenset({"tensor-split-invalid"})),
    ),
    Case(
        "16 split values are refused",
        pod(container(args=[*MODEL_ARGS, "-ts", ",".join(["1"] * 16)], gpus="16"), annotations={}),
        Expect(denied=frozenset({"tensor-split-too-long"})),
        Config(max_gpus_per_node=16),
    ),
    Case(
        "16 GPUs: split left to llama.cpp",
        pod(container(args=list(MODEL_ARGS), gpus="16")),
        Expect(args_has=(ngl(), ("--split-mode", "layer")), args_lacks=("--tensor-split",), gpus=16),
        Config(max_gpus_per_node=16),
    ),
    Case(
        "annotation tensor-split arity mismatch",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/tensor-split": "1,1,1,1"}),
        Expect(denied=frozenset({"tensor-split-arity"}), changed=False),
    ),
    Case(
        "unknown split mode in the annotation",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/split-mode": "diagonal"}),
        Expect(denied=frozenset({"split-mode-unknown"}), changed=False),
    ),
    Case(
        "unknown split mode in argv",
        pod(container(args=[*MODEL_ARGS, "--split-mode", "diagonal"], gpus="2")),
        Expect(denied=frozenset({"split-mode-unknown"})),
    ),
    Case(
        "split-mode none with 2 GPUs",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/split-mode": "none"}),
        Expect(denied=frozenset({"split-mode-none-multi-gpu"})),
    ),
    Case(
        "GPU flags on a CPU pod are refused",
        pod(container(args=[*MODEL_ARGS, "-ngl", "99", "-ts", "1,1"])),
        Expect(denied=frozenset({"gpu-flags-without-gpus"}), changed=False),
    ),
    Case(
        "LLAMA_ARG GPU env on a CPU pod is refused",
        pod(container(args=list(MODEL_ARGS), env=[{"name": "LLAMA_ARG_N_GPU_LAYERS", "value": "99"}])),
        Expect(denied=frozenset({"gpu-flags-without-gpus"}), changed=False),
    ),
    Case(
        "-ngl 0 on a CPU pod is fine",
        pod(container(args=[*MODEL_ARGS, "-ngl", "0"])),
        Expect(changed=False),
    ),
    Case(
        "draft-model look-alikes are not main-model GPU flags",
        pod(container(args=[*MODEL_ARGS, "-ngld", "99", "-devd", "none", "--spec-draft-ngl", "10"])),
        Expect(changed=False),
    ),
    Case(
        "--main-gpu beyond the GPU count",
        pod(container(args=[*MODEL_ARGS, "-mg", "2"], gpus="2")),
        Expect(denied=frozenset({"main-gpu-out-of-range"})),
    ),
    Case(
        "--main-gpu within the GPU count",
        pod(container(args=[*MODEL_ARGS, "--main_gpu", "1"], gpus="2")),
        Expect(args_has=(("--main_gpu", "1"), *SPLIT_2)),
    ),
    Case(
        "--device naming one device for 2 GPUs",
        pod(container(args=[*MODEL_ARGS, "-dev", "CUDA0"], gpus="2")),
        Expect(denied=frozenset({"device-count-mismatch"})),
    ),
    Case(
        "more GPUs than a node has",
        pod(container(args=list(MODEL_ARGS), gpus="9")),
        Expect(denied=frozenset({"too-many-gpus"}), changed=False),
    ),
    Case(
        "GPU requests differ from limits",
        pod(container(args=list(MODEL_ARGS), gpus="2", requests="1")),
        Expect(denied=frozenset({"requests-limits-mismatch"})),
    ),
    Case(
        "whole GPUs and MIG slices in one container",
        pod(container(args=list(MODEL_ARGS), gpus="1", extra_limits={"nvidia.com/mig-1g.10gb": "1"})),
        Expect(denied=frozenset({"mixed-mig"})),
    ),
    Case(
        "two GPU containers without the container annotation",
        pod(container(args=list(MODEL_ARGS), gpus="1"), container(name="embedder", image="example.com/embed:1", gpus="1")),
        Expect(denied=frozenset({"ambiguous-gpu-containers"}), changed=False),
    ),
    Case(
        "two GPU containers with the container annotation",
        pod(
            container(args=list(MODEL_ARGS), gpus="2"),
            container(name="embedder", image="example.com/embed:1", gpus="1"),
            annotations={"gpu-shard.io/container": "llama"},
        ),
        Expect(args_has=(ngl(), *SPLIT_2)),
    ),
    Case(
        "opted in but no llama.cpp container",
        pod(container(name="app", image="busybox:1.36", command=["sleep", "3600"], gpus="1")),
        Expect(denied=frozenset({"no-llama-container"}), changed=False),
    ),
    Case(
        "container annotation names a missing container",
        pod(container(args=list(MODEL_ARGS), gpus="2"), annotations={"gpu-shard.io/container": "nope"}),
        Expect(denied=frozenset({"unknown-container"}), changed=False),
    ),
    Case(
        "CUDA_VISIBLE_DEVICES hides a GPU",
        pod(container(args=list(MODEL_ARGS), gpus="2", env=[{"name": "CUDA_VISIBLE_DEVICES", "value": "0"}])),
        Expect(denied=frozenset({"cuda-visible-devices-mismatch"})),
    ),
    Case(
        "gpu-count annotation that is not a number",
        pod(container(args=list(MODEL_ARGS)), annotations={"gpu-shard.io/gpu-count": "two"}),
        Expect(denied=frozenset({"bad-annotation"}), changed=False),
    ),
    Case(
        "gpu-count annotation with a digit int() refuses (found by the fuzzer)",
        pod(container(args=list(MODEL_ARGS)), annotations={"gpu-shard.io/gpu-count": "²"}),
        Expect(denied=frozenset({"bad-annotation"}), changed=False),
    ),
    Case(
        "--main-gpu with a superscript digit",
        pod(container(args=[*MODEL_ARGS, "-mg", "¹"], gpus="2")),
        Expect(denied=frozenset({"main-gpu-out-of-range"})),
    ),
    Case(
        "gpu-product annotation that is not a label value",
        pod(container(args=list(MODEL_ARGS), gpus="1"), annotations={"gpu-shard.io/gpu-product": "NVIDIA L4!"}),
        Expect(denied=frozenset({"bad-annotation"}), changed=False),
    ),
    Case(
        "GPU limit that is not a whole number",
        pod(container(args=list(MODEL_ARGS), gpus="1.5")),
        Expect(denied=frozenset({"bad-gpu-quantity"}), changed=False),
    ),
    Case(
        "annotation asks row, argv says layer",
        pod(container(args=[*MODEL_ARGS, "-sm", "layer"], gpus="2"), annotations={"gpu-shard.io/split-mode": "row"}),
        Expect(denied=frozenset({"annotation-conflict"})),
    ),
    Case(
        "argv and LLAMA_ARG env disagree",
        pod(container(args=[*MODEL_ARGS, "-ts", "1,1"], gpus="2", env=[{"name": "LLAMA_ARG_TENSOR_SPLIT", "value": "3,1"}])),
        Expect(denied=frozenset({"flag-conflict"})),
    ),
    Case(
        "sh -c command: settings go through LLAMA_ARG env, the script is untouched",
        pod(container(command=["sh", "-c", "exec /app/llama-server -m /models/m.gguf --port 8080"], gpus="2")),
        Expect(
            env=(("LLAMA_ARG_N_GPU_LAYERS", "999"), ("LLAMA_ARG_SPLIT_MODE", "layer"), ("LLAMA_ARG_TENSOR_SPLIT", "1,1")),
            args_lacks=("--n-gpu-layers",),
        ),
    ),
    Case(
        "sh -c command with a wrong split in the script",
        pod(container(command=["/bin/bash", "-c", "llama-server -m /m.gguf -ts 1,1,1 && echo done"], gpus="2")),
        Expect(denied=frozenset({"tensor-split-arity"})),
    ),
    Case(
        "env-configured llama-server: the user's LLAMA_ARG_N_GPU_LAYERS is kept",
        pod(container(args=list(MODEL_ARGS), gpus="2", env=[{"name": "LLAMA_ARG_N_GPU_LAYERS", "value": "60"}])),
        Expect(args_has=SPLIT_2, args_lacks=("--n-gpu-layers",), env=(("LLAMA_ARG_N_GPU_LAYERS", "60"),)),
    ),
    Case(
        "llama-server named in command, no args",
        pod(container(image="example.com/my-llama:1", command=["llama-server", "-m", "/m.gguf"], gpus="2")),
        Expect(args_has=(("llama-server", "-m", "/m.gguf"), ngl(), *SPLIT_2)),
    ),
    Case(
        "unified binary: /app/llama serve",
        pod(container(image="example.com/llama:b7000", command=["/app/llama", "serve"], args=["-m", "/m.gguf"], gpus="2")),
        Expect(args_has=(("serve", "-m", "/m.gguf"), ngl(), *SPLIT_2)),
    ),
    Case(
        "full image with --server",
        pod(container(image="ghcr.io/ggml-org/llama.cpp:full-cuda", args=["--server", "-m", "/m.gguf"], gpus="2")),
        Expect(args_has=(("--server", "-m", "/m.gguf"), ngl(), *SPLIT_2)),
    ),
    Case(
        "old ggerganov image name",
        pod(container(image="ghcr.io/ggerganov/llama.cpp:server-cuda", args=list(MODEL_ARGS), gpus="2")),
        Expect(args_has=(ngl(), *SPLIT_2)),
    ),
    Case(
        "custom wrapper named by annotation gets env",
        pod(
            container(name="model", image="example.com/wrapper:2", command=["/start.sh"], gpus="2"),
            annotations={"gpu-shard.io/container": "model"},
        ),
        Expect(env=(("LLAMA_ARG_N_GPU_LAYERS", "999"), ("LLAMA_ARG_TENSOR_SPLIT", "1,1"))),
    ),
    Case(
        "init container and sidecar are never touched",
        pod(
            container(args=list(MODEL_ARGS), gpus="2"),
            container(name="metrics", image="prom/exporter:1", args=["--port", "9100"]),
            init=[container(name="fetch-model", image="curlimages/curl:8", args=["-o", "/models/m.gguf"])],
        ),
        Expect(args_has=(ngl(), *SPLIT_2)),
    ),
    Case(
        "existing affinity with two terms: both get the GPU expressions",
        pod(container(args=list(MODEL_ARGS), gpus="2"), affinity=two_terms()),
        Expect(node_expressions=(COUNT_2, NOT_SHARED)),
    ),
    Case(
        "existing GPU toleration is not duplicated",
        pod(container(args=list(MODEL_ARGS), gpus="2"), tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]),
        Expect(args_has=SPLIT_2, toleration=True),
    ),
    Case(
        "AMD GPUs take the same flags, and no NVIDIA node affinity",
        pod(container(image="ghcr.io/ggml-org/llama.cpp:server-rocm", args=list(MODEL_ARGS), gpus="2", resource="amd.com/gpu")),
        Expect(args_has=(ngl(), *SPLIT_2), node_expressions=()),
    ),
    Case(
        "affinity switched off for clusters without GPU Feature Discovery",
        pod(container(args=list(MODEL_ARGS), gpus="2")),
        Expect(args_has=SPLIT_2, node_expressions=(), toleration=True),
        Config(inject_affinity=False),
    ),
    # --- reports state what runs (issue 11, class 1) ---
    Case(
        "report: the user's -ngl 99 is reported as theirs",
        pod(container(args=[*MODEL_ARGS, "-ngl", "99"], gpus="2")),
        Expect(
            args_has=(("-ngl", "99"), *SPLIT_2),
            args_lacks=("--n-gpu-layers",),
            status=(("gpuLayers", "99"), ("origin.gpuLayers", "user:-ngl")),
        ),
    ),
    Case(
        "report: --n-gpu-layers -1 (auto) is reported as the user's -1",
        pod(container(args=[*MODEL_ARGS, "--n-gpu-layers", "-1"], gpus="1")),
        Expect(args_lacks=("999",), status=(("gpuLayers", "-1"), ("origin.gpuLayers", "user:--n-gpu-layers"))),
    ),
    Case(
        "report: LLAMA_ARG_N_GPU_LAYERS=all from env is reported as the user's",
        pod(container(args=list(MODEL_ARGS), gpus="2", env=[{"name": "LLAMA_ARG_N_GPU_LAYERS", "value": "all"}])),
        Expect(
            args_has=SPLIT_2,
            args_lacks=("--n-gpu-layers",),
            status=(("gpuLayers", "all"), ("origin.gpuLayers", "user:LLAMA_ARG_N_GPU_LAYERS")),
        ),
    ),
    Case(
        "report: --n-gpu-layers $(N_GPU_LAYERS) from a ConfigMap is unknown, never 999",
        pod(
            container(
                args=[*MODEL_ARGS, "--n-gpu-layers", "$(N_GPU_LAYERS)"], gpus="2", env_from=[{"configMapRef": {"name": "llama-config"}}]
            )
        ),
        Expect(
            args_has=SPLIT_2, args_lacks=("999",), status=(("gpuLayers", "unknown"), ("origin.gpuLayers", "unknown:configMap/llama-config"))
        ),
    ),
    Case(
        "report: a split mode from a Secret is unknown and not judged",
        pod(
            container(
                args=list(MODEL_ARGS),
                gpus="2",
                env=[{"name": "LLAMA_ARG_SPLIT_MODE", "valueFrom": {"secretKeyRef": {"name": "llama", "key": "split"}}}],
            )
        ),
        Expect(args_has=(ngl(), ("--tensor-split", "1,1")), args_lacks=("--split-mode",), status=(("splitMode", "unknown"),)),
    ),
    # --- $(VAR) in args (class 2) ---
    Case(
        "$(VAR): --temp $(LLAMA_ARG_TEMPERATURE) beside the same env var is one value, not a conflict",
        pod(
            container(
                args=[*MODEL_ARGS, "--temp", "$(LLAMA_ARG_TEMPERATURE)"],
                gpus="2",
                env=[{"name": "LLAMA_ARG_TEMPERATURE", "value": "0.4"}],
            )
        ),
        Expect(args_has=(ngl(), *SPLIT_2)),
    ),
    Case(
        "$(VAR): -ts $(SPLIT) expands to 3 values on 2 GPUs and is refused",
        pod(container(args=[*MODEL_ARGS, "-ts", "$(SPLIT)"], gpus="2", env=[{"name": "SPLIT", "value": "1,1,1"}])),
        Expect(denied=frozenset({"tensor-split-arity"})),
    ),
    Case(
        "$(VAR): -ngl $(NGL) expands from an env var defined with another",
        pod(
            container(
                args=[*MODEL_ARGS, "-ngl", "$(NGL)"],
                gpus="2",
                env=[{"name": "LAYERS", "value": "40"}, {"name": "NGL", "value": "$(LAYERS)"}],
            )
        ),
        Expect(args_lacks=("--n-gpu-layers",), status=(("gpuLayers", "40"), ("origin.gpuLayers", "user:-ngl"))),
    ),
    Case(
        "$(VAR): a reference to an undefined variable stays literal and llama-server would refuse it",
        pod(container(args=[*MODEL_ARGS, "-ngl", "$(UNDEFINED)"], gpus="2")),
        Expect(denied=frozenset({"gpu-layers-invalid"})),
    ),
    Case(
        "$(VAR): $$(VAR) is an escaped literal, not a reference",
        pod(container(args=[*MODEL_ARGS, "--alias", "$$(NAME)"], gpus="1", env=[{"name": "NAME", "value": "x"}])),
        Expect(args_has=(("--alias", "$$(NAME)"), ngl())),
    ),
    # --- container detection follows what the kubelet execs (class 3) ---
    Case(
        "detection: a custom image started with args [/app/llama-server, ...] and no command",
        pod(container(image="ghcr.io/example/llama-cpp-dgx:latest", args=["/app/llama-server", *MODEL_ARGS], gpus="2")),
        Expect(args_has=(("/app/llama-server", "-m"), ngl(), *SPLIT_2)),
    ),
    Case(
        "detection: llama-server on PATH as the first arg of a custom image",
        pod(container(image="example.com/llama:1", args=["llama-server", *MODEL_ARGS], gpus="2")),
        Expect(args_has=(ngl(), *SPLIT_2)),
    ),
    Case(
        "detection: a wrapper whose arguments start llama-server gets env",
        pod(
            container(
                image="quay.io/example/qwen3-4b-ramalama:latest",
                command=["/usr/libexec/ramalama/ramalama-serve-core"],
                args=["llama-server", "--port", "8080", "--model", "/models/m.gguf"],
                gpus="2",
            )
        ),
        Expect(env=(("LLAMA_ARG_N_GPU_LAYERS", "999"), ("LLAMA_ARG_TENSOR_SPLIT", "1,1")), args_lacks=("--n-gpu-layers",)),
    ),
    Case(
        "detection: args repeating the official image's entrypoint are refused",
        pod(container(args=["/app/llama-server", *MODEL_ARGS], gpus="1")),
        Expect(denied=frozenset({"repeated-entrypoint"})),
    ),
    # --- GPU vendors (class 4) ---
    Case(
        "Intel: gpu.intel.com/i915 is counted, with the SYCL image",
        pod(
            container(
                image="ghcr.io/ggml-org/llama.cpp:server-intel",
                args=[*MODEL_ARGS, "--n-gpu-layers", "20"],
                gpus="1",
                resource="gpu.intel.com/i915",
            )
        ),
        Expect(args_has=(("--n-gpu-layers", "20"),), node_expressions=(), status=(("resource", "gpu.intel.com/i915"), ("gpus", 1))),
    ),
    Case(
        "Intel: two gpu.intel.com/xe split like any other vendor's",
        pod(container(image="ghcr.io/ggml-org/llama.cpp:server-vulkan", args=list(MODEL_ARGS), gpus="2", resource="gpu.intel.com/xe")),
        Expect(args_has=(ngl(), *SPLIT_2), node_expressions=()),
    ),
    Case(
        "an uncounted GPU-looking resource is never told 'asks for no GPU'",
        pod(container(args=[*MODEL_ARGS, "-ngl", "99"], gpus="2", resource="nvidia.com/gpu.shared")),
        Expect(changed=False, warnings=("nvidia.com/gpu.shared is not counted", "--gpu-resources")),
    ),
    Case(
        "a MIG slice with -ngl is not a CPU pod",
        pod(container(args=[*MODEL_ARGS, "-ngl", "99"], gpus="1", resource="nvidia.com/mig-1g.10gb")),
        Expect(changed=False, warnings=("nvidia.com/mig-1g.10gb is not counted",)),
    ),
    Case(
        "a privileged container with /dev/dri and -ngl but no GPU resource is warned about, not refused",
        pod(
            {
                **container(image="example.com/llama.cpp:vulkan", args=["llama-server", *MODEL_ARGS, "--gpu-layers", "99"]),
                "securityContext": {"privileged": True},
                "volumeMounts": [{"name": "dri", "mountPath": "/dev/dri"}],
            },
            volumes=[{"name": "dri", "hostPath": {"path": "/dev/dri"}}],
        ),
        Expect(changed=False, warnings=("reaches devices without asking for them",)),
    ),
    # --- device visibility, every vendor (class 5) ---
    Case(
        "ROCm: HIP_VISIBLE_DEVICES shows 1 of 2 AMD GPUs",
        pod(
            container(
                image="ghcr.io/ggml-org/llama.cpp:server-rocm",
                args=list(MODEL_ARGS),
                gpus="2",
                resource="amd.com/gpu",
                env=[{"name": "HIP_VISIBLE_DEVICES", "value": "0"}],
            )
        ),
        Expect(denied=frozenset({"visible-devices-mismatch"})),
    ),
    Case(
        "ROCm: ROCR_VISIBLE_DEVICES listing both GPUs is fine",
        pod(
            container(
                image="ghcr.io/ggml-org/llama.cpp:server-rocm",
                args=list(MODEL_ARGS),
                gpus="2",
                resource="amd.com/gpu",
                env=[{"name": "ROCR_VISIBLE_DEVICES", "value": "0,1"}],
            )
        ),
        Expect(args_has=(ngl(), *SPLIT_2)),
    ),
    Case(
        "SYCL: ONEAPI_DEVICE_SELECTOR level_zero:0 shows 1 of 2 Intel GPUs",
        pod(
            container(
                image="ghcr.io/ggml-org/llama.cpp:server-intel",
                args=list(MODEL_ARGS),
                gpus="2",
                resource="gpu.intel.com/i915",
                env=[{"name": "ONEAPI_DEVICE_SELECTOR", "value": "level_zero:0"}],
            )
        ),
        Expect(denied=frozenset({"visible-devices-mismatch"})),
    ),
    Case(
        "SYCL: ZE_AFFINITY_MASK with sub-devices of two roots is 2 GPUs",
        pod(
            container(
                image="ghcr.io/ggml-org/llama.cpp:server-intel",
                args=list(MODEL_ARGS),
                gpus="2",
                resource="gpu.intel.com/i915",
                env=[{"name": "ZE_AFFINITY_MASK", "value": "0.0,1.0"}],
            )
        ),
        Expect(args_has=(ngl(), *SPLIT_2)),
    ),
    Case(
        "Vulkan: GGML_VK_VISIBLE_DEVICES shows 1 of 2 GPUs",
        pod(
            container(
                image="ghcr.io/ggml-org/llama.cpp:server-vulkan",
                args=list(MODEL_ARGS),
                gpus="2",
                env=[{"name": "GGML_VK_VISIBLE_DEVICES", "value": "0"}],
            )
        ),
        Expect(denied=frozenset({"visible-devices-mismatch"})),
    ),
    Case(
        "NVIDIA_VISIBLE_DEVICES=all set by hand is refused",
        pod(container(args=list(MODEL_ARGS), gpus="1", env=[{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}])),
        Expect(denied=frozenset({"nvidia-visible-devices-set"})),
    ),
    # --- router mode (class 6) ---
    Case(
        "router: --models-preset without -m gets LLAMA_ARG_* env, which the presets still beat",
        pod(container(args=["--models-preset", "/config/presets.ini", "--models-max", "1"], gpus="2")),
        Expect(
            env=(("LLAMA_ARG_N_GPU_LAYERS", "999"), ("LLAMA_ARG_SPLIT_MODE", "layer"), ("LLAMA_ARG_TENSOR_SPLIT", "1,1")),
            args_lacks=("--n-gpu-layers", "--tensor-split"),
            status=(("router", True), ("channel", "env")),
        ),
    ),
    Case(
        "router: --models-dir without -m on one GPU",
        pod(container(args=["--models-dir", "/models"], gpus="1")),
        Expect(env=(("LLAMA_ARG_N_GPU_LAYERS", "999"),), args_lacks=("--n-gpu-layers",), status=(("router", True),)),
    ),
    # --- the image's backend (class 7) ---
    Case(
        "silent CPU fallback: the CPU image holding GPUs is refused",
        pod(container(image="ghcr.io/ggml-org/llama.cpp:server", args=list(MODEL_ARGS), gpus="2")),
        Expect(denied=frozenset({"cpu-image-with-gpus"})),
    ),
    Case(
        "silent CPU fallback: a ROCm image cannot drive nvidia.com/gpu",
        pod(container(image="ghcr.io/ggml-org/llama.cpp:server-rocm-b6000", args=list(MODEL_ARGS), gpus="1")),
        Expect(denied=frozenset({"image-backend-mismatch"})),
    ),
    Case(
        "Vulkan drives AMD GPUs",
        pod(container(image="ghcr.io/ggml-org/llama.cpp:server-vulkan", args=list(MODEL_ARGS), gpus="1", resource="amd.com/gpu")),
        Expect(args_has=(ngl(),)),
    ),
    Case(
        "CUDA 13 images only land on nodes with the 580 driver series",
        pod(container(image="ghcr.io/ggml-org/llama.cpp:server-cuda13", args=list(MODEL_ARGS), gpus="1")),
        Expect(args_has=(ngl(),), node_expressions=({"key": "nvidia.com/cuda.driver.major", "operator": "Gt", "values": ["579"]},)),
    ),
    Case(
        "an image that is not official is never judged by its tag",
        pod(container(image="harbor.example/llama-cpp/llama.cpp:cpu", args=["llama-server", *MODEL_ARGS], gpus="2")),
        Expect(args_has=(ngl(), *SPLIT_2)),
    ),
    # --- GPUs from DRA claims (issue 12) ---
    *(
        Case(
            f"DRA: a ResourceClaimTemplate with ExactCount {count}",
            pod(
                container(args=list(MODEL_ARGS), claims=[{"name": "gpu"}]),
                resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "llama-gpus"}],
            ),
            Expect(
                args_has=(ngl(), *((("--split-mode", "layer"), ("--tensor-split", ",".join(["1"] * count))) if count > 1 else ())),
                args_lacks=() if count > 1 else ("--tensor-split",),
                node_expressions=(),
                toleration=True,
                status=(
                    ("gpus", count),
                    ("resource", "gpu.nvidia.com"),
                    ("gpuSource", f"{count} GPU{'s' if count > 1 else ''} from claim gpu (ResourceClaimTemplate llama-gpus)"),
                ),
            ),
            objects=(claim_template("llama-gpus", count=count),),
        )
        for count in (1, 2, 4)
    ),
    Case(
        "DRA: a ResourceClaim shared by name",
        pod(
            container(args=list(MODEL_ARGS), claims=[{"name": "gpus"}]),
            resource_claims=[{"name": "gpus", "resourceClaimName": "shared-gpus"}],
        ),
        Expect(args_has=(ngl(), *SPLIT_2), status=(("gpuSource", "2 GPUs from claim gpus (ResourceClaim shared-gpus)"),)),
        objects=(claim("shared-gpus", count=2),),
    ),
    Case(
        "DRA: allocationMode All leaves the count to the scheduler: layers only, and a warning",
        pod(
            container(args=list(MODEL_ARGS), claims=[{"name": "gpu"}]),
            resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "all-gpus"}],
        ),
        Expect(
            args_has=(ngl(),),
            args_lacks=("--tensor-split", "--split-mode"),
            warnings=("GPU count unknown", "all matching devices"),
            status=(("gpus", None),),
        ),
        objects=(claim_template("all-gpus", mode="All"),),
    ),
    Case(
        "DRA: firstAvailable alternatives with different counts: layers only",
        pod(
            container(args=list(MODEL_ARGS), claims=[{"name": "gpu"}]),
            resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "flexible"}],
        ),
        Expect(args_has=(ngl(),), args_lacks=("--tensor-split",), warnings=("different GPU counts",)),
        objects=(first_available_template("flexible", (4, 2)),),
    ),
    Case(
        "DRA: firstAvailable alternatives with the same count are that count",
        pod(
            container(args=list(MODEL_ARGS), claims=[{"name": "gpu"}]),
            resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "either"}],
        ),
        Expect(args_has=(ngl(), *SPLIT_2)),
        objects=(first_available_template("either", (2, 2)),),
    ),
    Case(
        "DRA: a template not known yet: admitted unchanged with a warning (fail open)",
        pod(
            container(args=[*MODEL_ARGS, "-ngl", "99"], claims=[{"name": "gpu"}]),
            resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "later"}],
        ),
        Expect(changed=False, warnings=("ResourceClaimTemplate default/later not known (yet)",)),
        objects=(claim_template("another", count=2),),
    ),
    Case(
        "DRA: a non-GPU claim beside a GPU limit: the limit counts",
        pod(
            container(args=list(MODEL_ARGS), gpus="2", claims=[{"name": "nic"}]),
            resource_claims=[{"name": "nic", "resourceClaimTemplateName": "rdma"}],
        ),
        Expect(args_has=(ngl(), *SPLIT_2), node_expressions=(COUNT_2, NOT_SHARED)),
        objects=(claim_template("rdma", count=1, device_class="rdma.example.com"),),
    ),
    Case(
        "DRA: a claim's request named by the container: only that request counts",
        pod(
            container(args=list(MODEL_ARGS), claims=[{"name": "devices", "request": "gpus"}]),
            resource_claims=[{"name": "devices", "resourceClaimTemplateName": "mixed"}],
        ),
        Expect(args_has=(ngl(), *SPLIT_2)),
        objects=(multi_request_template("mixed", {"gpus": 2, "more-gpus": 3}),),
    ),
    Case(
        "DRA: a GPU limit and a GPU claim together are ambiguous",
        pod(
            container(args=list(MODEL_ARGS), gpus="1", claims=[{"name": "gpu"}]),
            resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "llama-gpus"}],
        ),
        Expect(denied=frozenset({"ambiguous-gpu-source"}), changed=False),
        objects=(claim_template("llama-gpus", count=2),),
    ),
    Case(
        "DRA: -ngl on a claim pod is not a CPU pod",
        pod(
            container(args=[*MODEL_ARGS, "-ngl", "99"], claims=[{"name": "gpu"}]),
            resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "llama-gpus"}],
        ),
        Expect(args_has=(("-ngl", "99"), *SPLIT_2), status=(("origin.gpuLayers", "user:-ngl"),)),
        objects=(claim_template("llama-gpus", count=2),),
    ),
    Case(
        "DRA: the rules read the claim's count (-ts with 3 values on 2 claimed GPUs)",
        pod(
            container(args=[*MODEL_ARGS, "-ts", "1,1,1"], claims=[{"name": "gpu"}]),
            resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "llama-gpus"}],
        ),
        Expect(denied=frozenset({"tensor-split-arity"})),
        objects=(claim_template("llama-gpus", count=2),),
    ),
    Case(
        "DRA: the gpu-count annotation must agree with the claim",
        pod(
            container(args=list(MODEL_ARGS), claims=[{"name": "gpu"}]),
            annotations={"gpu-shard.io/gpu-count": "4"},
            resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "llama-gpus"}],
        ),
        Expect(denied=frozenset({"count-conflict"}), changed=False),
        objects=(claim_template("llama-gpus", count=2),),
    ),
    Case(
        "DRA: an AMD claim on a ROCm image gets the AMD toleration",
        pod(
            container(image="ghcr.io/ggml-org/llama.cpp:server-rocm", args=list(MODEL_ARGS), claims=[{"name": "gpu"}]),
            resource_claims=[{"name": "gpu", "resourceClaimTemplateName": "amd-gpus"}],
        ),
        Expect(args_has=(ngl(), *SPLIT_2)),
        objects=(claim_template("amd-gpus", count=2, device_class="gpu.amd.com"),),
    ),
)


def by_name(name: str) -> Case:
    return next(case for case in CASES if case.name == name)


def with_config(case: Case, **changes: Any) -> Case:
    return replace(case, config=replace(case.config, **changes))


# --- LeaderWorkerSets: one model over several nodes (webhook.multinode) ----------------

# A custom build: llama-server and ggml-rpc-server from llama.cpp built with -DGGML_RPC=ON.
RPC_IMAGE = "registry.example.com/llama.cpp:b6500-rpc-cuda"
LEADER_ARGS = ["-m", "/models/llama-70b-q4_k_m.gguf", "--host", "0.0.0.0", "--port", "8080"]


def group_template(
    *containers: dict[str, Any],
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    host_network: bool = False,
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"containers": list(containers)}
    if host_network:
        body["hostNetwork"] = True
    body.update(spec)
    metadata: dict[str, Any] = {"labels": {"app": "llama-70b", **(labels or {})}}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"metadata": metadata, "spec": body}


def leader(gpus: Any = None, args: list[Any] | None = None, image: str = RPC_IMAGE, **changes: Any) -> dict[str, Any]:
    return container(image=image, command=["/app/llama-server"], args=list(LEADER_ARGS if args is None else args), gpus=gpus, **changes)


def worker(gpus: Any = "2", image: str = RPC_IMAGE, **changes: Any) -> dict[str, Any]:
    return container(image=image, gpus=gpus, **changes)


def lws(
    size: int = 3,
    leader_template: dict[str, Any] | None = None,
    worker_template: dict[str, Any] | None = None,
    name: str = "llama-70b",
    labels: dict[str, str] | None = None,
    startup_policy: str | None = None,
    subdomain_policy: str | None = None,
    no_leader_template: bool = False,
) -> dict[str, Any]:
    group: dict[str, Any] = {"size": size, "workerTemplate": worker_template or group_template(worker())}
    if not no_leader_template:
        group["leaderTemplate"] = leader_template or group_template(leader())
    spec: dict[str, Any] = {"replicas": 1, "leaderWorkerTemplate": group}
    if startup_policy:
        spec["startupPolicy"] = startup_policy
    if subdomain_policy:
        spec["networkConfig"] = {"subdomainPolicy": subdomain_policy}
    metadata = {"name": name, "namespace": "ai", "labels": {"app": "llama-70b", **(ENABLED if labels is None else labels)}}
    return {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "metadata": metadata, "spec": spec}


def gpu_node(name: str, gpus: int, resource: str = "nvidia.com/gpu") -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, "nvidia.com/gpu.count": str(gpus), "nvidia.com/gpu.product": "NVIDIA-L4"}
    return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": {resource: str(gpus), "cpu": "32"}}}


TWO_GPU_NODES = (gpu_node("gpu-a", 2), gpu_node("gpu-b", 2), gpu_node("gpu-c", 2))
RPC_POLICY = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "llama-rpc-workers", "namespace": "ai"},
    "spec": {"podSelector": {"matchLabels": {"gpu-shard.io/rpc-role": "worker"}}, "policyTypes": ["Ingress"]},
}


@dataclass(frozen=True)
class GroupExpect:
    denied: frozenset[str] = frozenset()
    devices: int | None = None  # every device of one group: (size - 1) x worker GPUs + leader GPUs
    tensor_split: str | None = None  # the leader's --tensor-split (None: not set)
    leader_args: tuple[tuple[str, ...], ...] = ()  # token runs in the leader's argv
    leader_env: tuple[tuple[str, str], ...] = ()  # LLAMA_ARG_* the leader ends with
    rpc_port: int = 50052
    rpc_host: str = "llama-70b"  # the subdomain in the --rpc names
    leader_placed: bool = True  # node affinity / toleration / anti-affinity on the leader (it holds GPUs)
    worker_argv: tuple[str, ...] | None = None  # the worker's own RPC server argv, kept (None: the webhook's script)
    warnings: tuple[str, ...] = ()
    no_warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class GroupCase:
    name: str
    lws: dict[str, Any]
    expect: GroupExpect
    nodes: tuple[dict[str, Any], ...] = TWO_GPU_NODES
    policies: tuple[dict[str, Any], ...] | None = (RPC_POLICY,)  # None: not watched
    config: Config = field(default_factory=Config)

    def fresh(self) -> dict[str, Any]:
        return copy.deepcopy(self.lws)

    def cluster(self) -> Cluster:
        from webhook.inventory import inventory_from
        from webhook.networkpolicy import snapshot_from

        inventory = inventory_from(self.nodes, self.config)
        policies = snapshot_from(list(self.policies)) if self.policies is not None else None
        return Cluster(nodes=lambda: inventory, network_policies=(lambda: policies) if policies is not None else None)


GROUP_CASES: tuple[GroupCase, ...] = (
    GroupCase(
        "LWS: 3 pods, GPU-less leader, 2 GPUs per worker: 4 devices over RPC",
        lws(3, group_template(leader())),
        GroupExpect(devices=4, tensor_split="1,1,1,1", leader_placed=False),
    ),
    GroupCase(
        "LWS: 2 pods, leader and worker with 2 GPUs each: RPC devices first, then the leader's",
        lws(2, group_template(leader(gpus="2"))),
        GroupExpect(devices=4, tensor_split="1,1,1,1"),
    ),
    GroupCase(
        "LWS: 3 pods, 1 GPU each (three single-GPU homelab boxes)",
        lws(3, group_template(leader(gpus="1")), group_template(worker(gpus="1"))),
        GroupExpect(devices=3, tensor_split="1,1,1"),
        nodes=(gpu_node("box-a", 1), gpu_node("box-b", 1), gpu_node("box-c", 1)),
    ),
    GroupCase(
        "LWS: 3 pods, leader with 2 GPUs, 2 GPUs per worker: 6 devices",
        lws(3, group_template(leader(gpus="2"))),
        GroupExpect(devices=6, tensor_split="1,1,1,1,1,1"),
    ),
    GroupCase(
        "LWS: one template for both (no leaderTemplate): the leader is written from it",
        lws(2, group_template(leader(gpus="2")), group_template(leader(gpus="2")), no_leader_template=True),
        GroupExpect(devices=4, tensor_split="1,1,1,1"),
    ),
    GroupCase(
        "LWS: subdomainPolicy UniquePerReplica: each group's names under its leader's own Service",
        lws(3, group_template(leader()), subdomain_policy="UniquePerReplica"),
        GroupExpect(devices=4, tensor_split="1,1,1,1", leader_placed=False, rpc_host="$(GPU_SHARD_POD_NAME)"),
    ),
    GroupCase(
        "LWS: a leader started through a shell gets LLAMA_ARG_* env, RPC included",
        lws(
            3,
            group_template(
                container(image=RPC_IMAGE, command=["sh", "-c", "exec /app/llama-server -m /models/llama-70b.gguf --host 0.0.0.0"])
            ),
        ),
        GroupExpect(devices=4, leader_env=(("LLAMA_ARG_SPLIT_MODE", "layer"), ("LLAMA_ARG_TENSOR_SPLIT", "1,1,1,1")), leader_placed=False),
    ),
    GroupCase(
        "LWS: the user's own RPC server command is kept, its port used, and bound to the pod IP",
        lws(
            3,
            group_template(leader()),
            group_template(worker(command=["/app/ggml-rpc-server"], args=["-p", "50060", "-c"])),
        ),
        GroupExpect(
            devices=4,
            tensor_split="1,1,1,1",
            rpc_port=50060,
            leader_placed=False,
            worker_argv=("/app/ggml-rpc-server", "-p", "50060", "-c", "-H", "$(GPU_SHARD_POD_IP)"),
        ),
    ),
    GroupCase(
        "LWS: the user's -ngl is kept and reported as theirs",
        lws(3, group_template(leader(args=[*LEADER_ARGS, "-ngl", "80"]))),
        GroupExpect(devices=4, tensor_split="1,1,1,1", leader_args=(("-ngl", "80"),), leader_placed=False),
    ),
    GroupCase(
        "LWS: no NetworkPolicy selects the workers: a warning",
        lws(3, group_template(leader())),
        GroupExpect(devices=4, tensor_split="1,1,1,1", leader_placed=False, warnings=("no NetworkPolicy",)),
        policies=(),
    ),
    GroupCase(
        "LWS: the leader template's tensor-split annotation splits unevenly over the group's devices",
        lws(3, group_template(leader(gpus="1"), annotations={"gpu-shard.io/tensor-split": "3,3,3,3,1"})),
        GroupExpect(devices=5, tensor_split="3,3,3,3,1"),
    ),
    # --- rejections ---
    GroupCase(
        "LWS: a tensor-split annotation with too few values for the group's devices",
        lws(3, group_template(leader(gpus="1"), annotations={"gpu-shard.io/tensor-split": "1,1"})),
        GroupExpect(denied=frozenset({"tensor-split-arity"})),
    ),
    GroupCase(
        "LWS: a split-mode annotation other than layer",
        lws(3, group_template(leader(), annotations={"gpu-shard.io/split-mode": "row"})),
        GroupExpect(denied=frozenset({"rpc-conflict"})),
    ),
    GroupCase(
        "LWS: 2 x 2 GPUs fit on one 8-GPU node: use a Deployment",
        lws(2, group_template(leader(gpus="2"))),
        GroupExpect(denied=frozenset({"lws-fits-one-node"})),
        nodes=(gpu_node("dgx-1", 8), gpu_node("gpu-b", 2)),
    ),
    GroupCase(
        "LWS: leader and worker images differ",
        lws(3, group_template(leader()), group_template(worker(image="registry.example.com/llama.cpp:b6400-rpc-cuda"))),
        GroupExpect(denied=frozenset({"rpc-image-mismatch"})),
    ),
    GroupCase(
        "LWS: official llama.cpp images have no RPC backend",
        lws(3, group_template(leader(image=SERVER_CUDA)), group_template(worker(image=SERVER_CUDA))),
        GroupExpect(denied=frozenset({"rpc-image-without-rpc"})),
    ),
    GroupCase(
        "LWS: startupPolicy LeaderReady deadlocks",
        lws(3, group_template(leader()), startup_policy="LeaderReady"),
        GroupExpect(denied=frozenset({"lws-startup-deadlock"})),
    ),
    GroupCase(
        "LWS: a user --rpc that is not the group's workers",
        lws(3, group_template(leader(args=[*LEADER_ARGS, "--rpc", "10.0.0.5:50052"]))),
        GroupExpect(denied=frozenset({"rpc-conflict"})),
    ),
    GroupCase(
        "LWS: --split-mode row does not work over RPC",
        lws(3, group_template(leader(args=[*LEADER_ARGS, "-sm", "row"]))),
        GroupExpect(denied=frozenset({"rpc-conflict"})),
    ),
    GroupCase(
        "LWS: -dev leaves devices out of the split",
        lws(3, group_template(leader(gpus="1", args=[*LEADER_ARGS, "-dev", "CUDA0"]))),
        GroupExpect(denied=frozenset({"rpc-conflict"})),
    ),
    GroupCase(
        "LWS: the worker's RPC server bound to loopback",
        lws(3, group_template(leader()), group_template(worker(command=["ggml-rpc-server", "-H", "127.0.0.1"]))),
        GroupExpect(denied=frozenset({"rpc-conflict"})),
    ),
    GroupCase(
        "LWS: a tensor split of 2 values for 4 devices",
        lws(3, group_template(leader(args=[*LEADER_ARGS, "-ts", "1,1"]))),
        GroupExpect(denied=frozenset({"tensor-split-arity"})),
    ),
    GroupCase(
        "LWS: hostNetwork exposes the RPC port",
        lws(3, group_template(leader(), host_network=True)),
        GroupExpect(denied=frozenset({"rpc-host-network"})),
    ),
    GroupCase(
        "LWS: 4 GPUs per worker, no node has more than 2",
        lws(3, group_template(leader()), group_template(worker(gpus="4"))),
        GroupExpect(denied=frozenset({"exceeds-cluster-capacity"})),
    ),
    GroupCase(
        "LWS: 2-GPU workers where every 2-GPU node is time-sliced: judged as a pod is",
        lws(3, group_template(leader())),
        GroupExpect(denied=frozenset({"no-matching-nodes"})),
        nodes=tuple(
            {**n, "metadata": {**n["metadata"], "labels": {**n["metadata"]["labels"], "nvidia.com/gpu.sharing-strategy": "time-slicing"}}}
            for n in TWO_GPU_NODES
        ),
    ),
    GroupCase(
        "LWS: workers without GPUs",
        lws(3, group_template(leader(gpus="2")), group_template(worker(gpus=None))),
        GroupExpect(denied=frozenset({"rpc-worker-without-gpus"})),
    ),
    GroupCase(
        "LWS: 9 workers x 2 GPUs are more devices than llama.cpp schedules",
        lws(10, group_template(leader())),
        GroupExpect(denied=frozenset({"rpc-too-many-devices"})),
    ),
    GroupCase(
        "LWS: a router leader (--models-preset, no -m) would share the workers between its children",
        lws(3, group_template(leader(args=["--models-preset", "/presets/models.ini", "--host", "0.0.0.0"]))),
        GroupExpect(denied=frozenset({"rpc-router-leader"})),
    ),
    GroupCase(
        "LWS: size 1 has no workers",
        lws(1, group_template(leader(gpus="2"))),
        GroupExpect(denied=frozenset({"lws-size"})),
    ),
    GroupCase(
        "LWS: a leader template that runs no llama-server",
        lws(3, group_template(container(image=RPC_IMAGE, command=["/start.sh"]))),
        GroupExpect(denied=frozenset({"no-llama-container"})),
    ),
)


def group_case(name: str) -> GroupCase:
    return next(case for case in GROUP_CASES if case.name == name)
