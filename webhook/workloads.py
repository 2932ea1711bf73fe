"""Where each workload kind keeps its pod template.

Templates are validated, never mutated: a webhook that rewrites a Deployment's
template fights GitOps tools, which would keep reverting it. The pods the
controller creates from the template are mutated one by one instead.
"""

from __future__ import annotations

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

WORKLOAD_RESOURCES: dict[str, str] = {
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "replicasets": "ReplicaSet",
    "replicationcontrollers": "ReplicationController",
    "jobs": "Job",
    "cronjobs": "CronJob",
    "podtemplates": "PodTemplate",
}


def pod_template(workload: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The template as a pod-shaped dict (metadata + spec), or None when it has none."""
    node: Any = workload
    for key in TEMPLATE_PATHS[kind]:
        node = as_dict(node).get(key)
    if not isinstance(node, dict):
        return None
    return {"apiVersion": "v1", "kind": "Pod", "metadata": as_dict(node.get("metadata")), "spec": node.get("spec")}
