"""Every row of the scenario table through the pure core: mutation, patch, rules."""

from __future__ import annotations

import copy
import re

import jsonpatch
import pytest

from tests.cases import CASES, Case
from tests.expectations import check_admitted_pod, check_status_is_what_runs, llama_container
from webhook.review import review_pod


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_scenario(case: Case) -> None:
    original = case.fresh_pod()
    review = review_pod(original, case.config, case.cluster())

    assert original == case.pod, "the input pod must not be modified"
    applied = jsonpatch.apply_patch(copy.deepcopy(case.pod), review.patch)
    assert applied == review.pod, "the patch must turn the original into the admitted pod"
    assert bool(review.patch) is case.expect.changed
    check_admitted_pod(case, applied, {v.code for v in review.violations}, review.warnings)

    again = review_pod(applied, case.config, case.cluster())
    assert again.patch == [], "mutating twice must give the same pod"
    assert again.violations == review.violations, "the admitted pod is judged as the mutation judged it"


@pytest.mark.parametrize("case", [c for c in CASES if c.expect.changed and not c.expect.denied], ids=lambda c: c.name)
def test_status_annotation_states_what_the_process_gets(case: Case) -> None:
    review = review_pod(case.fresh_pod(), case.config, case.cluster())
    status = check_status_is_what_runs(case.pod, review.pod)
    assert status["container"] == llama_container(review.pod, case)["name"]
    assert review.plan is not None and status["gpus"] == review.plan.gpus.count
    assert status["channel"] in ("args", "env")


@pytest.mark.parametrize("case", [c for c in CASES if c.expect.changed], ids=lambda c: c.name)
def test_patch_touches_only_the_llama_container_and_scheduling(case: Case) -> None:
    review = review_pod(case.fresh_pod(), case.config, case.cluster())
    index = case.pod["spec"]["containers"].index(llama_container(case.pod, case))
    allowed_prefixes = (
        f"/spec/containers/{index}/args",
        f"/spec/containers/{index}/env",
        f"/spec/containers/{index}/resources",
        "/spec/tolerations",
        "/spec/affinity",
        "/metadata/annotations",
    )
    for operation in review.patch:
        assert operation["path"].startswith(allowed_prefixes), operation


FIX_VERBS = ("add", "ask", "claim", "drop", "fix", "give", "keep", "list", "make", "remove", "set", "use", "write")


def field_exists(pod: dict, path: str) -> bool:
    """Whether a violation's field (``spec.containers[0].env[NAME]``, ``metadata.annotations[key]``) names part of the pod."""
    node: object = pod
    for part in re.findall(r"[^.\[\]]+|\[[^\]]*\]", path):
        key = part[1:-1] if part.startswith("[") else part
        if isinstance(node, list):
            node = (
                next((item for item in node if isinstance(item, dict) and item.get("name") == key), None)
                if not key.isdigit()
                else (node[int(key)] if int(key) < len(node) else None)
            )
        elif isinstance(node, dict):
            node = node.get(key)
        else:
            return False
        if node is None:
            return part in ("args", "command", "resources", "env", "image")  # the fix adds it
    return True


def test_every_violation_message_says_where_and_what_to_change() -> None:
    for case in CASES:
        review = review_pod(case.fresh_pod(), case.config, case.cluster())
        for violation in review.violations:
            assert len(violation.message) < 300
            fix = violation.message.rsplit("; ", 1)[-1]
            assert fix.split()[0].lower().rstrip(":,") in FIX_VERBS, f"{case.name}: no fix in {violation.message!r}"
            assert field_exists(review.pod, violation.field), f"{case.name}: {violation.field} is not in the pod"


def test_summary_says_when_the_command_is_a_wrapper() -> None:
    from tests.cases import by_name

    wrapper = review_pod(
        by_name("custom wrapper named by annotation gets env").fresh_pod(), by_name("custom wrapper named by annotation gets env").config
    )
    assert "LLAMA_ARG_* through" in (wrapper.summary() or "")
    direct = review_pod(by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod(), CASES[0].config)
    assert direct.summary() and "LLAMA_ARG_*" not in direct.summary()  # type: ignore[operator]
