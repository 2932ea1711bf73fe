"""Cluster-aware validation: the node inventory, the rules that read it, the watch that keeps
it current against a real HTTP API, and the server and preview that use it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.cases import by_name, container, pod
from tests.fake_apiserver import FakeCluster, gpu_node
from tests.harness import ROOT, admission_review, eventually, running_server
from webhook.cluster import Cluster
from webhook.config import Config
from webhook.inventory import Inventory, expression_matches, inventory_from, node_facts
from webhook.review import review_pod
from webhook.watch import ClusterWatch, load_api_client

CONFIG = Config()


def four_gpu_pod(product: str | None = None) -> dict:
    annotations = {"gpu-shard.io/gpu-product": product} if product else None
    return pod(container(args=["-m", "/m.gguf"], gpus="4"), annotations=annotations)


def verdict(pod_object: dict, inventory: Inventory) -> tuple[set[str], list[str]]:
    review = review_pod(pod_object, CONFIG, Cluster(nodes=lambda: inventory))
    return {v.code for v in review.violations}, review.warnings


def test_node_facts_read_allocatable_labels_taints() -> None:
    node = gpu_node("a", 2, **{"nvidia.com/gpu.sharing-strategy": "none", "unrelated": "x"})
    node["spec"] = {"unschedulable": True, "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]}
    facts = node_facts(node, CONFIG)
    assert facts is not None
    assert facts.gpus == {"nvidia.com/gpu": 2, "amd.com/gpu": 0, "gpu.intel.com/i915": 0, "gpu.intel.com/xe": 0}
    assert facts.labels["nvidia.com/gpu.count"] == "2" and "unrelated" not in facts.labels
    assert facts.unschedulable and facts.taints[0].key == "nvidia.com/gpu"
    assert node_facts({"metadata": {}}, CONFIG) is None


@pytest.mark.parametrize(
    ("expression", "labels", "expected"),
    [
        ({"key": "c", "operator": "Gt", "values": ["1"]}, {"c": "2"}, True),
        ({"key": "c", "operator": "Gt", "values": ["1"]}, {"c": "1"}, False),
        ({"key": "c", "operator": "Gt", "values": ["1"]}, {}, False),
        ({"key": "c", "operator": "Lt", "values": ["3"]}, {"c": "2"}, True),
        ({"key": "s", "operator": "NotIn", "values": ["mps"]}, {}, True),
        ({"key": "s", "operator": "NotIn", "values": ["mps"]}, {"s": "mps"}, False),
        ({"key": "p", "operator": "In", "values": ["L4"]}, {"p": "L4"}, True),
        ({"key": "p", "operator": "Exists"}, {}, False),
        ({"key": "p", "operator": "DoesNotExist"}, {}, True),
    ],
)
def test_node_selector_semantics(expression: dict, labels: dict, expected: bool) -> None:
    assert expression_matches(expression, labels) is expected


def test_more_gpus_than_any_node_is_rejected_naming_the_largest() -> None:
    inventory = inventory_from([gpu_node("small", 1), gpu_node("pair", 2)], CONFIG)
    codes, _ = verdict(four_gpu_pod(), inventory)
    assert codes == {"exceeds-cluster-capacity"}
    review = review_pod(four_gpu_pod(), CONFIG, Cluster(nodes=lambda: inventory))
    assert "largest schedulable node (pair) has 2" in review.violations[0].message


def test_unschedulable_nodes_do_not_count() -> None:
    cordoned = gpu_node("big", 8)
    cordoned["spec"]["unschedulable"] = True
    codes, _ = verdict(four_gpu_pod(), inventory_from([cordoned, gpu_node("pair", 2)], CONFIG))
    assert codes == {"exceeds-cluster-capacity"}


def test_a_product_the_cluster_lacks_matches_no_node() -> None:
    inventory = inventory_from([gpu_node("a100", 8, product="NVIDIA-A100-SXM4-80GB")], CONFIG)
    codes, _ = verdict(four_gpu_pod("NVIDIA-L4"), inventory)
    assert codes == {"no-matching-nodes"}
    assert verdict(four_gpu_pod("NVIDIA-A100-SXM4-80GB"), inventory)[0] == set()


def test_time_sliced_nodes_do_not_match_a_multi_gpu_pod() -> None:
    sliced = gpu_node("sliced", 8, **{"nvidia.com/gpu.sharing-strategy": "time-slicing"})
    assert verdict(four_gpu_pod(), inventory_from([sliced], CONFIG))[0] == {"no-matching-nodes"}


def test_no_gfd_labels_is_a_warning_not_a_rejection() -> None:
    codes, warnings = verdict(four_gpu_pod(), inventory_from([gpu_node("plain", 8, count_label=False)], CONFIG))
    assert codes == set()
    assert any("GPU Feature Discovery" in w for w in warnings)


def test_busy_gpus_never_cause_a_rejection() -> None:
    node = gpu_node("busy", 4)
    node["status"]["capacity"] = {"nvidia.com/gpu": "4"}  # every GPU in use: allocatable is unchanged
    assert verdict(four_gpu_pod(), inventory_from([node], CONFIG))[0] == set()


def test_unsynced_inventory_fails_open_with_a_warning() -> None:
    codes, warnings = verdict(four_gpu_pod(), Inventory())
    assert codes == set() and any("not synced" in w for w in warnings)


def test_cpu_pods_and_pods_without_a_plan_are_not_judged() -> None:
    inventory = inventory_from([gpu_node("pair", 2)], CONFIG)
    cpu = by_name("regression: CPU-only pod that opts in with no GPU is untouched").fresh_pod()
    assert verdict(cpu, inventory) == (set(), [])


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster().start()
    yield fake
    fake.close()


def test_watch_converges_through_events_410_and_dropped_connections(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.add(gpu_node("pair", 2))
    watcher = ClusterWatch(load_api_client(cluster.kubeconfig(tmp_path)), CONFIG, nodes=True, dra=False, max_backoff=0.2)
    watcher.start()
    try:
        eventually(lambda: watcher.nodes().synced and set(watcher.nodes().nodes) == {"pair"})
        rules = Cluster(nodes=watcher.nodes)

        def codes() -> set[str]:
            return {v.code for v in review_pod(four_gpu_pod(), CONFIG, rules).violations}

        assert codes() == {"exceeds-cluster-capacity"}

        cluster.add(gpu_node("quad", 4))
        eventually(lambda: "quad" in watcher.nodes().nodes)
        assert codes() == set()

        cluster.expire()  # 410 Gone: the watcher lists again
        cluster.delete("quad")
        eventually(lambda: "quad" not in watcher.nodes().nodes)
        assert codes() == {"exceeds-cluster-capacity"}

        cluster.drop_watches()  # the connection dies mid-stream
        cluster.modify(gpu_node("pair", 4))
        eventually(lambda: watcher.nodes().nodes["pair"].gpus["nvidia.com/gpu"] == 4)
        assert codes() == set()
        lists = [r for r in cluster.requests if "watch=true" not in r]
        watches = [r for r in cluster.requests if "watch=true" in r]
        assert len(lists) >= 2, "410 and the dropped connection make the watcher list again"
        assert any("resourceVersion=" in w for w in watches)
    finally:
        watcher.stop()


def test_unreachable_api_server_marks_the_inventory_unsynced(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.add(gpu_node("pair", 2))
    watcher = ClusterWatch(load_api_client(cluster.kubeconfig(tmp_path)), CONFIG, nodes=True, dra=False, max_backoff=0.2)
    watcher.start()
    try:
        eventually(lambda: watcher.nodes().synced)
        cluster.close()
        eventually(lambda: not watcher.nodes().synced)
        review = review_pod(four_gpu_pod(), CONFIG, Cluster(nodes=watcher.nodes))
        assert review.violations == [] and any("not synced" in w for w in review.warnings)
    finally:
        watcher.stop()


def test_server_with_cluster_checks_follows_the_nodes(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.add(gpu_node("pair", 2))
    with running_server(tmp_path, ["--kubeconfig", str(cluster.kubeconfig(tmp_path))]) as server:

        def allowed() -> bool:
            answer = requests.post(server.url + "/validate", data=json.dumps(admission_review(four_gpu_pod())), verify=server.ca, timeout=5)
            return bool(answer.json()["response"]["allowed"])

        eventually(lambda: not allowed())  # both workers synced and reject 4 GPUs on a 2-GPU cluster
        cluster.add(gpu_node("quad", 4))
        eventually(allowed)
        assert requests.get(server.url + "/readyz", verify=server.ca, timeout=5).status_code == 200


def test_preview_takes_a_nodes_file(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [gpu_node("pair", 2)]}))
    manifest = ROOT / "manifests" / "examples" / "llama-70b-4gpu.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "preview", "-f", str(manifest), "--nodes", str(nodes)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "[exceeds-cluster-capacity]" in result.stdout
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [gpu_node("quad", 4)]}))
    ok = subprocess.run(
        [sys.executable, "-m", "webhook", "preview", "-f", str(manifest), "--nodes", str(bigger)], cwd=ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stdout
