"""Affinity and toleration merging, and the before/after patch helper."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from tests.cases import COUNT_2, NOT_SHARED, container, pod, two_terms
from webhook.config import Config
from webhook.patch import diff, escape
from webhook.review import review_pod
from webhook.scheduling import gpu_node_expressions, tolerates, with_gpu_toleration, with_node_expressions


def test_expressions_for_each_gpu_count() -> None:
    config = Config()
    assert gpu_node_expressions(1, (), "nvidia.com/gpu", False, config) == []
    assert gpu_node_expressions(2, (), "nvidia.com/gpu", False, config) == [COUNT_2, NOT_SHARED]
    assert gpu_node_expressions(1, ("NVIDIA-L4", "NVIDIA-A10G"), "nvidia.com/gpu", False, config) == [
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-L4", "NVIDIA-A10G"]}
    ]


def test_only_resources_the_labels_describe_get_affinity() -> None:
    assert gpu_node_expressions(4, ("NVIDIA-L4",), "amd.com/gpu", False, Config()) == []
    amd = Config(affinity_resources=("amd.com/gpu",), gpu_count_label="amd.com/gpu.count")
    assert gpu_node_expressions(4, (), "amd.com/gpu", False, amd)[0] == {"key": "amd.com/gpu.count", "operator": "Gt", "values": ["3"]}
    assert gpu_node_expressions(4, (), "nvidia.com/gpu", False, Config(inject_affinity=False)) == []


def test_cuda13_images_need_the_580_driver_series() -> None:
    expressions = gpu_node_expressions(1, (), "nvidia.com/gpu", True, Config())
    assert expressions == [{"key": "nvidia.com/cuda.driver.major", "operator": "Gt", "values": ["579"]}]
    assert gpu_node_expressions(1, (), "nvidia.com/gpu", True, Config(cuda_driver_label="nvidia.com/cuda.driver-version.major")) == [
        {"key": "nvidia.com/cuda.driver-version.major", "operator": "Gt", "values": ["579"]}
    ]


def test_label_keys_come_from_config() -> None:
    config = Config(gpu_count_label="example.com/gpus", sharing_strategy_label="example.com/sharing")
    keys = [e["key"] for e in gpu_node_expressions(4, (), "nvidia.com/gpu", False, config)]
    assert keys == ["example.com/gpus", "example.com/sharing"]


def test_expressions_are_added_to_every_term_and_terms_are_kept() -> None:
    affinity = two_terms()
    before = copy.deepcopy(affinity)
    merged = with_node_expressions(affinity, [COUNT_2])
    assert affinity == before
    terms = merged["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 2
    assert terms[0]["matchExpressions"][0]["key"] == "topology.kubernetes.io/zone"
    assert terms[1]["matchExpressions"][0]["key"] == "cloud.google.com/gke-nodepool"
    assert all(term["matchExpressions"][-1] == COUNT_2 for term in terms)


def test_match_fields_terms_and_preferred_affinity_survive() -> None:
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["gpu-1"]}]}]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": []}}],
        },
        "podAntiAffinity": {"x": 1},
    }
    merged = with_node_expressions(affinity, [COUNT_2])
    term = merged["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
    assert term["matchFields"] and term["matchExpressions"] == [COUNT_2]
    assert (
        merged["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        == affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    )
    assert merged["podAntiAffinity"] == {"x": 1}


def test_merging_twice_changes_nothing() -> None:
    once = with_node_expressions(None, [COUNT_2, NOT_SHARED])
    assert with_node_expressions(once, [COUNT_2, NOT_SHARED]) is once


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        ({"key": "nvidia.com/gpu", "operator": "Exists"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoExecute"}, False),
        ({"operator": "Exists"}, True),
        ({"key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}, False),
        ({"key": "other", "operator": "Exists"}, False),
    ],
)
def test_which_tolerations_already_tolerate_the_gpu_taint(toleration: dict, expected: bool) -> None:
    assert tolerates(toleration, "nvidia.com/gpu") is expected
    added = with_gpu_toleration([toleration], "nvidia.com/gpu")
    assert (len(added) == 1) is expected


def test_pointer_escaping() -> None:
    assert escape("nvidia.com/gpu") == "nvidia.com~1gpu"
    assert escape("a~b/c") == "a~0b~1c"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"a": 1}, {"a": 1, "b": {"c": [1]}}),
        ({"a": {"nvidia.com/gpu": "1"}}, {"a": {"nvidia.com/gpu": "2"}}),
        ({"l": [1, 2]}, {"l": [1, 2, 3, 4]}),
        ({"l": [1, 2, 3]}, {"l": [1]}),
        ({"l": [1, 2]}, {"l": [2, 1]}),
        ({"x": None}, {"x": {"y": 1}}),
        ({"x": 1}, {"x": True}),
        ({"a~/b": 1}, {"a~/b": 2}),
        ({"gone": 1, "kept": 2}, {"kept": 2}),
    ],
)
def test_diff_applies_with_jsonpatch(before: dict, after: dict) -> None:
    operations = diff(before, after)
    assert jsonpatch.apply_patch(copy.deepcopy(before), operations) == after
    assert diff(after, after) == []


MALFORMED_FIELDS = [
    pytest.param(("spec", "affinity"), {"nodeAffinity": [["x"]]}, id="nodeAffinity a list"),
    pytest.param(("spec", "affinity"), "zone-a", id="affinity a string"),
    pytest.param(("spec", "affinity"), {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": 1}}, id="required a number"),
    pytest.param(("spec", "tolerations"), {"key": "nvidia.com/gpu"}, id="tolerations an object"),
    pytest.param(("spec", "containers", 0, "args"), {"-m": "/m.gguf"}, id="args an object"),
    pytest.param(("metadata", "annotations"), ["gpu-shard.io/gpu-count"], id="annotations a list"),
]


@pytest.mark.parametrize(("path", "value"), MALFORMED_FIELDS)
def test_a_malformed_field_is_left_for_the_api_server_to_refuse(path: tuple[str | int, ...], value: object) -> None:
    """The webhook never turns an invalid field into a valid one: the API server's schema check, which
    runs after mutation, must still see (and refuse) what the user wrote."""
    admitted = pod(container(args=["-m", "/m.gguf"], gpus="4"))
    where: Any = admitted
    for step in path[:-1]:
        where = where[step]
    where[path[-1]] = value
    review = review_pod(copy.deepcopy(admitted), Config())
    after: Any = review.pod
    for step in path:
        after = after[step]
    assert after == value
    assert not any(op["path"].startswith("/" + "/".join(map(str, path))) for op in review.patch), review.patch
