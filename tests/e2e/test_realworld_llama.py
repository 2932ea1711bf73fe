"""The real-world corpus against the real llama-server: every manifest the webhook admits, and
its 2- and 4-GPU variants, started as the kubelet would start the llama.cpp container (ConfigMaps
from the same file filled in, model and paths swapped for the tiny model), parse and serve."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests import kubelet
from tests.e2e.test_llama_server import serve_and_chat
from tests.realworld import CORPUS, RealWorld, cluster_of, config_maps, variant, workloads
from webhook.config import Config
from webhook.review import as_pod, review_pod

pytestmark = pytest.mark.e2e

ROWS = [(e, 1) for e in CORPUS if not e.verdict.denied] + [(e, n) for e in CORPUS for n, v in sorted(e.variants.items()) if not v.denied]


@pytest.mark.parametrize(("entry", "gpus"), ROWS, ids=lambda v: v.file if isinstance(v, RealWorld) else f"{v}gpu")
def test_admitted_real_manifest_starts_the_real_llama_server(
    entry: RealWorld, gpus: int, llama_binary: Path, tiny_model: Path, tmp_path: Path
) -> None:
    if entry.not_runnable:
        pytest.skip(entry.not_runnable)
    documents = entry.documents() if gpus == 1 else variant(entry.documents(), gpus)
    (workload,) = workloads(documents)
    pod = as_pod(workload, workload["kind"], "default")
    assert pod is not None
    review = review_pod(copy.deepcopy(pod), Config(), cluster_of(documents))
    assert review.allowed, review.violations
    annotations = review.pod["metadata"].get("annotations") or {}
    if "gpu-shard.io/status" in annotations:
        name = json.loads(annotations["gpu-shard.io/status"])["container"]
        target = next(c for c in review.pod["spec"]["containers"] if c["name"] == name)
    else:
        target = next(c for c in review.pod["spec"]["containers"] if kubelet.process(c).server_options is not None)
    serve_and_chat(target, llama_binary, tiny_model, tmp_path / "llama.log", config_maps(documents))
