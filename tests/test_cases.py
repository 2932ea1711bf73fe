"""Every row of the scenario table through the pure core: mutation, patch, rules."""

from __future__ import annotations

import copy
import json

import jsonpatch
import pytest

from tests.cases import CASES, Case
from tests.expectations import check_admitted_pod, llama_container
from webhook.review import review_pod


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_scenario(case: Case) -> None:
    original = case.fresh_pod()
    review = review_pod(original, case.config)

    assert original == case.pod, "the input pod must not be modified"
    applied = jsonpatch.apply_patch(copy.deepcopy(case.pod), review.patch)
    assert applied == review.pod, "the patch must turn the original into the admitted pod"
    assert bool(review.patch) is case.expect.changed
    check_admitted_pod(case, applied, {v.code for v in review.violations})

    again = review_pod(applied, case.config)
    assert again.patch == [], "mutating twice must give the same pod"
    assert again.violations == review.violations, "the admitted pod is judged as the mutation judged it"


@pytest.mark.parametrize("case", [c for c in CASES if c.expect.changed], ids=lambda c: c.name)
def test_status_annotation_records_the_plan(case: Case) -> None:
    review = review_pod(case.fresh_pod(), case.config)
    status = json.loads(review.pod["metadata"]["annotations"]["gpu-shard.io/status"])
    assert status["container"] == llama_container(review.pod, case)["name"]
    assert review.plan is not None
    assert status["gpus"] == review.plan.gpus
    assert status["channel"] in ("args", "env")


@pytest.mark.parametrize("case", [c for c in CASES if c.expect.changed], ids=lambda c: c.name)
def test_patch_touches_only_the_llama_container_and_scheduling(case: Case) -> None:
    review = review_pod(case.fresh_pod(), case.config)
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


def test_every_violation_message_says_what_to_change() -> None:
    for case in CASES:
        for violation in review_pod(case.fresh_pod(), case.config).violations:
            assert violation.message and len(violation.message) < 300
            assert violation.field


def test_summary_says_when_the_command_is_a_wrapper() -> None:
    from tests.cases import by_name

    wrapper = review_pod(
        by_name("custom wrapper named by annotation gets env").fresh_pod(), by_name("custom wrapper named by annotation gets env").config
    )
    assert wrapper.plan is not None and "LLAMA_ARG_* through" in wrapper.plan.summary()
    direct = review_pod(by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod(), CASES[0].config)
    assert direct.plan is not None and "LLAMA_ARG_*" not in direct.plan.summary()
