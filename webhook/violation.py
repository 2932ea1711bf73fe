"""Violations are values, not exceptions: a stable code, a one-line fix, a field.

:data:`CODES` is the catalogue the README's troubleshooting table and the
``gpu_shard_rejections_total{code=...}`` metric use; every code a rule emits
must be listed here (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

# A rendered violation is a line a person reads in kubectl's output; a message that quotes a
# huge user value (a 64 KiB annotation, say) keeps its start and its fix at the end.
MAX_RENDERED = 400


def bounded(text: str, limit: int = MAX_RENDERED) -> str:
    if len(text) <= limit:
        return text
    tail = limit // 3
    return text[: limit - tail - 3] + " … " + text[-tail:]


@dataclass(frozen=True)
class Violation:
    code: str
    message: str
    field: str

    def render(self) -> str:
        return bounded(f"[{self.code}] {self.field}: {self.message}")


CODES: dict[str, str] = {
    "no-llama-container": "The pod opts in but no container runs llama-server.",
    "unknown-container": "The container annotation names a container the pod does not have.",
    "ambiguous-gpu-containers": "Several containers ask for GPUs and no annotation says which one is llama.cpp.",
    "ambiguous-llama-containers": "Several containers run llama-server and no annotation says which one to shard.",
    "bad-annotation": "An annotation of this project has a value it cannot use.",
    "bad-gpu-quantity": "The GPU limit or request is not a whole number.",
    "count-conflict": "The gpu-count annotation and the container's GPU limit (or DRA claim) disagree.",
    "ambiguous-gpu-source": "The container gets GPUs from both extended-resource limits and a DRA claim.",
    "requests-limits-mismatch": "GPU requests differ from GPU limits (Kubernetes requires them equal).",
    "too-many-gpus": "More GPUs than the configured maximum per node.",
    "mixed-mig": "A container asks for whole GPUs and MIG slices at once.",
    "gpu-flags-without-gpus": "GPU options on a container without GPUs: it would silently run on the CPU.",
    "missing-value": "An option at the end of the argv lacks its value (llama-server refuses to start).",
    "repeated-entrypoint": "The args repeat the program the official image's entrypoint already starts, which llama-server refuses.",
    "gpu-layers-invalid": "--n-gpu-layers is not a number, 'auto' or 'all' (llama-server refuses to start).",
    "cpu-image-with-gpus": "An official CPU-only image holds GPUs: the pod would run on the CPU.",
    "image-backend-mismatch": "The official image's backend cannot drive the GPUs' vendor (e.g. a ROCm image with nvidia.com/gpu).",
    "inline-value": "A GPU option written --flag=value, which llama-server refuses.",
    "tensor-split-arity": "The tensor split has a different number of values than the container has GPUs.",
    "tensor-split-invalid": "The tensor split is not a list of non-negative numbers with one above zero.",
    "tensor-split-too-long": "More than 15 tensor-split values, which llama-server refuses.",
    "split-mode-unknown": "A split mode llama-server does not know.",
    "split-mode-none-multi-gpu": "Split mode 'none' keeps the model on one GPU of several.",
    "main-gpu-out-of-range": "The main GPU index is not one of the container's GPUs.",
    "device-count-mismatch": "--device lists a different number of devices than the container has GPUs.",
    "cuda-visible-devices-mismatch": "CUDA_VISIBLE_DEVICES lists a different number of devices than the container has GPUs.",
    "visible-devices-mismatch": "HIP_/ROCR_VISIBLE_DEVICES, ONEAPI_DEVICE_SELECTOR, ZE_AFFINITY_MASK or GGML_VK_VISIBLE_DEVICES show a "
    "different number of devices than the container has GPUs.",
    "nvidia-visible-devices-set": "NVIDIA_VISIBLE_DEVICES set by hand shows the container GPUs it was not allocated.",
    "tensor-mode-fit": "Split mode 'tensor' needs --fit off.",
    "tensor-mode-flash-attn": "Split mode 'tensor' needs flash attention not 'off'.",
    "annotation-conflict": "The pod's annotation asks for one value and its argv or env sets another.",
    "flag-conflict": "The argv and a LLAMA_ARG_* variable set the same option to different values.",
    "exceeds-cluster-capacity": "No schedulable node has that many GPUs.",
    "no-matching-nodes": "No node matches the GPU count, sharing and product affinity the pod gets.",
    "lws-size": "A LeaderWorkerSet group of size 1 (or without a worker template) has no RPC workers.",
    "lws-startup-deadlock": "startupPolicy LeaderReady: LWS creates the workers after the leader is ready, and the leader waits for them.",
    "lws-fits-one-node": "The group's GPUs fit on one node: a single pod is faster and has no network in the inference path.",
    "rpc-worker-container": "The worker template's llama.cpp container is not clear.",
    "rpc-worker-without-gpus": "The worker template asks for no GPU.",
    "rpc-worker-count-unknown": "A group member's GPU count is unknown at admission, so the split cannot be planned.",
    "rpc-image-mismatch": "The leader and the workers run different images (the RPC protocol is version-checked).",
    "rpc-image-without-rpc": "An official llama.cpp image, built without the RPC backend, in a multi-node group.",
    "rpc-conflict": "A user-set --rpc, --device or split mode (or a loopback RPC bind) contradicts the multi-node plan.",
    "rpc-too-many-devices": "A group with more devices than llama.cpp schedules (15 besides the CPU).",
    "rpc-router-leader": "A multi-node leader without a model (a router): its children would share RPC servers serving one client each.",
    "rpc-host-network": "hostNetwork exposes the unauthenticated RPC port on the node's address.",
}
