"""Offline dry run: what would the webhook do to each object in a manifest?

``gpu-shard-webhook preview -f FILE`` is ``kubectl apply --dry-run=server`` for
people without a cluster at hand, and for the CI of a GitOps repository. It
runs the same :func:`webhook.review.review_pod` as the server: a Pod is shown
as it would be admitted, a workload as the pods its controller would create.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from webhook.config import Config
from webhook.plan import as_dict
from webhook.review import ExtraRules, no_extra_rules, review_object
from webhook.violation import Violation
from webhook.workloads import TEMPLATE_PATHS


@dataclass(frozen=True)
class Previewed:
    kind: str
    name: str
    pod: dict[str, Any] | None  # None: not a pod or workload
    violations: list[Violation]
    summary: str | None
    warnings: list[str]

    @property
    def admitted(self) -> bool:
        return not self.violations


def objects(documents: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Every object, with ``kind: List`` (kubectl get -o yaml) unpacked."""
    for document in documents:
        if not isinstance(document, dict):
            continue
        if document.get("kind") == "List" or str(document.get("kind", "")).endswith("List"):
            yield from (item for item in document.get("items") or [] if isinstance(item, dict))
        else:
            yield document


def preview_object(obj: dict[str, Any], config: Config, extra: ExtraRules = no_extra_rules) -> Previewed:
    kind = str(obj.get("kind") or "")
    metadata = as_dict(obj.get("metadata"))
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    if kind != "Pod" and kind not in TEMPLATE_PATHS:
        return Previewed(kind, name, None, [], None, [])
    review = review_object(obj, kind, config, str(metadata.get("namespace") or ""), extra)
    if review is None:
        return Previewed(kind, name, None, [], None, [])
    return Previewed(kind, name, review.pod, review.violations, review.summary(), review.warnings)


def render(results: Iterable[Previewed]) -> str:
    """A YAML stream: each admitted pod, with the decision in comments above it."""
    chunks = []
    for result in results:
        if result.pod is None:
            chunks.append(f"# {result.kind} {result.name}: not a pod or workload, skipped\n")
            continue
        subject = f"{result.kind} {result.name}" + (" (pod template)" if result.kind != "Pod" else "")
        lines = [f"--- # {subject}: {'admitted' if result.admitted else 'DENIED'}"]
        lines += [f"# gpu-shard: {result.summary}"] if result.summary else ["# gpu-shard: unchanged"]
        lines += [f"# warning: {w}" for w in result.warnings]
        lines += [f"# violation: {v.render()}" for v in result.violations]
        if result.admitted:
            lines.append(yaml.safe_dump(result.pod, sort_keys=False).rstrip("\n"))
        chunks.append("\n".join(lines) + "\n")
    return "".join(chunks)
