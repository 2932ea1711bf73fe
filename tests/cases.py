"""The table of pod shapes and what the webhook must do with each.

One row per scenario of the user's test plan (shared/seed/multi-gpu-testing-plan.md)
and per rule of the core issue. The unit tests, the server tests and the
preview tests all read this table, so a behaviour is stated once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

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
) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "image": image}
    if command is not None:
        spec["command"] = command
    if args is not None:
        spec["args"] = args
    if env is not None:
        spec["env"] = env
    limits = {**({resource: gpus} if gpus is not None else {}), **(extra_limits or {})}
    resources: dict[str, Any] = {}
    if limits:
        resources["limits"] = limits
    if requests is not None:
        resources["requests"] = {resource: requests}
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
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


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


@dataclass(frozen=True)
class Case:
    name: str
    pod: dict[str, Any]
    expect: Expect
    config: Config = field(default_factory=Config)

    def fresh_pod(self) -> dict[str, Any]:
        return copy.deepcopy(self.pod)


def ngl(value: str = "999") -> tuple[str, ...]:
    return ("--n-gpu-layers", value)


SPLIT_2 = (("--split-mode", "layer"), ("--tensor-split", "1,1"))

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
)


def by_name(name: str) -> Case:
    return next(case for case in CASES if case.name == name)


def with_config(case: Case, **changes: Any) -> Case:
    return replace(case, config=replace(case.config, **changes))
