"""The Flask app in-process: what the edges do with our own bugs and with metrics."""

from __future__ import annotations

import json
import logging

import pytest

from tests.cases import by_name
from tests.harness import admission_review
from webhook.cluster import Cluster
from webhook.config import Config
from webhook.inventory import Inventory
from webhook.server import create_app


def exploding_inventory() -> Inventory:
    raise RuntimeError("a bug of ours")


def test_our_own_bug_is_a_500_with_the_uid_logged_never_a_denial(caplog: pytest.LogCaptureFixture) -> None:
    client = create_app(Config(), cluster=Cluster(nodes=exploding_inventory)).test_client()
    review = admission_review(by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod())
    with caplog.at_level(logging.ERROR, logger="gpu_shard_webhook.admission"):
        response = client.post("/validate", data=json.dumps(review), content_type="application/json")
    assert response.status_code == 500
    body = response.get_data(as_text=True)
    assert review["request"]["uid"] in body and "Traceback" not in body and body.count("\n") == 1
    assert any(review["request"]["uid"] in record.getMessage() and record.exc_info for record in caplog.records)
    # the same worker keeps answering
    assert client.post("/mutate", data=json.dumps(review), content_type="application/json").status_code == 200


def test_each_admission_is_logged_once_as_json(caplog: pytest.LogCaptureFixture) -> None:
    client = create_app(Config()).test_client()
    review = admission_review(by_name("user's -ts with 3 values on 2 GPUs is refused").fresh_pod())
    with caplog.at_level(logging.INFO, logger="gpu_shard_webhook.admission"):
        client.post("/validate", data=json.dumps(review), content_type="application/json")
    lines = [json.loads(r.getMessage()) for r in caplog.records if review["request"]["uid"] in r.getMessage()]
    assert len(lines) == 1
    assert lines[0]["decision"] == "denied" and lines[0]["codes"] == ["tensor-split-arity"] and lines[0]["kind"] == "Pod"
