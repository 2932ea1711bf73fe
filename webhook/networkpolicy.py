"""Which pods the cluster's NetworkPolicies select: enough to tell whether RPC workers are fenced in.

A pure snapshot (namespace -> the pod selectors of its ingress policies) kept by the
watch in :mod:`webhook.watch`, and the label-selector semantics of
``metav1.LabelSelector``: ``matchLabels`` and ``matchExpressions`` ANDed, an empty
selector selecting every pod of the namespace.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.objects import as_dict, as_list


def selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in as_dict(selector.get("matchLabels")).items():
        if labels.get(str(key)) != str(value):
            return False
    for expression in as_list(selector.get("matchExpressions")):
        expression = as_dict(expression)
        key, operator = str(expression.get("key")), expression.get("operator")
        values = [str(v) for v in as_list(expression.get("values"))]
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False  # unknown operator: the API server refuses it; never count it as protection
    return True


def ingress_selector(policy: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod selector of a policy that restricts ingress; None for egress-only policies."""
    spec = as_dict(policy.get("spec"))
    types = as_list(spec.get("policyTypes")) or ["Ingress"]  # unset: Ingress (plus Egress when it has egress rules)
    if "Ingress" not in types:
        return None
    return as_dict(spec.get("podSelector"))


@dataclass(frozen=True)
class PolicySnapshot:
    selectors: Mapping[str, tuple[Mapping[str, Any], ...]] = field(default_factory=dict)
    synced: bool = False

    def selects(self, namespace: str, labels: Mapping[str, str]) -> bool:
        return any(selector_matches(s, labels) for s in self.selectors.get(namespace, ()))


def snapshot_of(selectors: Iterable[tuple[str, Mapping[str, Any]]], synced: bool = True) -> PolicySnapshot:
    """The snapshot of (namespace, ingress pod selector) pairs: what the watch keeps, or what a file lists."""
    by_namespace: dict[str, list[Mapping[str, Any]]] = {}
    for namespace, selector in selectors:
        by_namespace.setdefault(namespace, []).append(selector)
    return PolicySnapshot({ns: tuple(found) for ns, found in by_namespace.items()}, synced)


def policy_entry(policy: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(namespace, pod selector) of a policy that restricts ingress; None for any other."""
    selector = ingress_selector(policy)
    namespace = as_dict(policy.get("metadata")).get("namespace")
    return (namespace, selector) if selector is not None and isinstance(namespace, str) else None


def snapshot_from(policies: Iterable[Mapping[str, Any]], synced: bool = True) -> PolicySnapshot:
    return snapshot_of((entry for entry in map(policy_entry, policies) if entry is not None), synced)
