"""The real server: gunicorn over TLS with certificates the project made, spoken to over HTTPS.

Every endpoint and every class of bad input, against the process a user runs.
"""

from __future__ import annotations

import copy
import http.client
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import jsonpatch
import pytest
import requests

from tests.cases import CASES, Case, by_name, container, pod
from tests.expectations import check_admitted_pod
from tests.harness import RunningServer, admission_review, decoded_patch, eventually, running_server
from webhook.config import config_from
from webhook.serving import canary_pod, rules_answer

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(tmp_path_factory.mktemp("server")) as running:  # the production defaults
        yield running


def post(server: RunningServer, path: str, body: object, **kwargs: object) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.url + path, data=data, verify=server.ca, headers={"Content-Type": "application/json"}, timeout=10, **kwargs)


# Cases that need cluster objects (DRA claims) run against a real API server in the control-plane tier.
DEFAULT_CONFIG_CASES = [c for c in CASES if c.config == CASES[0].config and not c.objects]


@pytest.mark.parametrize("case", DEFAULT_CONFIG_CASES, ids=lambda c: c.name)
def test_mutate_then_validate_like_the_api_server(server: RunningServer, case: Case) -> None:
    review = admission_review(case.fresh_pod())
    answer = post(server, "/mutate", review)
    assert answer.status_code == 200
    body = answer.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == review["request"]["uid"]
    assert body["response"]["allowed"] is True
    admitted = jsonpatch.apply_patch(copy.deepcopy(case.pod), decoded_patch(body))

    verdict = post(server, "/validate", admission_review(admitted)).json()["response"]
    codes = set()
    if not verdict["allowed"]:
        assert verdict["status"]["code"] == 403
        message = verdict["status"]["message"]
        codes = {line.split("]")[0].split("[")[1] for line in message.splitlines()[1:]}
    check_admitted_pod(case, admitted, codes)


def test_a_pod_that_needs_nothing_gets_an_empty_response(server: RunningServer) -> None:
    review = admission_review(by_name("regression: CPU-only pod that opts in with no GPU is untouched").fresh_pod())
    body = post(server, "/mutate", review).json()["response"]
    assert body == {"uid": review["request"]["uid"], "allowed": True}


def test_dry_run_is_answered_like_a_real_request(server: RunningServer) -> None:
    case = by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod")
    real = post(server, "/mutate", admission_review(case.fresh_pod())).json()
    dry = post(server, "/mutate", admission_review(case.fresh_pod(), dryRun=True)).json()
    assert decoded_patch(dry) == decoded_patch(real) != []


def deployment(template_pod: dict, name: str = "llama-13b") -> dict:
    template = {"metadata": template_pod["metadata"] | {"labels": template_pod["metadata"]["labels"]}, "spec": template_pod["spec"]}
    template["metadata"].pop("generateName", None)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "llama"}}, "template": template},
    }


def test_valid_deployment_gets_preview_warnings(server: RunningServer) -> None:
    workload = deployment(by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod())
    body = post(server, "/validate", admission_review(workload, kind="Deployment")).json()["response"]
    assert body["allowed"] is True
    warnings = body["warnings"]
    assert any("--n-gpu-layers 999 --split-mode layer --tensor-split 1,1" in w for w in warnings), warnings
    assert all(len(w) <= 120 for w in warnings)
    assert "patch" not in body, "templates are validated, never mutated"


def test_invalid_cronjob_template_is_denied_with_every_violation(server: RunningServer) -> None:
    bad = pod(container(args=["-m", "/m.gguf", "-ts", "1,1,1", "-mg", "5"], gpus="2"))
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly-eval"},
        "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"metadata": bad["metadata"], "spec": bad["spec"]}}}},
    }
    body = post(server, "/validate", admission_review(cronjob, kind="CronJob")).json()["response"]
    assert body["allowed"] is False and body["status"]["code"] == 403
    assert "[tensor-split-arity]" in body["status"]["message"]
    assert "[main-gpu-out-of-range]" in body["status"]["message"]


def test_pod_update_is_judged_only_on_what_it_changes(server: RunningServer) -> None:
    bad = by_name("user's -ts with 3 values on 2 GPUs is refused").fresh_pod()
    relabelled = copy.deepcopy(bad)
    relabelled["metadata"]["labels"]["team"] = "ml"
    review = admission_review(relabelled, operation="UPDATE", oldObject=bad)
    assert post(server, "/validate", review).json()["response"]["allowed"] is True

    made_worse = copy.deepcopy(bad)
    made_worse["spec"]["containers"][0]["args"] += ["-mg", "7"]
    body = post(server, "/validate", admission_review(made_worse, operation="UPDATE", oldObject=bad)).json()["response"]
    assert body["allowed"] is False
    assert "[main-gpu-out-of-range]" in body["status"]["message"]
    assert "[tensor-split-arity]" not in body["status"]["message"]


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/mutate", b"{not json", "not JSON"),
        ("/mutate", b"[]", "not a JSON object"),
        ("/mutate", {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}, "expected apiVersion"),
        ("/mutate", {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request is missing"),
        (
            "/validate",
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {"kind": "Pod"}}},
            "uid is missing",
        ),
        (
            "/mutate",
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE"},
            },
            "object is missing",
        ),
        (
            "/mutate",
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 7, "kind": {"kind": "Pod"}}},
            "uid must be",
        ),
        (
            "/mutate",
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": []},
            },
            "object must be",
        ),
        (
            "/mutate",
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {"uid": "u", "kind": {"kind": "Pod"}, "operation": "CREATE", "object": {"spec": "x"}},
            },
            "spec must be",
        ),
        ("/mutate", admission_review({"metadata": {}}, kind="Deployment"), "serves Pods"),
        ("/validate", admission_review({"metadata": {}}, kind="Service"), "serves Pods, workloads and LeaderWorkerSets"),
        ("/validate", admission_review({"metadata": {}}, operation="PATCH"), "operation"),
    ],
)
def test_malformed_requests_get_400_with_a_reason(server: RunningServer, path: str, body: object, reason: str) -> None:
    answer = post(server, path, body)
    assert answer.status_code == 400
    assert reason in answer.text
    assert "Traceback" not in answer.text and len(answer.text.splitlines()) == 1


def test_body_over_the_limit_gets_413(server: RunningServer) -> None:
    answer = post(server, "/mutate", b"{" + b" " * (4 * 1024 * 1024 + 10) + b"}")
    assert answer.status_code == 413
    assert "limit" in answer.text


def test_wrong_method_and_path(server: RunningServer) -> None:
    assert requests.get(server.url + "/mutate", verify=server.ca, timeout=5).status_code == 405
    assert requests.post(server.url + "/nope", data="{}", verify=server.ca, timeout=5).status_code == 404


def test_health_readiness_and_metrics(server: RunningServer) -> None:
    assert requests.get(server.url + "/healthz", verify=server.ca, timeout=5).text.strip() == "ok"
    ready = requests.get(server.url + "/readyz", verify=server.ca, timeout=5)
    assert ready.status_code == 200 and "serving certificate sha256:" in ready.text
    bad = pod(container(args=["-m", "/m.gguf", "-ts", "1,1,1"], gpus="2"))
    post(server, "/validate", admission_review(bad))
    post(server, "/mutate", admission_review(by_name("plan test 3: 4-GPU 70B").fresh_pod()))
    expected = (
        'gpu_shard_rejections_total{code="tensor-split-arity"}',
        'gpu_shard_injected_gpus_total{gpus="4"}',
        'gpu_shard_admissions_total{operation="CREATE",result="denied",webhook="validate"}',
        'gpu_shard_admission_duration_seconds_bucket{le="+Inf",webhook="mutate"}',
    )

    def counted() -> bool:  # each worker writes its counts at least every second (webhook.metrics.Tally)
        text = requests.get(server.url + "/metrics", verify=server.ca, timeout=5).text
        return all(series in text for series in expected)

    eventually(counted, timeout=5)


def test_one_json_log_line_per_admission_without_bodies(server: RunningServer) -> None:
    review = admission_review(pod(container(args=["-m", "/m.gguf"], gpus="2", env=[{"name": "HF_TOKEN", "value": "hunter2-secret"}])))
    post(server, "/mutate", review)

    def lines() -> list[str]:
        return [line for line in server.log().splitlines() if review["request"]["uid"] in line]

    eventually(lambda: bool(lines()), timeout=5)  # lines are written in batches, at least every 0.2 s
    time.sleep(0.5)
    assert len(lines()) == 1
    record = json.loads(lines()[0])
    assert record["decision"] == "patched" and record["namespace"] == "default" and record["gpus"] == 2
    assert "hunter2-secret" not in server.log()
    assert "--- Logging error ---" not in server.log(), "every line of the server (gunicorn's own too) formats"


def test_connections_are_kept_alive_across_requests(server: RunningServer) -> None:
    context = ssl.create_default_context(cafile=server.ca)
    connection = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=10)
    body = json.dumps(admission_review(by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod()))
    sockets = []
    for _ in range(5):
        connection.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        assert answer.status == 200
        answer.read()
        assert (answer.getheader("Connection") or "").lower() != "close"
        sockets.append(connection.sock)
    assert all(sock is sockets[0] for sock in sockets)
    connection.close()


def test_tls_below_1_2_is_refused(server: RunningServer) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(server.ca)
    try:
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, OSError)):
        connection = http.client.HTTPSConnection("localhost", server.port, context=context, timeout=5)
        connection.request("GET", "/healthz")
        connection.getresponse()


def test_serve_creates_certificates_on_a_fresh_machine(tmp_path: Path) -> None:
    cert_dir = tmp_path / "fresh"
    metrics_dir = tmp_path / "not-yet" / "metrics"  # as the Deployment's PROMETHEUS_MULTIPROC_DIR on an empty /tmp
    with running_server(tmp_path, cert_dir=cert_dir, env={"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}) as fresh:
        review = admission_review(by_name("plan test 3: 4-GPU 70B").fresh_pod())
        requests.post(fresh.url + "/mutate", data=json.dumps(review), verify=str(cert_dir / "ca.crt"), timeout=5)

        def metrics() -> str:
            return requests.get(fresh.url + "/metrics", verify=str(cert_dir / "ca.crt"), timeout=5).text

        eventually(lambda: 'gpu_shard_injected_gpus_total{gpus="4"} 1.0' in metrics(), timeout=5)
        assert list(metrics_dir.glob("*.db"))
        assert (cert_dir / "ca.crt").exists() and (cert_dir / "tls.key").stat().st_mode & 0o777 == 0o600
        assert "created a development CA" in fresh.log()
        assert requests.get(fresh.url + "/healthz", verify=str(cert_dir / "ca.crt"), timeout=5).status_code == 200


READINESS_CONFIGS = [
    pytest.param({"GSW_MAX_GPUS_PER_NODE": "1"}, id="one GPU per node"),
    pytest.param({"GSW_GPU_RESOURCES": "amd.com/gpu"}, id="AMD only"),
    pytest.param({"GSW_GPU_RESOURCES": "gpu.intel.com/xe", "GSW_MAX_GPUS_PER_NODE": "1"}, id="Intel Xe, one per node"),
    pytest.param({"GSW_PREFIX": "llm.example.com"}, id="another label prefix"),
]


@pytest.mark.parametrize("env", READINESS_CONFIGS)
def test_readiness_follows_the_configuration(env: dict[str, str]) -> None:
    """The canary /readyz plans is built from the configuration, so any valid configuration becomes Ready."""
    config = config_from(env)
    canary, gpus = canary_pod(config)
    assert canary["spec"]["containers"][0]["resources"]["limits"] == {config.gpu_resources[0]: str(gpus)}
    assert 1 <= gpus <= config.max_gpus_per_node
    assert rules_answer(config), canary


@pytest.mark.parametrize("env", READINESS_CONFIGS[:2])
def test_a_server_with_another_configuration_becomes_ready(env: dict[str, str], tmp_path: Path) -> None:
    with running_server(tmp_path, env=env) as configured:  # running_server waits for /readyz 200
        ready = requests.get(configured.url + "/readyz", verify=configured.ca, timeout=5)
        assert ready.status_code == 200, ready.text


def test_a_leaderworkerset_is_planned_over_tls_and_counted_by_its_devices(server: RunningServer) -> None:
    from tests.cases import group_template, leader, lws

    obj = lws(3, group_template(leader(gpus="2")))  # 2 workers x 2 GPUs, then the leader's 2: 6 devices
    review = admission_review(obj, kind="LeaderWorkerSet", namespace="ai")
    answer = post(server, "/mutate", json.dumps(review)).json()["response"]
    assert answer["allowed"] and answer["patchType"] == "JSONPatch"
    assert any("6 devices, RPC first" in w for w in answer["warnings"])
    admitted = jsonpatch.apply_patch(copy.deepcopy(obj), decoded_patch({"response": answer}))
    verdict = post(server, "/validate", json.dumps(admission_review(admitted, kind="LeaderWorkerSet", namespace="ai"))).json()
    assert verdict["response"]["allowed"]
    refused = lws(3, startup_policy="LeaderReady")
    denial = post(server, "/validate", json.dumps(admission_review(refused, kind="LeaderWorkerSet", namespace="ai"))).json()
    assert not denial["response"]["allowed"] and "[lws-startup-deadlock]" in denial["response"]["status"]["message"]

    def counted() -> bool:
        text = requests.get(server.url + "/metrics", verify=server.ca, timeout=5).text
        return 'gpu_shard_injected_gpus_total{gpus="6"}' in text and 'gpu_shard_rejections_total{code="lws-startup-deadlock"}' in text

    eventually(counted, timeout=5)
