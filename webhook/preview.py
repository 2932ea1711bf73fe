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
from webhook.review import ExtraRules, Review, no_extra_rules, review_object
from webhook.workloads import TEMPLATE_PATHS


@dataclass(frozen=True)
class Previewed:
    kind: str
    name: str
    review: Review | None  # None: not a pod or workload


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
        return Previewed(kind, name, None)
    return Previewed(kind, name, review_object(obj, kind, config, str(metadata.get("namespace") or ""), extra))


def render(results: Iterable[Previewed]) -> str:
    """A YAML stream: each admitted pod, with the decision in comments above it."""
    chunks = []
    for result in results:
        review = result.review
        if review is None:
            chunks.append(f"# {result.kind} {result.name}: not a pod or workload, skipped\n")
            continue
        subject = f"{result.kind} {result.name}" + (" (pod template)" if result.kind != "Pod" else "")
        summary = review.summary()
        lines = [f"--- # {subject}: {'admitted' if review.allowed else 'DENIED'}"]
        lines += [f"# gpu-shard: {summary}"] if summary else ["# gpu-shard: unchanged"]
        lines += [f"# warning: {w}" for w in review.warnings]
        lines += [f"# violation: {v.render()}" for v in review.violations]
        if review.allowed:
            lines.append(yaml.safe_dump(review.pod, sort_keys=False).rstrip("\n"))
        chunks.append("\n".join(lines) + "\n")
    return "".join(chunks)
