"""The real-world corpus through the core: every verdict, every report against the process it describes."""

from __future__ import annotations

import copy
import json

import jsonpatch
import kubernetes_validate
import pytest

from tests.expectations import check_status_is_what_runs
from tests.realworld import CORPUS, DIRECTORY, RealWorld, Verdict, cluster_of, variant, workloads
from webhook.config import Config
from webhook.review import Review, as_pod, review_pod

CONFIG = Config()


def review_documents(documents: list[dict]) -> list[tuple[dict, Review]]:
    cluster = cluster_of(documents)
    found = []
    for workload in workloads(documents):
        pod = as_pod(workload, workload["kind"], workload["metadata"].get("namespace") or "default")
        assert pod is not None
        found.append((pod, review_pod(copy.deepcopy(pod), CONFIG, cluster)))
    return found


def check(entry: RealWorld, documents: list[dict], verdict: Verdict) -> None:
    ((pod, review),) = review_documents(documents)
    codes = {v.code for v in review.violations}
    assert codes == set(verdict.denied), f"{entry.file}: {[v.render() for v in review.violations]}"
    assert bool(review.patch) is verdict.changed, f"{entry.file}: patch {review.patch}"
    for text in verdict.warnings:
        assert any(text in w for w in review.warnings), f"{entry.file}: no warning with {text!r}: {review.warnings}"
    assert jsonpatch.apply_patch(copy.deepcopy(pod), review.patch) == review.pod
    if review.report is not None and review.allowed:
        status = check_status_is_what_runs(pod, review.pod)  # what admission can see: ConfigMaps are hidden from it
        for path, value in verdict.status:
            node = status
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            assert node == value, f"{entry.file}: status {path} is {node!r}, not {value!r} ({status})"
        kubernetes_validate.validate(review.pod, "1.34.0", strict=False)
    again = review_pod(review.pod, CONFIG, cluster_of(documents))
    assert again.patch == [] and again.violations == review.violations, f"{entry.file}: not idempotent"


def test_the_corpus_is_at_least_25_files_each_with_its_source_and_each_in_the_table() -> None:
    files = sorted(p.name for p in DIRECTORY.glob("*.yaml"))
    assert len(files) >= 25
    assert files == sorted(e.file for e in CORPUS)
    for name in files:
        header = (DIRECTORY / name).read_text().splitlines()[0]
        assert header.startswith("# Source: https://github.com/") and "/blob/" in header, name


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.file)
def test_real_manifest(entry: RealWorld) -> None:
    check(entry, entry.documents(), entry.verdict)


@pytest.mark.parametrize(
    ("entry", "gpus"),
    [(e, n) for e in CORPUS for n in sorted(e.variants)],
    ids=lambda v: v.file if isinstance(v, RealWorld) else f"{v}gpus",
)
def test_real_manifest_with_more_gpus(entry: RealWorld, gpus: int) -> None:
    documents = variant(entry.documents(), gpus)
    check(entry, documents, entry.variants[gpus])
    ((_, review),) = review_documents(documents)
    if review.allowed:
        status = json.loads(review.pod["metadata"]["annotations"]["gpu-shard.io/status"])
        assert status["gpus"] == gpus and status["splitMode"] == "layer"


def test_every_gpu_manifest_has_a_multi_gpu_variant() -> None:
    for entry in CORPUS:
        ((_, review),) = review_documents(entry.documents())
        if review.report is not None and review.allowed:
            assert entry.variants, f"{entry.file} shards a GPU pod: state its 2- or 4-GPU variant"
