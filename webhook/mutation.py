"""Apply a sharding plan to a pod: flags or env, GPU count, scheduling, status.

The pod passed in is never modified. The result shares every subtree it does
not change with the input (see :mod:`webhook.patch` for why), so callers must
treat both as read-only.

What the user already wrote is respected: an option the container sets in its
argv or ``LLAMA_ARG_*`` env is not injected again; whether the user's value is
acceptable is for :mod:`webhook.rules` to say, never silently overwritten.

The status annotation is written last, from the reading of the container as
mutated (:mod:`webhook.report`), so it states what will run, not what was meant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webhook.claims import ClaimObjects
from webhook.config import Config
from webhook.launch import Channel
from webhook.llamacpp import INJECTED_SPELLING
from webhook.objects import absent_or, as_dict, as_list
from webhook.plan import Planning
from webhook.reading import ContainerReading, PodReading, reread_target
from webhook.report import Report, build_report
from webhook.scheduling import with_gpu_toleration, with_node_expressions


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Mutation:
    pod: dict[str, Any]
    reading: PodReading  # of ``pod``
    report: Report | None


def mutate(reading: PodReading, planning: Planning, config: Config, claims: ClaimObjects) -> Mutation:
    """The pod as the mutating webhook would admit it."""
    pod = reading.pod
    plan = planning.plan
    if plan is None or reading.target is None:
        return Mutation(pod, reading, None)

    spec = dict(pod["spec"])
    containers = list(spec["containers"])
    container = dict(containers[plan.index])
    inject_settings(container, plan.settings(), plan.channel, reading.target)
    if plan.gpus.set_count and plan.gpus.resource is not None and plan.gpus.count is not None:
        _set_gpu_count(container, plan.gpus.resource, plan.gpus.count)
    containers[plan.index] = container
    spec["containers"] = containers

    tolerations = with_gpu_toleration(spec.get("tolerations"), plan.toleration)
    if tolerations is not spec.get("tolerations"):
        spec["tolerations"] = tolerations
    affinity = with_node_expressions(spec.get("affinity"), list(plan.node_expressions))
    if affinity is not spec.get("affinity"):
        spec["affinity"] = affinity

    mutated = reread_target(reading, {**pod, "spec": spec}, config, claims)
    assert mutated.target is not None
    status_key = config.annotation("status")
    report = build_report(plan, reading.target, mutated.target, reading.annotations, status_key)
    metadata = dict(as_dict(pod.get("metadata")))
    if absent_or(metadata.get("annotations"), dict):  # else malformed, as above
        metadata["annotations"] = {**as_dict(metadata.get("annotations")), status_key: report.status()}
    final = {**pod, "metadata": metadata, "spec": spec}
    return Mutation(final, mutated, report)


def inject_settings(container: dict[str, Any], wanted: list[tuple[str, str]], channel: Channel, target: ContainerReading) -> None:
    """Each (option key, value) the container does not set yet, as flags or ``LLAMA_ARG_*`` (``target`` reads ``container``)."""
    present = target.settings
    missing = [(key, value) for key, value in wanted if present.effective(key) is None]
    if not missing:
        return
    field = "args" if channel == "args" else "env"
    if not absent_or(container.get(field), list):
        return  # malformed: the API server's to refuse, not ours to rewrite into something valid
    if channel == "args":
        if present.incomplete:
            return  # appended tokens would become the dangling option's value; the rules deny it
        tokens = [token for key, value in missing for token in (INJECTED_SPELLING[key], value)]
        container["args"] = [*as_list(container.get("args")), *tokens]
    else:
        container["env"] = [*as_list(container.get("env")), *({"name": key, "value": value} for key, value in missing)]


def _set_gpu_count(container: dict[str, Any], resource: str, count: int) -> None:
    """The annotation decided N: write it to limits and requests (they must be equal)."""
    current = container.get("resources")
    if not absent_or(current, dict) or not all(absent_or(as_dict(current).get(k), dict) for k in ("limits", "requests")):
        return  # malformed, as above
    resources = dict(as_dict(current))
    quantity = str(count)
    resources["limits"] = {**as_dict(resources.get("limits")), resource: quantity}
    resources["requests"] = {**as_dict(resources.get("requests")), resource: quantity}
    container["resources"] = resources
