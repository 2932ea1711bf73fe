"""Where a sharded pod may run: GPU tolerations and required node affinity.

The functions take the user's ``tolerations`` / ``affinity`` values and return
new ones, never editing their arguments. Node-selector terms are ORed and the
expressions inside one term ANDed, so the GPU expressions are added to every
existing term: replacing the user's terms would widen or narrow placement in
ways nobody asked for.
"""

from __future__ import annotations

from typing import Any

from webhook.config import Config


def gpu_toleration(resource: str) -> dict[str, str]:
    return {"key": resource, "operator": "Exists", "effect": "NoSchedule"}


def tolerates(toleration: Any, key: str) -> bool:
    """Whether an existing toleration already lets the pod onto nodes tainted ``key``:NoSchedule."""
    if not isinstance(toleration, dict):
        return False
    effect = toleration.get("effect") or ""
    if effect not in ("", "NoSchedule"):
        return False
    operator = toleration.get("operator") or "Equal"
    if not toleration.get("key"):
        return operator == "Exists"
    return toleration.get("key") == key and operator == "Exists"


def with_gpu_toleration(tolerations: Any, key: str | None) -> Any:
    if tolerations is not None and not isinstance(tolerations, list):
        return tolerations  # malformed: the API server's to refuse, not ours to rewrite
    existing = tolerations or []
    if key is None or any(tolerates(t, key) for t in existing):
        return tolerations
    return [*existing, gpu_toleration(key)]


# CUDA 13 needs an NVIDIA driver of the 580 series or newer (CUDA 13.0 release notes,
# "minimum required driver version"); an older driver fails at cuInit and llama.cpp
# silently falls back to the CPU.
CUDA13_MIN_DRIVER_MAJOR = 580

# The taint key managed clusters put on GPU nodes for each vendor (GKE and AKS taint
# NVIDIA nodes nvidia.com/gpu; AMD's operator documents amd.com/gpu). A DRA pod gets
# its devices from a claim, not from this resource, but lands on the same tainted nodes.
CONVENTIONAL_TAINTS = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}


def conventional_taint(vendor: str | None) -> str | None:
    return CONVENTIONAL_TAINTS.get(vendor or "")


def gpu_node_expressions(gpus: int, products: tuple[str, ...], resource: str, cuda13: bool, config: Config) -> list[dict[str, Any]]:
    """The node-selector requirements a pod with ``gpus`` of ``resource`` needs.

    None when affinity is switched off, or for a resource the node labels do not
    describe: the default labels are NVIDIA GPU Feature Discovery's, and an AMD pod
    required to match ``nvidia.com/gpu.count`` would never be scheduled.
    """
    if not config.inject_affinity or resource not in config.affinity_resources:
        return []
    expressions: list[dict[str, Any]] = []
    if gpus >= 2:
        # GFD's count label counts physical GPUs; allocatable is inflated by time-slicing.
        expressions.append({"key": config.gpu_count_label, "operator": "Gt", "values": [str(gpus - 1)]})
        expressions.append({"key": config.sharing_strategy_label, "operator": "NotIn", "values": list(config.shared_strategies)})
    if products:
        expressions.append({"key": config.product_label, "operator": "In", "values": list(products)})
    if cuda13:
        expressions.append({"key": config.cuda_driver_label, "operator": "Gt", "values": [str(CUDA13_MIN_DRIVER_MAJOR - 1)]})
    return expressions


def _well_formed(affinity: Any) -> bool:
    """Each level of the path the expressions go into is absent or of its schema type."""
    node = affinity
    for key in ("nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms"):
        if node is None:
            return True
        if not isinstance(node, dict):
            return False
        node = node.get(key)
    terms = node
    return terms is None or (
        isinstance(terms, list) and all(isinstance(t, dict) and isinstance(t.get("matchExpressions") or [], list) for t in terms)
    )


def with_node_expressions(affinity: Any, expressions: list[dict[str, Any]]) -> Any:
    """``affinity`` with every expression added to every required node-selector term."""
    if not expressions or not _well_formed(affinity):
        return affinity  # a malformed affinity is the API server's to refuse, not ours to rewrite
    result = dict(affinity) if isinstance(affinity, dict) else {}
    node_affinity = dict(result.get("nodeAffinity") or {})
    required = dict(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = list(required.get("nodeSelectorTerms") or []) or [{}]
    new_terms = []
    for term in terms:
        current = list(term.get("matchExpressions") or [])
        missing = [e for e in expressions if e not in current]
        new_terms.append({**term, "matchExpressions": current + missing} if missing else term)
    if new_terms == (required.get("nodeSelectorTerms") or None):
        return affinity
    required["nodeSelectorTerms"] = new_terms
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    result["nodeAffinity"] = node_affinity
    return result
