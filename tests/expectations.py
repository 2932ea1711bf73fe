"""Checks of a table row's expectations against an admitted pod, shared by every tier."""

from __future__ import annotations

from typing import Any

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


def check_admitted_pod(case: Case, admitted: dict[str, Any], codes: set[str]) -> None:
    expect = case.expect
    assert codes == set(expect.denied), f"{case.name}: violations {codes}"
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
        assert str(resources["limits"]["nvidia.com/gpu"]) == str(expect.gpus)
        assert str(resources.get("requests", resources["limits"])["nvidia.com/gpu"]) == str(expect.gpus)
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
        gpu = [t for t in tolerations if t.get("key") == "nvidia.com/gpu"]
        assert (len(gpu) == 1) is expect.toleration, f"{case.name}: tolerations {tolerations}"
        if expect.toleration and not case.pod["spec"].get("tolerations"):
            assert gpu == [GPU_TOLERATION]
