"""Fuzzing the HTTP surface of the real Flask app (hypothesis).

Arbitrary bytes, arbitrary JSON, and structurally valid AdmissionReviews with
mutated field types and values go to /mutate and /validate. Invariants: the answer
is a well-formed AdmissionReview v1 carrying the request's uid, or a 4xx with a
one-line reason; never a 5xx or a traceback; a patch always applies to the object
it came with; and the mutated pod is judged exactly as the original was (so a
mutated pod passes validation unless the input was already invalid).

Hostile reviews (:func:`hostile_reviews`) put one attack anywhere in a valid review:
nesting up to 5,000 deep, a string of up to 512 KiB, or a value of the wrong type.
Their answers are 200 or 400/413 as for any input, an error body is at most 1 KiB, and
no answer (error body, denial message, warning) quotes the huge string back.

The suite runs a short fuzz; the long run is a documented command:
    GSW_FUZZ_EXAMPLES=100000 python -m pytest tests/test_fuzz.py -q
"""

from __future__ import annotations

import base64
import copy
import itertools
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


# --- hostile reviews: deep nesting, huge strings, wrong types, anywhere ---------------------

HOSTILE_PATHS: list[tuple[str | int, ...]] = [
    ("request", "uid"),
    ("request", "kind"),
    ("request", "kind", "kind"),
    ("request", "operation"),
    ("request", "namespace"),
    ("request", "name"),
    ("request", "dryRun"),
    ("request", "object", "metadata"),
    ("request", "object", "metadata", "name"),
    ("request", "object", "metadata", "labels"),
    ("request", "object", "metadata", "annotations", "gpu-shard.io/gpu-count"),
    ("request", "object", "metadata", "annotations", "gpu-shard.io/tensor-split"),
    ("request", "object", "metadata", "annotations", "gpu-shard.io/container"),
    ("request", "object", "spec"),
    ("request", "object", "spec", "containers"),
    ("request", "object", "spec", "containers", 0),
    ("request", "object", "spec", "containers", 0, "name"),
    ("request", "object", "spec", "containers", 0, "image"),
    ("request", "object", "spec", "containers", 0, "command"),
    ("request", "object", "spec", "containers", 0, "args"),
    ("request", "object", "spec", "containers", 0, "args", 0),
    ("request", "object", "spec", "containers", 0, "env"),
    ("request", "object", "spec", "containers", 0, "env", 0, "value"),
    ("request", "object", "spec", "containers", 0, "resources"),
    ("request", "object", "spec", "containers", 0, "resources", "limits"),
    ("request", "object", "spec", "containers", 0, "resources", "limits", "nvidia.com/gpu"),
    ("request", "object", "spec", "containers", 0, "resources", "claims"),
    ("request", "object", "spec", "resourceClaims"),
    ("request", "object", "spec", "affinity"),
    ("request", "object", "spec", "affinity", "nodeAffinity"),
    ("request", "object", "spec", "tolerations"),
    ("request", "object", "spec", "volumes"),
    ("request", "oldObject"),
]
HUGE_MARK = "Q7"  # a huge string is this repeated: found in an answer, it was echoed


def nested(depth: int, in_lists: bool) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if in_lists else {"a": value}
    return value


def put(document: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    """Set ``path`` in ``document``, making what is missing on the way (a dict, or a list for an index)."""
    here: Any = document
    for step, following in itertools.pairwise(path):
        fresh: Any = [] if isinstance(following, int) else {}
        if isinstance(here, list):
            while len(here) <= int(step):
                here.append(fresh)
            if not isinstance(here[int(step)], (dict, list)):
                here[int(step)] = fresh
            here = here[int(step)]
        else:
            if not isinstance(here.get(step), (dict, list)):
                here[step] = fresh
            here = here[step]
    last = path[-1]
    if isinstance(here, list):
        while len(here) <= int(last):
            here.append(None)
        here[int(last)] = value
    else:
        here[last] = value


@st.composite
def hostile_reviews(draw: st.DrawFn) -> tuple[str, dict[str, Any], str]:
    review = review_of(draw(clean_gpu_pods()))
    path = draw(st.sampled_from(HOSTILE_PATHS))
    attack = draw(st.sampled_from(["deep", "huge", "wrong-type"]))
    if attack == "deep":
        value = nested(draw(st.sampled_from([64, 500, 900, 1000, 1100, 5000])), draw(st.booleans()))
    elif attack == "huge":
        value = HUGE_MARK * (draw(st.sampled_from([8, 64, 256, 512])) * 512)
    else:
        value = draw(
            st.one_of(st.integers(), st.floats(allow_nan=True), st.booleans(), st.none(), st.lists(st.integers(), max_size=3), garbage)
        )
    put(review, path, value)
    return attack, review, "/".join(map(str, path))


def encoded(review: dict[str, Any]) -> bytes:
    try:
        return json.dumps(review, allow_nan=True).encode()
    except RecursionError:  # the json module stops before 5,000 levels: write the nesting by hand
        return _encode_deep(review).encode()


class _Text(str):
    """JSON text already written (a bracket, a comma, a key): told apart from a string value by its type."""


def _encode_deep(value: Any) -> str:
    parts: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Text):
            parts.append(item)
        elif isinstance(item, dict):
            parts.append("{")
            stack.append(_Text("}"))
            for index, (key, child) in reversed(list(enumerate(item.items()))):
                stack.append(child)
                stack.append(_Text(("," if index else "") + json.dumps(key) + ":"))
        elif isinstance(item, list):
            parts.append("[")
            stack.append(_Text("]"))
            for index, child in reversed(list(enumerate(item))):
                stack.append(child)
                if index:
                    stack.append(_Text(","))
        else:
            parts.append(json.dumps(item, allow_nan=True))
    return "".join(parts)


@FUZZ
@given(hostile_reviews(), st.sampled_from(["/mutate", "/validate"]))
def test_hostile_reviews_are_answered_briefly_and_never_echoed(hostile: tuple[str, dict[str, Any], str], path: str) -> None:
    attack, review, where = hostile
    status, body = post(path, encoded(review))
    response = check_answer(status, body)
    COUNTS[f"hostile {attack}"] = COUNTS.get(f"hostile {attack}", 0) + 1
    if response is None:
        assert len(body) <= 1024, (where, len(body))
        assert HUGE_MARK * 64 not in body.decode(errors="replace"), where
        return
    message = response.get("status", {}).get("message", "")
    assert len(message) <= 8 * 1024 and HUGE_MARK * 256 not in message, (where, len(message))
    assert all(HUGE_MARK * 64 not in w for w in response.get("warnings", [])), where


# --- LeaderWorkerSets: the group plan's reading of both templates, with anything in them ---------


@st.composite
def leaderworkersets(draw: st.DrawFn) -> dict[str, Any]:
    """LeaderWorkerSets whose templates are the pod strategies' pods, with garbage where LWS has fields."""

    def template() -> Any:
        pod = draw(st.one_of(clean_gpu_pods(), pods(), malformed_pods(), garbage))
        return {k: v for k, v in pod.items() if k in ("metadata", "spec")} if isinstance(pod, dict) else pod

    group: dict[str, Any] = {"size": draw(st.one_of(st.integers(min_value=-1, max_value=20), garbage)), "workerTemplate": template()}
    if draw(st.booleans()):
        group["leaderTemplate"] = template()
    spec: dict[str, Any] = {"leaderWorkerTemplate": group}
    if draw(st.booleans()):
        spec["startupPolicy"] = draw(st.one_of(st.sampled_from(["LeaderCreated", "LeaderReady"]), garbage))
    if draw(st.booleans()):
        spec["networkConfig"] = draw(st.one_of(st.just({"subdomainPolicy": "UniquePerReplica"}), garbage))
    labels = {"gpu-shard.io/enabled": "true"}
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "metadata": {"name": "g", "labels": labels},
        "spec": spec,
    }


def group_review(obj: dict[str, Any]) -> dict[str, Any]:
    return review_of(obj, kind={"group": "leaderworkerset.x-k8s.io", "version": "v1", "kind": "LeaderWorkerSet"}, namespace="ai")


@FUZZ
@given(leaderworkersets(), st.sampled_from(["/mutate", "/validate"]))
def test_leaderworkersets_with_anything_in_their_templates(obj: dict[str, Any], path: str) -> None:
    review = group_review(obj)
    response = check_answer(*post(path, json.dumps(review).encode()), uid=review["request"]["uid"])
    if response is None or "patch" not in response:
        return
    COUNTS["patched"] += 1
    patched = jsonpatch.apply_patch(copy.deepcopy(obj), json.loads(base64.b64decode(response["patch"])))
    before = json.loads(post("/validate", json.dumps(group_review(obj)).encode())[1])["response"]["allowed"]
    after = json.loads(post("/validate", json.dumps(group_review(patched)).encode())[1])["response"]["allowed"]
    assert after == before, "mutation must not change the verdict"
    again = json.loads(post("/mutate", json.dumps(group_review(patched)).encode())[1])["response"]
    assert "patch" not in again, "the mutated LeaderWorkerSet needs nothing more"
