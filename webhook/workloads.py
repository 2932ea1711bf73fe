"""Where each workload kind keeps its pod template.

Templates are validated, never mutated: a webhook that rewrites a Deployment's
template fights GitOps tools, which would keep reverting it. The pods the
controller creates from the template are mutated one by one instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from webhook.objects import as_dict

TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "PodTemplate": ("template",),
}


def template_at(obj: Mapping[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    """The object at ``path`` (a pod template), or None when a level is missing or not an object."""
    node: Any = obj
    for key in path:
        node = as_dict(node).get(key)
    return node if isinstance(node, dict) else None


def pod_template(workload: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The template as a pod-shaped dict (metadata + spec), or None when it has none."""
    node = template_at(workload, TEMPLATE_PATHS[kind])
    if node is None:
        return None
    return {"apiVersion": "v1", "kind": "Pod", "metadata": as_dict(node.get("metadata")), "spec": node.get("spec")}
