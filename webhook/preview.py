"""Offline dry run: what would the webhook do to each object in a manifest?

``gpu-shard-webhook preview -f FILE`` is ``kubectl apply --dry-run=server`` for
people without a cluster at hand, and for the CI of a GitOps repository. It runs
the same :func:`webhook.review.review_pod` as the server: a Pod is shown as it
would be admitted, a workload as the pods its controller would create. Objects
that carry no pod (ConfigMaps, Services, claim templates) are passed through.

DRA claim templates and claims are resolved from the manifest itself and from
``--cluster-objects`` (``kubectl get resourceclaimtemplates,resourceclaims,
deviceclasses,resourceslices -A -o yaml``), the way the server resolves them
from its watch.

``-o yaml`` / ``-o json`` (kubectl's convention) print the objects as the API
server would store them instead: Pods and opted-in LeaderWorkerSets mutated, every
other object unchanged (workload templates are validated, never mutated), denied
objects left out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from webhook import multinode
from webhook.cluster import NO_CLUSTER, Cluster
from webhook.config import Config
from webhook.multinode import GroupReview, review_group
from webhook.objects import as_dict
from webhook.review import Review, review_object
from webhook.workloads import TEMPLATE_PATHS


@dataclass(frozen=True)
class Previewed:
    kind: str
    name: str
    obj: dict[str, Any]
    review: Review | GroupReview | None  # None: the object carries no pod, passed through

    @property
    def admitted(self) -> dict[str, Any]:
        """What is shown: the pod as admitted (a workload's as its pods will be), or the LeaderWorkerSet as mutated."""
        assert self.review is not None
        return self.review.obj if isinstance(self.review, GroupReview) else self.review.pod

    @property
    def stored(self) -> dict[str, Any] | None:
        """The object as the API server would store it; None when it would be denied."""
        if self.review is None:
            return self.obj
        if not self.review.allowed:
            return None
        return self.admitted if self.kind in ("Pod", multinode.KIND) else self.obj


def objects(documents: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """Every object, with ``kind: List`` (kubectl get -o yaml) unpacked."""
    for document in documents:
        if not isinstance(document, dict):
            continue
        if document.get("kind") == "List" or str(document.get("kind", "")).endswith("List"):
            yield from (item for item in document.get("items") or [] if isinstance(item, dict))
        else:
            yield document


def preview_object(obj: dict[str, Any], config: Config, cluster: Cluster = NO_CLUSTER) -> Previewed:
    kind = str(obj.get("kind") or "")
    metadata = as_dict(obj.get("metadata"))
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    if kind == multinode.KIND and multinode.opted_in(obj, config):
        return Previewed(kind, name, obj, review_group(obj, config, str(metadata.get("namespace") or "default"), cluster))
    if kind != "Pod" and kind not in TEMPLATE_PATHS:
        return Previewed(kind, name, obj, None)
    return Previewed(kind, name, obj, review_object(obj, kind, config, str(metadata.get("namespace") or "default"), cluster))


def render(results: Iterable[Previewed]) -> str:
    """A YAML stream: each admitted pod, with the decision in comments above it."""
    chunks = []
    for result in results:
        review = result.review
        if review is None:
            chunks.append(f"# {result.kind} {result.name}: carries no pod, passed through\n")
            continue
        template = " (pod template)" if result.kind not in ("Pod", multinode.KIND) else ""
        subject = f"{result.kind} {result.name}{template}"
        summary = review.summary()
        lines = [f"--- # {subject}: {'admitted' if review.allowed else 'DENIED'}"]
        lines += [f"# gpu-shard: {summary}"] if summary else ["# gpu-shard: unchanged"]
        lines += [f"# warning: {w}" for w in review.warnings]
        lines += [f"# violation: {v.render()}" for v in review.violations]
        if review.allowed:
            lines.append(yaml.safe_dump(result.admitted, sort_keys=False).rstrip("\n"))
        chunks.append("\n".join(lines) + "\n")
    return "".join(chunks)


def render_stored(results: Iterable[Previewed], output: str) -> str:
    """``-o yaml|json``: the objects as stored, in order; a List for json, as kubectl prints several."""
    stored = [r.stored for r in results if r.stored is not None]
    if output == "json":
        body: Any = stored[0] if len(stored) == 1 else {"apiVersion": "v1", "kind": "List", "items": stored}
        return json.dumps(body, indent=2) + "\n"
    return yaml.safe_dump_all(stored, sort_keys=False) if stored else ""


def tally(results: Iterable[Previewed]) -> tuple[int, int, int]:
    """(admitted, denied, passed through)."""
    admitted = denied = passed = 0
    for result in results:
        if result.review is None:
            passed += 1
        elif result.review.allowed:
            admitted += 1
        else:
            denied += 1
    return admitted, denied, passed
