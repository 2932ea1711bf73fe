"""Checks of a table row's expectations against an admitted pod, shared by every tier."""

from __future__ import annotations

import json
from typing import Any

from tests import kubelet
from tests.cases import GPU_TOLERATION, Case


def llama_container(pod: dict[str, Any], case: Case) -> dict[str, Any]:
    named = (case.pod["metadata"].get("annotations") or {}).get("gpu-shard.io/container")
    containers = pod["spec"]["containers"]
    for candidate in containers:
        if candidate["name"] == (named or "llama"):
            return candidate
    return containers[0]


def argv(container: dict[str, Any]) -> list[str]:
    return [*(container.get("command") or []), *(container.get("args") or [])]


def contains_run(tokens: list[str], run: tuple[str, ...]) -> bool:
    return any(tuple(tokens[i : i + len(run)]) == run for i in range(len(tokens) - len(run) + 1))


def check_admitted_pod(case: Case, admitted: dict[str, Any], codes: set[str], warnings: list[str] | None = None) -> None:
    expect = case.expect
    assert codes == set(expect.denied), f"{case.name}: violations {codes}"
    if warnings is not None:
        for text in expect.warnings:
            assert any(text in w for w in warnings), f"{case.name}: no warning with {text!r} in {warnings}"
    if expect.status:
        status = json.loads(admitted["metadata"]["annotations"]["gpu-shard.io/status"])
        for path, value in expect.status:
            node: Any = status
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            assert node == value, f"{case.name}: status {path} is {node!r}, expected {value!r} ({status})"
    target = llama_container(admitted, case)
    tokens = argv(target)
    for run in expect.args_has:
        assert contains_run(tokens, run), f"{case.name}: {run} not in {tokens}"
    for token in expect.args_lacks:
        assert token not in tokens, f"{case.name}: {token} in {tokens}"
    env = {item["name"]: item.get("value") for item in target.get("env") or []}
    for name, value in expect.env:
        assert env.get(name) == value, f"{case.name}: env {name}={env.get(name)!r}"
    if expect.gpus is not None:
        resources = target["resources"]
        resource = next(r for r in resources["limits"] if "gpu" in r)
        assert str(resources["limits"][resource]) == str(expect.gpus)
        assert str(resources.get("requests", resources["limits"])[resource]) == str(expect.gpus)
    spec = admitted["spec"]
    if expect.node_expressions is not None:
        required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        terms = required.get("nodeSelectorTerms") or []
        if not expect.node_expressions:
            original_terms = (
                ((case.pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get("requiredDuringSchedulingIgnoredDuringExecution")
                or {}
            ).get("nodeSelectorTerms") or []
            assert terms == original_terms, f"{case.name}: affinity added {terms}"
        else:
            assert terms, f"{case.name}: no node affinity"
            for term in terms:
                for expression in expect.node_expressions:
                    assert term["matchExpressions"].count(expression) == 1, f"{case.name}: {expression} not once in {term}"
    if expect.toleration is not None:
        tolerations = spec.get("tolerations") or []
        gpu = [t for t in tolerations if t.get("key") in ("nvidia.com/gpu", "amd.com/gpu")]
        assert (len(gpu) == 1) is expect.toleration, f"{case.name}: tolerations {tolerations}"
        if expect.toleration and not case.pod["spec"].get("tolerations"):
            assert gpu == [GPU_TOLERATION]


STATUS_FIELDS = (("LLAMA_ARG_N_GPU_LAYERS", "gpuLayers"), ("LLAMA_ARG_SPLIT_MODE", "splitMode"), ("LLAMA_ARG_TENSOR_SPLIT", "tensorSplit"))


def check_status_is_what_runs(
    original: dict[str, Any], admitted: dict[str, Any], config_maps: dict[str, dict[str, str]] | None = None
) -> dict:
    """The status annotation states what the kubelet will hand llama-server, setting by setting,
    and says the webhook's values are the webhook's: checked against the independent oracle."""
    status = json.loads(admitted["metadata"]["annotations"]["gpu-shard.io/status"])
    name = status["container"]
    after = next(c for c in admitted["spec"]["containers"] if c["name"] == name)
    before = next(c for c in original["spec"]["containers"] if c["name"] == name)
    running, written = kubelet.process(after), kubelet.process(before)
    for key, field in STATUS_FIELDS:
        value, origin = kubelet.setting(running, key), status["origin"][field]
        if value is None:
            assert origin == "default", f"{field}: nobody sets it, yet the status says {origin}"
            assert status[field] == ("auto" if field == "gpuLayers" else None), status
        elif value is kubelet.HIDDEN:
            assert status[field] == "unknown" and origin.startswith("unknown:"), status
        else:
            assert status[field] == value, f"{field}: the status says {status[field]!r}, the process gets {value!r}"
            injected = kubelet.setting(written, key) is None
            assert origin.startswith("webhook:" if injected else "user:"), f"{field}: origin {origin}, injected={injected}"
    limits = (after.get("resources") or {}).get("limits") or {}
    if status.get("gpuSource") is None and status["resource"] in limits:
        assert str(status["gpus"]) == str(limits[status["resource"]])
    return status
