"""Apply a sharding plan to a pod: flags or env, GPU count, scheduling, status.

The pod passed in is never modified. The result shares every subtree it does
not change with the input (see :mod:`webhook.patch` for why), so callers must
treat both as read-only.

What the user already wrote is respected: an option the container sets in its
argv or ``LLAMA_ARG_*`` env is not injected again; whether the user's value is
acceptable is for :mod:`webhook.rules` to say, never silently overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webhook.config import Config
from webhook.llamacpp import INJECTED_SPELLING, read_settings
from webhook.plan import Planning, ShardingPlan, as_dict, as_list, is_opted_in, plan_pod
from webhook.scheduling import gpu_node_expressions, with_gpu_toleration, with_node_expressions

NOT_OPTED_IN = Planning(None, None, None, ())


@dataclass(frozen=True)
class Mutation:
    pod: dict[str, Any]
    planning: Planning

    @property
    def plan(self) -> ShardingPlan | None:
        return self.planning.plan


def mutate(pod: dict[str, Any], config: Config) -> Mutation:
    """The pod as the mutating webhook would admit it."""
    if not is_opted_in(pod, config):
        return Mutation(pod, NOT_OPTED_IN)
    planning = plan_pod(pod, config)
    plan = planning.plan
    if plan is None:
        return Mutation(pod, planning)

    spec = dict(pod["spec"])
    containers = list(spec["containers"])
    container = dict(containers[plan.index])
    _inject_settings(container, plan, planning)
    if plan.set_count:
        _set_gpu_count(container, plan)
    containers[plan.index] = container
    spec["containers"] = containers

    tolerations = with_gpu_toleration(spec.get("tolerations"), plan.resource)
    if tolerations is not spec.get("tolerations"):
        spec["tolerations"] = tolerations
    affinity = with_node_expressions(spec.get("affinity"), gpu_node_expressions(plan.gpus, plan.products, plan.resource, config))
    if affinity is not spec.get("affinity"):
        spec["affinity"] = affinity

    metadata = dict(as_dict(pod.get("metadata")))
    annotations = dict(as_dict(metadata.get("annotations")))
    annotations[config.annotation("status")] = plan.status()
    metadata["annotations"] = annotations
    return Mutation({**pod, "metadata": metadata, "spec": spec}, planning)


def _inject_settings(container: dict[str, Any], plan: ShardingPlan, planning: Planning) -> None:
    assert planning.target is not None
    present = read_settings(planning.target.launch, container.get("env"))
    missing = [(key, value) for key, value in plan.settings() if present.effective(key) is None]
    if not missing:
        return
    if plan.channel == "args":
        if present.incomplete:
            return  # appended tokens would become the dangling option's value; the rules deny it
        tokens = [token for key, value in missing for token in (INJECTED_SPELLING[key], value)]
        container["args"] = [*as_list(container.get("args")), *tokens]
    else:
        container["env"] = [*as_list(container.get("env")), *({"name": key, "value": value} for key, value in missing)]


def _set_gpu_count(container: dict[str, Any], plan: ShardingPlan) -> None:
    """The annotation decided N: write it to limits and requests (they must be equal)."""
    resources = dict(as_dict(container.get("resources")))
    quantity = str(plan.gpus)
    resources["limits"] = {**as_dict(resources.get("limits")), plan.resource: quantity}
    resources["requests"] = {**as_dict(resources.get("requests")), plan.resource: quantity}
    container["resources"] = resources
