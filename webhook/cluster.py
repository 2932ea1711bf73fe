"""What admission knows about the cluster, and the rules that need it.

Admission never makes a network call: these read in-memory snapshots that list +
watch keeps current (:mod:`webhook.watch`), or that ``preview`` builds from files.
Until a snapshot is synced -- or while the API server is unreachable -- the checks
that need it are skipped with a warning (fail open).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.claims import NO_CLAIM_OBJECTS, ClaimObjects, judge_capacity
from webhook.config import Config
from webhook.inventory import Inventory, judge
from webhook.networkpolicy import PolicySnapshot
from webhook.objects import container_field
from webhook.plan import GpuCount, Planning
from webhook.violation import Violation


def _no_claims() -> ClaimObjects:
    return NO_CLAIM_OBJECTS


@dataclass(frozen=True)
class Cluster:
    """Snapshot readers. ``nodes`` None: the capacity checks are off; ``network_policies`` None: not watched."""

    nodes: Callable[[], Inventory] | None = None
    claims: Callable[[], ClaimObjects] = field(default=_no_claims)
    network_policies: Callable[[], PolicySnapshot] | None = None


NO_CLUSTER = Cluster()


def judge_placement(
    gpus: GpuCount, node_expressions: Sequence[Mapping[str, Any]], where: str, claims: ClaimObjects, cluster: Cluster, config: Config
) -> tuple[list[Violation], list[str]]:
    """Capacity and placement violations and warnings for a pod holding ``gpus``, placed by ``node_expressions``."""
    if cluster.nodes is None or not gpus.count:
        return [], []
    if gpus.source == "claim":
        if not claims.synced:
            return [], ["gpu-shard: claim capacity not checked: the DRA objects are not synced (API server unreachable?)"]
        return judge_capacity(gpus.count, (gpus.resource or "",), claims, where)
    inventory = cluster.nodes()
    if not inventory.synced:
        return [], ["gpu-shard: cluster checks skipped: the node inventory is not synced (API server unreachable?)"]
    return judge(gpus.resource or "", gpus.count, node_expressions, where, inventory, config)


def cluster_rules(planning: Planning, claims: ClaimObjects, cluster: Cluster, config: Config) -> tuple[list[Violation], list[str]]:
    """Capacity and placement violations and warnings for a planned pod."""
    plan = planning.plan
    if plan is None:
        return [], []
    return judge_placement(plan.gpus, plan.node_expressions, container_field(plan.index, "resources"), claims, cluster, config)
