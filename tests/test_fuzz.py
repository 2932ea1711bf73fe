"""Fuzzing the HTTP surface of the real Flask app (hypothesis).

Arbitrary bytes, arbitrary JSON, and structurally valid AdmissionReviews with
mutated field types and values go to /mutate and /validate. Invariants: the answer
is a well-formed AdmissionReview v1 carrying the request's uid, or a 4xx with a
one-line reason; never a 5xx or a traceback; a patch always applies to the object
it came with; and the mutated pod is judged exactly as the original was (so a
mutated pod passes validation unless the input was already invalid).

The suite runs a short fuzz; the long run is a documented command:
    GSW_FUZZ_EXAMPLES=100000 python -m pytest tests/test_fuzz.py -q
"""

from __future__ import annotations

import base64
import copy
import json
import os
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_properties import clean_gpu_pods, garbage, malformed_pods, pods
from webhook.config import Config
from webhook.server import create_app

EXAMPLES = int(os.environ.get("GSW_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
APP = create_app(Config())
CLIENT = APP.test_client()
COUNTS = {"inputs": 0, "200": 0, "4xx": 0, "patched": 0, "denied": 0}

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)),
    max_leaves=25,
)


def post(path: str, body: bytes) -> tuple[int, bytes]:
    response = CLIENT.post(path, data=body, content_type="application/json")
    COUNTS["inputs"] += 1
    return response.status_code, response.get_data()


def check_answer(status: int, body: bytes, uid: Any = None) -> dict[str, Any] | None:
    assert status < 500, body
    assert b"Traceback" not in body
    if status != 200:
        COUNTS["4xx"] += 1
        assert status in (400, 413)
        assert body.count(b"\n") == 1 and body.strip(), body
        return None
    COUNTS["200"] += 1
    review = json.loads(body)
    assert review["apiVersion"] == "admission.k8s.io/v1" and review["kind"] == "AdmissionReview"
    response = review["response"]
    assert isinstance(response["allowed"], bool)
    if uid is not None:
        assert response["uid"] == uid
    if not response["allowed"]:
        COUNTS["denied"] += 1
        assert response["status"]["code"] == 403 and response["status"]["message"]
    for warning in response.get("warnings", []):
        assert len(warning) <= 120
    return response


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from(["/mutate", "/validate"]))
def test_arbitrary_bytes(body: bytes, path: str) -> None:
    check_answer(*post(path, body))


@FUZZ
@given(json_values, st.sampled_from(["/mutate", "/validate"]))
def test_arbitrary_json(value: Any, path: str) -> None:
    check_answer(*post(path, json.dumps(value).encode()))


def review_of(obj: Any, **request: Any) -> dict[str, Any]:
    base = {
        "uid": "fuzz-uid",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "operation": "CREATE",
        "namespace": "default",
        "object": obj,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {**base, **request}}


request_tweaks = st.fixed_dictionaries(
    {},
    optional={
        "uid": st.one_of(st.text(max_size=5), st.integers(), st.none()),
        "kind": st.one_of(garbage, st.sampled_from([{"kind": k} for k in ("Pod", "Deployment", "CronJob", "Service", "")])),
        "operation": st.one_of(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", "PATCH"]), garbage),
        "dryRun": st.one_of(st.booleans(), garbage),
        "namespace": st.one_of(st.text(max_size=5), garbage),
        "oldObject": st.one_of(pods(), garbage),
    },
)


@FUZZ
@given(
    st.one_of(clean_gpu_pods(), pods(), malformed_pods()), st.one_of(st.just({}), request_tweaks), st.sampled_from(["/mutate", "/validate"])
)
def test_admission_reviews_with_mutated_fields(obj: dict[str, Any], tweaks: dict[str, Any], path: str) -> None:
    review = review_of(obj, **tweaks)
    response = check_answer(*post(path, json.dumps(review).encode()), uid=review["request"]["uid"])
    if response is None or "patch" not in response:
        return
    COUNTS["patched"] += 1
    patch = json.loads(base64.b64decode(response["patch"]))
    patched = jsonpatch.apply_patch(copy.deepcopy(obj), patch)
    before = json.loads(post("/validate", json.dumps(review_of(obj)).encode())[1])["response"]["allowed"]
    after = json.loads(post("/validate", json.dumps(review_of(patched)).encode())[1])["response"]["allowed"]
    assert after == before, "mutation must not change the verdict: a fixable pod is fixed, a broken one stays refused"
    again = json.loads(post("/mutate", json.dumps(review_of(patched)).encode())[1])["response"]
    assert "patch" not in again, "the mutated pod needs nothing more"


@pytest.fixture(scope="module", autouse=True)
def report_counts(figures: list[tuple[str, dict[str, Any]]]) -> Any:
    yield
    figures.append(("fuzz of /mutate and /validate", dict(COUNTS)))
