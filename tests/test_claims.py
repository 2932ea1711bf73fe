"""GPUs from DRA claims: reading claim objects, capacity from ResourceSlices, the watch that keeps
them current against a real HTTP API, and the server that uses it (fail open until a template exists)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cases import claim_template, container, pod
from tests.fake_apiserver import DRA, FakeCluster, gpu_node
from tests.harness import admission_review, decoded_patch, eventually, running_server
from webhook.claims import claim_objects_from, device_requests, devices_per_node
from webhook.cluster import Cluster
from webhook.config import Config
from webhook.review import review_pod
from webhook.watch import ClusterWatch, load_api_client

CONFIG = Config()
TEMPLATES, SLICES, CLASSES = DRA + "resourceclaimtemplates", DRA + "resourceslices", DRA + "deviceclasses"


def claim_pod(template: str = "llama-gpus", args: list[str] | None = None) -> dict[str, Any]:
    return pod(
        container(args=args or ["-m", "/m.gguf"], claims=[{"name": "gpu"}]),
        resource_claims=[{"name": "gpu", "resourceClaimTemplateName": template}],
    )


def resource_slice(node: str, devices: int, driver: str = "gpu.nvidia.com", generation: int = 1, kind: str = "gpu") -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node}-{driver}-{generation}-{kind}"},
        "spec": {
            "driver": driver,
            "nodeName": node,
            "pool": {"name": node, "generation": generation, "resourceSliceCount": 1},
            "devices": [{"name": f"{kind}-{i}", "attributes": {"type": {"string": kind}}} for i in range(devices)],
        },
    }


def device_class(name: str, driver: str) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": name},
        "spec": {"selectors": [{"cel": {"expression": f"device.driver == '{driver}'"}}]},
    }


def test_v1_and_v1beta1_requests_read_the_same() -> None:
    v1 = {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": 2}}]}}
    v1beta1 = {"devices": {"requests": [{"name": "gpu", "deviceClassName": "gpu.nvidia.com", "count": 2}]}}
    assert device_requests(v1) == device_requests(v1beta1)
    (request,) = device_requests(v1)
    assert request.alternatives[0].count == 2 and not request.alternatives[0].all_devices


def test_slices_count_the_newest_pool_generation_and_only_whole_gpus() -> None:
    slices = [
        resource_slice("a", 2, generation=1),
        resource_slice("a", 4, generation=2),  # the pool was republished: generation 1 is stale
        resource_slice("b", 8, kind="mig"),  # MIG devices of node b are not whole GPUs
        resource_slice("c", 2, driver="gpu.amd.com"),
    ]
    assert devices_per_node(slices) == {"gpu.nvidia.com": {"a": 4, "b": 0}, "gpu.amd.com": {"c": 2}}


def verdict(pod_object: dict[str, Any], objects: list[dict[str, Any]]) -> tuple[set[str], list[str], Any]:
    claims = claim_objects_from(objects)
    review = review_pod(pod_object, CONFIG, Cluster(nodes=lambda: None, claims=lambda: claims))  # type: ignore[arg-type,return-value]
    return {v.code for v in review.violations}, review.warnings, review


def test_a_claim_for_more_devices_than_any_node_publishes_is_rejected_naming_the_node() -> None:
    objects = [claim_template("llama-gpus", 4), resource_slice("gpu-node-a", 2), resource_slice("gpu-node-b", 2)]
    codes, _, review = verdict(claim_pod(), objects)
    assert codes == {"exceeds-cluster-capacity"}
    assert "largest node (gpu-node-b) publishes 2" in review.violations[0].message
    assert verdict(claim_pod(), [claim_template("llama-gpus", 2), resource_slice("gpu-node-a", 2)])[0] == set()


def test_the_driver_behind_a_device_class_comes_from_its_selector() -> None:
    objects = [
        claim_template("llama-gpus", 2, device_class="gpu.nvidia.com"),
        device_class("gpu.nvidia.com", "k8s.gpu.example.com"),
        resource_slice("n", 1, driver="gpu.nvidia.com"),  # another driver's devices under the class's name
        resource_slice("n", 2, driver="k8s.gpu.example.com"),
    ]
    assert verdict(claim_pod(), objects)[0] == set()


def test_no_slices_is_a_warning_not_a_rejection() -> None:
    codes, warnings, _ = verdict(claim_pod(), [claim_template("llama-gpus", 2)])
    assert codes == set() and any("no ResourceSlice publishes gpu.nvidia.com" in w for w in warnings)


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster().start()
    yield fake
    fake.close()


def test_watch_follows_templates_classes_and_slices(cluster: FakeCluster, tmp_path: Path) -> None:
    watch = ClusterWatch(load_api_client(cluster.kubeconfig(tmp_path)), CONFIG, nodes=False, dra=True, max_backoff=0.2)
    watch.start()
    try:
        eventually(lambda: watch.claims().synced)
        assert watch.claims().templates == {}
        cluster.add(claim_template("llama-gpus", 2), TEMPLATES)
        cluster.add(resource_slice("node-a", 2), SLICES)
        eventually(lambda: ("default", "llama-gpus") in watch.claims().templates)
        eventually(lambda: watch.claims().devices_per_node.get("gpu.nvidia.com") == {"node-a": 2})
        review = review_pod(claim_pod(), CONFIG, Cluster(nodes=lambda: None, claims=watch.claims))  # type: ignore[arg-type,return-value]
        assert "--tensor-split" in review.pod["spec"]["containers"][0]["args"]

        cluster.expire()  # 410 Gone: listed again
        cluster.modify(claim_template("llama-gpus", 4), TEMPLATES)
        eventually(lambda: watch.claims().templates[("default", "llama-gpus")][0].alternatives[0].count == 4)
        codes = {v.code for v in review_pod(claim_pod(), CONFIG, Cluster(nodes=lambda: None, claims=watch.claims)).violations}  # type: ignore[arg-type,return-value]
        assert codes == {"exceeds-cluster-capacity"}
        cluster.delete("default/llama-gpus", TEMPLATES)
        eventually(lambda: ("default", "llama-gpus") not in watch.claims().templates)
    finally:
        watch.stop()


def test_an_api_server_without_dra_is_synced_and_empty(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.served -= {TEMPLATES, SLICES, CLASSES, DRA + "resourceclaims"}
    watch = ClusterWatch(load_api_client(cluster.kubeconfig(tmp_path)), CONFIG, nodes=False, dra=True, max_backoff=0.2)
    watch.start()
    try:
        eventually(lambda: watch.claims().synced)
        review = review_pod(claim_pod(), CONFIG, Cluster(claims=watch.claims))
        assert review.patch == [] and any("not known (yet)" in w for w in review.warnings)
    finally:
        watch.stop()


def claim_lookups(server: Any, result: str) -> float:
    text = requests.get(server.url + "/metrics", verify=server.ca, timeout=5).text
    prefix = f'gpu_shard_claim_lookups_total{{result="{result}",webhook="mutate"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix))


@pytest.mark.server
def test_server_fails_open_until_the_template_exists_then_shards(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.add(gpu_node("pair", 2))
    with running_server(tmp_path, ["--kubeconfig", str(cluster.kubeconfig(tmp_path))]) as server:

        def mutate() -> dict[str, Any]:
            answer = requests.post(server.url + "/mutate", data=json.dumps(admission_review(claim_pod())), verify=server.ca, timeout=5)
            return answer.json()["response"]

        first = mutate()
        assert first["allowed"] and decoded_patch({"response": first}) == []
        assert any("not known (yet)" in w or "not synced" in w for w in first.get("warnings", []))
        eventually(lambda: claim_lookups(server, "missing") >= 1, timeout=5)  # each worker writes its counts every second
        cluster.add(claim_template("llama-gpus", 2), TEMPLATES)

        def sharded() -> bool:
            patch = decoded_patch({"response": mutate()})
            return any(op.get("value") == "--tensor-split" or "--tensor-split" in json.dumps(op) for op in patch)

        eventually(sharded)  # every worker's watch has it
        eventually(lambda: claim_lookups(server, "found") >= 1, timeout=5)
