"""One call that answers "what happens to this object?": reading, plan, mutation, rules, report.

The admission endpoints, the offline preview and the tests all go through
:func:`review_pod` / :func:`review_object`, so they cannot disagree. Data flows one
way: the pod is read once (:mod:`webhook.reading`), the plan decides from the
reading, the mutation applies the plan and re-reads the one container it changed,
the rules judge that final reading, and the report renders it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webhook.cluster import NO_CLUSTER, Cluster, cluster_rules
from webhook.config import Config
from webhook.mutation import mutate
from webhook.objects import as_dict
from webhook.patch import Operation, diff
from webhook.plan import Planning, ShardingPlan, plan_pod
from webhook.reading import read_pod
from webhook.report import Report
from webhook.rules import violations
from webhook.violation import Violation
from webhook.workloads import pod_template


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Review:
    pod: dict[str, Any]  # as it would be admitted
    patch: list[Operation]
    violations: list[Violation]
    planning: Planning
    report: Report | None
    warnings: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.violations

    @property
    def plan(self) -> ShardingPlan | None:
        return self.planning.plan

    def summary(self) -> str | None:
        return self.report.summary() if self.report else None


def mutate_pod(pod: dict[str, Any], config: Config, cluster: Cluster = NO_CLUSTER) -> tuple[list[Operation], Report | None, Planning]:
    """The mutating webhook's answer alone: the patch and the report, no rules (they are the validating webhook's)."""
    claims = cluster.claims()
    reading = read_pod(pod, config, claims)
    planning = plan_pod(reading, config)
    mutation = mutate(reading, planning, config, claims)
    return diff(pod, mutation.pod), mutation.report, planning


def review_pod(pod: dict[str, Any], config: Config, cluster: Cluster = NO_CLUSTER) -> Review:
    """Everything about one pod. A pod of a LeaderWorkerSet this webhook planned reads as not opted in
    (:func:`webhook.reading.group_member`): it was planned, and judged, on the LeaderWorkerSet."""
    claims = cluster.claims()
    reading = read_pod(pod, config, claims)
    planning = plan_pod(reading, config)
    mutation = mutate(reading, planning, config, claims)
    found = violations(mutation.reading, planning, config)
    warnings = list(planning.warnings)
    if planning.plan is not None:
        more, cluster_warnings = cluster_rules(planning, claims, cluster, config)
        found += more
        warnings += cluster_warnings
    return Review(mutation.pod, diff(pod, mutation.pod), found, planning, mutation.report, warnings)


def as_pod(obj: dict[str, Any], kind: str, namespace: str = "") -> dict[str, Any] | None:
    """A Pod itself, or the pod a workload's template describes; None when it has no template.

    Pods made by controllers carry no namespace in the object; the request has it.
    """
    pod = obj if kind == "Pod" else pod_template(obj, kind)
    if pod is None:
        return None
    metadata = as_dict(pod.get("metadata"))
    if namespace and not metadata.get("namespace"):
        pod = {**pod, "metadata": {**metadata, "namespace": namespace}}
    return pod


def review_object(obj: dict[str, Any], kind: str, config: Config, namespace: str = "", cluster: Cluster = NO_CLUSTER) -> Review | None:
    pod = as_pod(obj, kind, namespace)
    return None if pod is None else review_pod(pod, config, cluster)
