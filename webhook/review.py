"""One call that answers "what happens to this object?": mutation, patch, violations.

The admission endpoints, the offline preview and the tests all go through
:func:`review_pod` / :func:`review_object`, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from webhook.config import Config
from webhook.mutation import mutate
from webhook.patch import Operation, diff
from webhook.plan import ShardingPlan, as_dict
from webhook.rules import violations
from webhook.violation import Violation
from webhook.workloads import pod_template

# Rules that need more than the pod (the cluster's nodes): (pod, plan) -> (violations, warnings).
ExtraRules = Callable[[dict[str, Any], ShardingPlan | None], tuple[list[Violation], list[str]]]


def no_extra_rules(pod: dict[str, Any], plan: ShardingPlan | None) -> tuple[list[Violation], list[str]]:
    return [], []


@dataclass(frozen=True)
class Review:
    pod: dict[str, Any]  # as it would be admitted
    patch: list[Operation]
    violations: list[Violation]
    plan: ShardingPlan | None
    warnings: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.violations

    def summary(self) -> str | None:
        return self.plan.summary() if self.plan else None


def mutate_pod(pod: dict[str, Any], config: Config) -> tuple[list[Operation], ShardingPlan | None]:
    """The mutating webhook's answer alone: the patch and the plan, no rules (they are the validating webhook's)."""
    mutation = mutate(pod, config)
    return diff(pod, mutation.pod), mutation.plan


def review_pod(pod: dict[str, Any], config: Config, extra: ExtraRules = no_extra_rules) -> Review:
    mutation = mutate(pod, config)
    patch = diff(pod, mutation.pod)
    # Pods reach /validate already mutated: the patch is then empty, and the planning the
    # mutation made is the planning of the pod the rules judge -- no need to plan again.
    found = violations(mutation.pod, config, None if patch else mutation.planning)
    warnings: list[str] = []
    if mutation.plan is not None or found:
        more, warnings = extra(mutation.pod, mutation.plan)
        found = [*found, *more]
    return Review(mutation.pod, patch, found, mutation.plan, warnings)


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


def review_object(obj: dict[str, Any], kind: str, config: Config, namespace: str = "", extra: ExtraRules = no_extra_rules) -> Review | None:
    pod = as_pod(obj, kind, namespace)
    return None if pod is None else review_pod(pod, config, extra)
