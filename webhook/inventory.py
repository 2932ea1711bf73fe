"""What the cluster's nodes can hold, and the admission rules that use it.

Pure: an :class:`Inventory` is an immutable snapshot of node facts (GPUs per
configured resource, the GPU labels, taints, unschedulable); where it comes
from (a watch in :mod:`webhook.nodewatch`, or a ``kubectl get nodes -o yaml``
file for ``preview --nodes``) is the edges' business.

Capacity is a property of the cluster, not of its current usage: allocatable,
never "free right now", so a busy cluster never causes a rejection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.config import Config
from webhook.objects import as_dict, as_list, parse_quantity
from webhook.violation import Violation

EXTRA_LABELS = ("nvidia.com/gpu.memory", "cloud.google.com/gke-accelerator")


@dataclass(frozen=True)
class Taint:
    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class NodeFacts:
    name: str
    gpus: Mapping[str, int]
    labels: Mapping[str, str]
    taints: tuple[Taint, ...] = ()
    unschedulable: bool = False


@dataclass(frozen=True)
class Inventory:
    nodes: Mapping[str, NodeFacts] = field(default_factory=dict)
    synced: bool = False


def relevant_labels(config: Config) -> tuple[str, ...]:
    return (config.gpu_count_label, config.product_label, config.sharing_strategy_label, config.cuda_driver_label, *EXTRA_LABELS)


def node_facts(node: Any, config: Config) -> NodeFacts | None:
    """The facts of one Node object (a dict as the API serves it); None without a name."""
    metadata = as_dict(as_dict(node).get("metadata"))
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return None
    allocatable = as_dict(as_dict(as_dict(node).get("status")).get("allocatable"))
    gpus = {resource: parse_quantity(allocatable.get(resource)) or 0 for resource in config.gpu_resources}
    labels = as_dict(metadata.get("labels"))
    kept = {key: str(labels[key]) for key in relevant_labels(config) if key in labels}
    spec = as_dict(as_dict(node).get("spec"))
    taints = tuple(
        Taint(str(t.get("key", "")), str(t.get("value", "")), str(t.get("effect", "")))
        for t in as_list(spec.get("taints"))
        if isinstance(t, dict)
    )
    return NodeFacts(name, gpus, kept, taints, bool(spec.get("unschedulable")))


def inventory_from(nodes: Iterable[Any], config: Config) -> Inventory:
    facts = (node_facts(node, config) for node in nodes)
    return Inventory({f.name: f for f in facts if f is not None}, synced=True)


def expression_matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes node-selector requirement semantics."""
    key, operator, values = expression.get("key"), expression.get("operator"), list(expression.get("values") or [])
    present = key in labels
    value = labels.get(str(key), "")
    if operator == "In":
        return present and value in values
    if operator == "NotIn":
        return not present or value not in values
    if operator == "Exists":
        return present
    if operator == "DoesNotExist":
        return not present
    if operator in ("Gt", "Lt") and present and values:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if operator == "Gt" else have < bound
    return False


def largest_node(inventory: Inventory, resource: str) -> NodeFacts | None:
    """The schedulable node with the most allocatable ``resource``; None when no node has any."""
    gpu_nodes = [n for n in inventory.nodes.values() if not n.unschedulable and n.gpus.get(resource, 0) > 0]
    return max(gpu_nodes, key=lambda n: (n.gpus[resource], n.name)) if gpu_nodes else None


def judge(
    resource: str, gpus: int, node_expressions: Sequence[Mapping[str, Any]], where: str, inventory: Inventory, config: Config
) -> tuple[list[Violation], list[str]]:
    """Violations and warnings for a pod that will need ``gpus`` of ``resource`` on one node, placed by ``node_expressions``."""
    schedulable = [n for n in inventory.nodes.values() if not n.unschedulable]
    largest = largest_node(inventory, resource)
    if largest is None:
        return [], [f"gpu-shard: no schedulable node has {resource} now; capacity not checked (an autoscaler may add nodes)"]
    gpu_nodes = [n for n in schedulable if n.gpus.get(resource, 0) > 0]
    if gpus > largest.gpus[resource]:
        return [
            Violation(
                "exceeds-cluster-capacity",
                f"{gpus} {resource} asked but the largest schedulable node ({largest.name}) has "
                f"{largest.gpus[resource]}; ask for at most {largest.gpus[resource]} or add bigger GPU nodes",
                where,
            )
        ], []

    warnings: list[str] = []
    expressions = list(node_expressions)
    if expressions and not any(config.gpu_count_label in n.labels for n in schedulable):
        warnings.append(
            f"gpu-shard: no node has the label {config.gpu_count_label}, so the injected affinity matches none; "
            "install GPU Feature Discovery or set GSW_INJECT_AFFINITY=false"
        )
        expressions = []
    big_enough = [n for n in gpu_nodes if n.gpus[resource] >= gpus]
    if any(all(expression_matches(e, n.labels) for e in expressions) for n in big_enough):
        return [], warnings
    products = sorted({n.labels.get(config.product_label, "?") for n in big_enough})
    wanted = ", ".join(f"{e['key']} {e['operator']} {','.join(e['values'])}" for e in expressions)
    return [
        Violation(
            "no-matching-nodes",
            f"no node with {gpus} {resource} matches {wanted} (those nodes have products: {', '.join(products)}); "
            "use nodes whose labels match, or change gpu-shard.io/gpu-product or the node labels",
            where,
        )
    ], warnings
