"""The promise, against a real kube-apiserver: plain Deployments are sharded transparently,
`kubectl apply --dry-run=server` shows the plan or the denial, objects that did not opt
in never reach the webhook, reinvocation does not duplicate, and the failure policy holds.

The webhook configurations are the shipped ones (manifests/base) through an overlay that
only swaps clientConfig.service for a loopback URL and the real caBundle.
"""

from __future__ import annotations

import base64
import copy
import http.server
import json
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.cluster import Cluster, build_control_plane, control_plane, webhook_overlay
from tests.examples import EXAMPLE_EXPECTATIONS, PRECEDENCE_ANNOTATION, ExampleExpect, example_files
from tests.harness import ROOT, RunningServer, free_port, make_certs, running_server
from webhook.certs import make_bundle, write_bundle

pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binaries = build_control_plane()
    with control_plane(binaries, tmp_path_factory.mktemp("controlplane")) as running:
        yield running


@dataclass
class Webhook:
    """Our webhook, restartable on the same port with the same certificates."""

    directory: Path
    port: int
    kubeconfig: Path
    server: RunningServer | None = None
    _context: Any = None

    def start(self, env: dict[str, str] | None = None) -> RunningServer:
        arguments = ["--kubeconfig", str(self.kubeconfig)]
        self._context = running_server(self.directory, arguments, env=env, cert_dir=self.directory / "certs", port=self.port)
        self.server = self._context.__enter__()
        return self.server

    def stop(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None

    def admissions(self) -> float:
        assert self.server is not None
        text = requests.get(self.server.url + "/metrics", verify=self.server.ca, timeout=5).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("gpu_shard_admissions_total{"))

    def settled_admissions(self) -> float:
        """The count once every worker has written what it counted (they flush each second: webhook.metrics.Tally)."""
        previous = self.admissions()
        for _ in range(12):
            time.sleep(1.2)
            current = self.admissions()
            if current == previous:
                return current
            previous = current
        raise AssertionError("admissions kept coming for 15 s: something keeps calling the webhook")


@pytest.fixture(scope="module")
def webhook(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    directory = tmp_path_factory.mktemp("webhook")
    make_certs(directory / "certs")  # `gpu-shard-webhook certs`: SANs include 127.0.0.1
    handle = Webhook(directory, free_port(), cluster.kubeconfig)
    handle.start()
    overlay = webhook_overlay(cluster.workdir, f"https://127.0.0.1:{handle.port}", (directory / "certs" / "ca.crt").read_bytes())
    rendered = cluster.kubectl("kustomize", str(overlay)).stdout
    configurations = [d for d in yaml.safe_load_all(rendered) if d and d["kind"].endswith("WebhookConfiguration")]
    assert len(configurations) == 2
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(configurations))
    # The API server's webhook informer picks the configurations up asynchronously.
    until_pod_dry_run_shows(cluster, bare_pod("probe", {"gpu-shard.io/enabled": "true"}), "--tensor-split")
    yield handle
    handle.stop()


def namespace(cluster: Cluster, name: str) -> str:
    cluster.kubectl("create", "namespace", name, check=False)
    return name


def original_workloads(path: Path) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] != "Service"}


def check_pod(pod: dict[str, Any], expect: ExampleExpect, workload: dict[str, Any]) -> None:
    container = pod["spec"]["containers"][0]
    original = workload["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [*original["args"], *expect.injected]
    limits = (container.get("resources") or {}).get("limits") or {}
    if expect.gpus:
        assert str(limits["nvidia.com/gpu"]) == str(expect.gpus)
        assert str(container["resources"]["requests"]["nvidia.com/gpu"]) == str(expect.gpus)
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
        status = json.loads(pod["metadata"]["annotations"]["gpu-shard.io/status"])
        assert status["gpus"] == expect.gpus
    else:
        assert "nvidia.com/gpu" not in limits
        assert "gpu-shard.io/status" not in (pod["metadata"].get("annotations") or {})
    terms = (
        ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
    )
    expressions = [e for term in terms for e in term.get("matchExpressions", [])]
    counts = [e["values"][0] for e in expressions if e["key"] == "nvidia.com/gpu.count"]
    assert counts == ([expect.count_expression] if expect.count_expression else [])
    products = [e["values"] for e in expressions if e["key"] == "nvidia.com/gpu.product"]
    assert products == ([[expect.product]] if expect.product else [])


@pytest.mark.parametrize("path", example_files(), ids=lambda p: p.name)
def test_every_example_through_a_real_api_server(cluster: Cluster, webhook: Webhook, path: Path) -> None:
    ns = namespace(cluster, "ex-" + path.stem[:50].replace(".", "-"))
    expectations = EXAMPLE_EXPECTATIONS[path.name]
    workloads = original_workloads(path)
    applied = cluster.kubectl("apply", "-n", ns, "-f", str(path), check=False)
    for expect in expectations:
        if expect.denied:
            assert applied.returncode != 0
            assert "denied the request" in applied.stderr
            for code in expect.denied:
                assert f"[{code}]" in applied.stderr
            assert cluster.kubectl("get", "deployment", expect.name, "-n", ns, check=False).returncode != 0, "nothing is created"
            continue
        assert applied.returncode == 0, applied.stderr
        pod = cluster.wait_for("pods", "-n", ns, "-l", f"app={expect.name}")
        check_pod(pod, expect, workloads[expect.name])


def test_plan_test_1_with_the_plans_own_commands(cluster: Cluster, webhook: Webhook) -> None:
    ns = namespace(cluster, "plan-test-1")
    cluster.kubectl("apply", "-n", ns, "-f", str(ROOT / "manifests" / "examples" / "llama-13b-2gpu.yaml"))
    name = cluster.wait_for("pods", "-n", ns, "-l", "app=llama-13b-multi-gpu")["metadata"]["name"]
    limit = cluster.kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.spec.containers[0].resources.limits.nvidia\\.com/gpu}").stdout
    assert limit == "2"
    args = cluster.kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.spec.containers[*].args}").stdout
    assert '"--tensor-split","1,1"' in args and '"--split-mode","layer"' in args and '"--n-gpu-layers","999"' in args


def test_dry_run_server_shows_the_plan_and_creates_nothing(cluster: Cluster, webhook: Webhook) -> None:
    ns = namespace(cluster, "dry-run")
    result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(ROOT / "manifests" / "examples" / "llama-13b-2gpu.yaml"))
    assert "Warning: gpu-shard: pods get 2 nvidia.com/gpu: --n-gpu-layers 999 --split-mode layer --tensor-split 1,1" in result.stderr
    assert "(server dry run)" in result.stdout
    assert cluster.kubectl("get", "deployment", "llama-13b-multi-gpu", "-n", ns, check=False).returncode != 0


def test_dry_run_server_shows_every_violation(cluster: Cluster, webhook: Webhook, tmp_path: Path) -> None:
    ns = namespace(cluster, "dry-run-bad")
    workload = original_workloads(ROOT / "manifests" / "examples" / "llama-13b-2gpu.yaml")["llama-13b-multi-gpu"]
    bad = copy.deepcopy(workload)
    bad["metadata"]["name"] = "broken"
    bad["spec"]["template"]["spec"]["containers"][0]["args"] += ["-ts", "1,1,1", "-mg", "5"]
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump(bad))
    result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(manifest), check=False)
    assert result.returncode != 0
    assert "denied the request" in result.stderr
    assert "[tensor-split-arity]" in result.stderr and "[main-gpu-out-of-range]" in result.stderr
    assert cluster.kubectl("get", "deployment", "broken", "-n", ns, check=False).returncode != 0


def until_pod_dry_run_shows(cluster: Cluster, pod: dict[str, Any], token: str, timeout: float = 60) -> None:
    """Wait until a server-side dry run of ``pod`` comes back with ``token`` in its args."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(pod), check=False)
        if result.returncode == 0 and token in json.loads(result.stdout)["spec"]["containers"][0].get("args", []):
            return
        time.sleep(0.3)
    raise AssertionError(f"the API server did not start calling the webhook within {timeout}s")


def bare_pod(name: str, labels: dict[str, str], gpus: str = "2") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "containers": [
                {
                    "name": "llama",
                    "image": "ghcr.io/ggml-org/llama.cpp:server-cuda",
                    "args": ["-m", "/m.gguf"],
                    "resources": {"limits": {"nvidia.com/gpu": gpus}},
                }
            ]
        },
    }


def test_objects_that_did_not_opt_in_never_reach_the_webhook(cluster: Cluster, webhook: Webhook) -> None:
    ns = namespace(cluster, "not-opted-in")
    before = webhook.settled_admissions()  # earlier tests' last admissions may still be on their way
    cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(bare_pod("plain", {"app": "plain"})))
    cluster.kubectl("apply", "-n", "kube-system", "-f", "-", stdin=json.dumps(bare_pod("system", {"gpu-shard.io/enabled": "true"})))
    plain_deployment = original_workloads(ROOT / "manifests" / "examples" / "tinyllama-cpu.yaml")["tinyllama"]
    cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(plain_deployment))
    cluster.wait_for("pods", "-n", ns, "-l", "app=tinyllama")
    assert webhook.settled_admissions() == before
    system = cluster.get_json("pod", "system", "-n", "kube-system")
    assert system["spec"]["containers"][0]["args"] == ["-m", "/m.gguf"]


class SecondMutator:
    """A webhook of the tests' own that also edits opted-in pods: it appends --metrics."""

    def __init__(self, directory: Path) -> None:
        write_bundle(make_bundle(["localhost"], ["127.0.0.1"]), directory)
        self.ca = (directory / "ca.crt").read_bytes()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "tls.crt", directory / "tls.key")

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                args = request["object"]["spec"]["containers"][0].get("args") or []
                response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
                if "--metrics" not in args:
                    patch = [{"op": "add", "path": "/spec/containers/0/args/-", "value": "--metrics"}]
                    response |= {"patchType": "JSONPatch", "patch": base64.b64encode(json.dumps(patch).encode()).decode()}
                body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.httpd.server_address[1]}/mutate"


def test_reinvocation_after_another_mutating_webhook_does_not_duplicate(cluster: Cluster, webhook: Webhook, tmp_path: Path) -> None:
    second = SecondMutator(tmp_path / "second")
    configuration = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "zz-test-second-mutator"},
        "webhooks": [
            {
                "name": "second.test.gpu-shard.io",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "clientConfig": {"url": second.url, "caBundle": base64.b64encode(second.ca).decode()},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
                "objectSelector": {"matchLabels": {"gsw-test/second-mutator": "on"}},
            }
        ],
    }
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(configuration))
    try:
        until_pod_dry_run_shows(cluster, bare_pod("probe", {"gpu-shard.io/enabled": "true", "gsw-test/second-mutator": "on"}), "--metrics")
        ns = namespace(cluster, "reinvocation")
        cluster.kubectl(
            "apply",
            "-n",
            ns,
            "-f",
            "-",
            stdin=json.dumps(bare_pod("twice", {"gpu-shard.io/enabled": "true", "gsw-test/second-mutator": "on"})),
        )
        pod = cluster.get_json("pod", "twice", "-n", ns)
        args = pod["spec"]["containers"][0]["args"]
        assert args.count("--metrics") == 1, args
        for flag in ("--n-gpu-layers", "--split-mode", "--tensor-split"):
            assert args.count(flag) == 1, args
        assert len([t for t in pod["spec"]["tolerations"] if t.get("key") == "nvidia.com/gpu"]) == 1
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", "zz-test-second-mutator", check=False)
        second.httpd.shutdown()


def test_failure_policy_refuses_opted_in_pods_while_the_webhook_is_down(cluster: Cluster, webhook: Webhook) -> None:
    ns = namespace(cluster, "failure-policy")
    webhook.stop()
    try:
        refused = cluster.kubectl(
            "apply", "-n", ns, "-f", "-", stdin=json.dumps(bare_pod("sharded", {"gpu-shard.io/enabled": "true"})), check=False
        )
        assert refused.returncode != 0 and re.search(r"failed calling webhook", refused.stderr), refused.stderr
        cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(bare_pod("other", {"app": "other"})))
    finally:
        webhook.start()
    deadline = time.monotonic() + 30
    while True:
        created = cluster.kubectl(
            "apply", "-n", ns, "-f", "-", stdin=json.dumps(bare_pod("sharded", {"gpu-shard.io/enabled": "true"})), check=False
        )
        if created.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert created.returncode == 0, created.stderr
    assert "--tensor-split" in cluster.get_json("pod", "sharded", "-n", ns)["spec"]["containers"][0]["args"]


def test_cluster_capacity_is_judged_from_the_real_nodes(cluster: Cluster, webhook: Webhook) -> None:
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "gpu-node-a", "labels": {"nvidia.com/gpu.count": "2", "nvidia.com/gpu.product": "NVIDIA-L4"}},
        "status": {"capacity": {"nvidia.com/gpu": "2", "cpu": "8", "memory": "32Gi", "pods": "110"}},
    }
    node["status"]["allocatable"] = dict(node["status"]["capacity"])
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(node))
    try:
        stored = cluster.get_json("node", "gpu-node-a")
        if stored.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu") != "2":
            cluster.kubectl(
                "patch", "node", "gpu-node-a", "--subresource=status", "--type=merge", "-p", json.dumps({"status": node["status"]})
            )
        ns = namespace(cluster, "capacity")
        four = str(ROOT / "manifests" / "examples" / "llama-70b-4gpu.yaml")
        deadline = time.monotonic() + 30
        while True:
            result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", four, check=False)
            if result.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "[exceeds-cluster-capacity]" in result.stderr and "gpu-node-a" in result.stderr, result.stderr
        two = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(ROOT / "manifests" / "examples" / "llama-13b-2gpu.yaml"))
        assert "Warning: gpu-shard: pods get 2 nvidia.com/gpu" in two.stderr
    finally:
        cluster.kubectl("delete", "node", "gpu-node-a", check=False)


def test_precedence_4c_with_the_annotation_winning_through_a_real_api_server(cluster: Cluster, webhook: Webhook) -> None:
    webhook.stop()
    webhook.start(PRECEDENCE_ANNOTATION.settings)
    try:
        until_pod_dry_run_shows(cluster, bare_pod("probe", {"gpu-shard.io/enabled": "true"}), "--tensor-split")
        ns = namespace(cluster, "precedence-4c")
        path = ROOT / "manifests" / "examples" / "precedence-4c-both.yaml"
        cluster.kubectl("apply", "-n", ns, "-f", str(path))
        pod = cluster.wait_for("pods", "-n", ns, "-l", f"app={PRECEDENCE_ANNOTATION.name}")
        check_pod(pod, PRECEDENCE_ANNOTATION, original_workloads(path)[PRECEDENCE_ANNOTATION.name])
    finally:
        webhook.stop()
        webhook.start()


# --- GPUs from Dynamic Resource Allocation, through the real resource.k8s.io/v1 API ---------------


def dra_documents(name: str, count: int, template_first: bool = True) -> list[dict[str, Any]]:
    device_class = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {"name": "gpu.nvidia.com"},
        "spec": {"selectors": [{"cel": {"expression": "device.driver == 'gpu.nvidia.com'"}}]},
    }
    template = {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": f"{name}-gpus"},
        "spec": {"spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": "gpu.nvidia.com", "count": count}}]}}},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "gpu-shard.io/enabled": "true"}},
                "spec": {
                    "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": f"{name}-gpus"}],
                    "containers": [
                        {
                            "name": "llama",
                            "image": "ghcr.io/ggml-org/llama.cpp:server-cuda",
                            "args": ["-m", "/models/m.gguf"],
                            "resources": {"claims": [{"name": "gpu"}]},
                        }
                    ],
                },
            },
        },
    }
    return [device_class, template, deployment] if template_first else [device_class, deployment, template]


def resource_slice(node: str, devices: int) -> dict[str, Any]:
    return {
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": f"{node}-gpus"},
        "spec": {
            "driver": "gpu.nvidia.com",
            "nodeName": node,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "devices": [{"name": f"gpu-{i}", "attributes": {"type": {"string": "gpu"}}} for i in range(devices)],
        },
    }


def test_dra_deployment_applied_with_its_template_is_sharded(cluster: Cluster, webhook: Webhook, tmp_path: Path) -> None:
    ns = namespace(cluster, "dra-together")
    manifest = tmp_path / "dra.yaml"
    manifest.write_text(yaml.safe_dump_all(dra_documents("llama-dra", 2)))
    # A server-side dry run creates nothing, so the template of a first dry run is not known yet:
    first = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(manifest))
    assert "ResourceClaimTemplate dra-together/llama-dra-gpus not known (yet)" in first.stderr, first.stderr
    cluster.kubectl("apply", "-n", ns, "-f", str(manifest))
    pod = cluster.wait_for("pods", "-n", ns, "-l", "app=llama-dra")
    args = pod["spec"]["containers"][0]["args"]
    assert args[-6:] == ["--n-gpu-layers", "999", "--split-mode", "layer", "--tensor-split", "1,1"], args
    status = json.loads(pod["metadata"]["annotations"]["gpu-shard.io/status"])
    assert status["gpus"] == 2 and status["gpuSource"] == "2 GPUs from claim gpu (ResourceClaimTemplate llama-dra-gpus)"
    expressions = [
        e["key"]
        for t in ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms", [])
        for e in t.get("matchExpressions", [])
    ]
    assert "nvidia.com/gpu.count" not in expressions, "the scheduler places DRA pods from the allocation, not GFD labels"
    another = copy.deepcopy(dra_documents("llama-dra", 2)[2])  # kubectl sends nothing for an unchanged object
    another["metadata"]["name"] = "llama-dra-second"
    dry = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", stdin=json.dumps(another))
    assert "Warning: gpu-shard: pods get 2 GPUs from claim gpu (ResourceClaimTemplate llama-dra-gpus)" in dry.stderr, dry.stderr


def test_dra_claim_for_more_devices_than_a_node_publishes_is_rejected(cluster: Cluster, webhook: Webhook, tmp_path: Path) -> None:
    ns = namespace(cluster, "dra-capacity")
    for node in ("dra-node-a", "dra-node-b"):
        cluster.kubectl("apply", "-f", "-", stdin=json.dumps(resource_slice(node, 2)))
    try:
        manifest = tmp_path / "dra4.yaml"
        manifest.write_text(yaml.safe_dump_all(dra_documents("llama-dra-4", 4)))
        cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=yaml.safe_dump_all(dra_documents("llama-dra-4", 4)[:2]))
        deadline = time.monotonic() + 30
        while True:
            result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", str(manifest), check=False)
            if result.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert "[exceeds-cluster-capacity]" in result.stderr and "publishes 2" in result.stderr, result.stderr
    finally:
        for node in ("dra-node-a", "dra-node-b"):
            cluster.kubectl("delete", "resourceslice", f"{node}-gpus", check=False)


def test_dra_template_created_after_the_deployment_fails_open_then_shards(cluster: Cluster, webhook: Webhook, tmp_path: Path) -> None:
    ns = namespace(cluster, "dra-later")
    device_class, deployment, template = dra_documents("llama-later", 2, template_first=False)
    cluster.kubectl("apply", "-f", "-", stdin=json.dumps(device_class))
    cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(deployment))
    first = cluster.wait_for("pods", "-n", ns, "-l", "app=llama-later")
    assert first["spec"]["containers"][0]["args"] == ["-m", "/models/m.gguf"], "admitted unchanged while the template is unknown"
    cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(template))
    deadline = time.monotonic() + 60
    while True:  # the next pod the ReplicaSet makes gets the flags
        cluster.kubectl("delete", "pods", "-n", ns, "-l", "app=llama-later", "--wait=false")
        time.sleep(1)
        pods = cluster.get_json("pods", "-n", ns, "-l", "app=llama-later")["items"]
        args = [p["spec"]["containers"][0]["args"] for p in pods if not p["metadata"].get("deletionTimestamp")]
        if any("--tensor-split" in a for a in args) or time.monotonic() > deadline:
            break
    assert any(a[-2:] == ["--tensor-split", "1,1"] for a in args), args


def test_the_shipped_role_grants_what_the_watches_read_and_nothing_more(cluster: Cluster) -> None:
    rendered = yaml.safe_load_all(cluster.kubectl("kustomize", str(ROOT / "manifests" / "base")).stdout)
    wanted = [d for d in rendered if d and d["kind"] in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding")]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(wanted))
    account = "system:serviceaccount:gpu-shard-system:gpu-shard-webhook"

    def can(verb: str, resource: str) -> bool:
        return cluster.kubectl("auth", "can-i", verb, resource, "--as", account, check=False).stdout.strip() == "yes"

    try:
        for resource in (
            "nodes",
            *(f"{p}.resource.k8s.io" for p in ("resourceclaimtemplates", "resourceclaims", "deviceclasses", "resourceslices")),
            "networkpolicies.networking.k8s.io",
        ):
            assert all(can(verb, resource) for verb in ("get", "list", "watch")), resource
            assert not can("create", resource) and not can("update", resource), resource
        assert not can("get", "secrets") and not can("list", "pods") and not can("create", "pods")
    finally:  # leave the names free for the Helm test
        applied = yaml.safe_dump_all([w for w in wanted if w["kind"] != "Namespace"])
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", "--wait=false", stdin=applied)


def test_the_network_policy_component_is_accepted_by_the_real_api_server(cluster: Cluster) -> None:
    component = ROOT / "manifests" / "overlays" / "network-policy"
    (policy,) = [d for d in yaml.safe_load_all((component / "networkpolicy.yaml").read_text()) if d]
    namespace(cluster, policy["metadata"]["namespace"])
    applied = cluster.kubectl("apply", "--dry-run=server", "-o", "json", "-f", str(component / "networkpolicy.yaml"))
    stored = json.loads(applied.stdout)
    assert stored["kind"] == "NetworkPolicy" and stored["spec"]["ingress"] == policy["spec"]["ingress"]


# --- installed with the Helm chart ---------------------------------------------------------


def until_pod_dry_run_lacks(cluster: Cluster, pod: dict[str, Any], token: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cluster.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(pod), check=False)
        if result.returncode == 0 and token not in json.loads(result.stdout)["spec"]["containers"][0].get("args", []):
            return
        time.sleep(0.3)
    raise AssertionError(f"the API server still calls a webhook after {timeout}s")


def test_helm_install_upgrade_uninstall_through_the_real_api_server(cluster: Cluster, webhook: Webhook) -> None:
    """The README's Helm commands, with the tier's own webhook process behind the chart's configurations
    (webhooks.url: the chart's pods cannot run here, there is no kubelet)."""
    from tests.helm import CHART, helm_binary

    helm = helm_binary()
    if helm is None:
        pytest.skip("no Go toolchain to build helm")
    kinds = "mutatingwebhookconfiguration,validatingwebhookconfiguration"
    saved = [cluster.get_json(kind, "gpu-shard-webhook") for kind in kinds.split(",")]
    cluster.kubectl("delete", kinds, "gpu-shard-webhook")  # same names as the chart's: the chart takes over
    certs = webhook.directory / "certs"
    release = [
        "--namespace", "gpu-shard-system", "--kubeconfig", str(cluster.kubeconfig),
        "--set", "certificates.mode=provided", "--set-file", f"certificates.provided.cert={certs / 'tls.crt'}",
        "--set-file", f"certificates.provided.key={certs / 'tls.key'}", "--set-file", f"certificates.provided.ca={certs / 'ca.crt'}",
        "--set", f"webhooks.url=https://127.0.0.1:{webhook.port}",
    ]  # fmt: skip

    def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"helm {' '.join(args[:2])}: {done.stdout}{done.stderr}"
        return done

    probe = bare_pod("helm-probe", {"gpu-shard.io/enabled": "true"})
    try:
        run_helm("install", "gpu-shard-webhook", str(CHART), "--create-namespace", *release)
        configuration = cluster.get_json("mutatingwebhookconfiguration", "gpu-shard-webhook")
        assert configuration["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        until_pod_dry_run_shows(cluster, probe, "--tensor-split")
        ns = namespace(cluster, "helm-example")
        cluster.kubectl("apply", "-n", ns, "-f", str(ROOT / "manifests" / "examples" / "llama-13b-2gpu.yaml"))
        pod = cluster.wait_for("pods", "-n", ns, "-l", "app=llama-13b-multi-gpu")
        assert pod["spec"]["containers"][0]["args"][-4:] == ["--split-mode", "layer", "--tensor-split", "1,1"]

        run_helm("upgrade", "gpu-shard-webhook", str(CHART), *release, "--set", "config.maxGpusPerNode=1")
        deployment = cluster.get_json("deployment", "gpu-shard-webhook", "-n", "gpu-shard-system")
        env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["GSW_MAX_GPUS_PER_NODE"] == "1"
        where = ["--namespace", "gpu-shard-system", "--kubeconfig", str(cluster.kubeconfig)]
        assert "deployed" in run_helm("status", "gpu-shard-webhook", *where).stdout

        run_helm("uninstall", "gpu-shard-webhook", *where)
        assert cluster.kubectl("get", "mutatingwebhookconfiguration", "gpu-shard-webhook", check=False).returncode != 0
        until_pod_dry_run_lacks(cluster, probe, "--tensor-split")
    finally:
        subprocess.run([helm, "uninstall", "gpu-shard-webhook", "--namespace", "gpu-shard-system", "--kubeconfig", str(cluster.kubeconfig)],
                       capture_output=True, timeout=120, check=False)  # fmt: skip
        for obj in saved:  # the tier's own configurations, for the tests that follow
            obj["metadata"] = {k: v for k, v in obj["metadata"].items() if k in ("name", "labels", "annotations")}
            cluster.kubectl("apply", "-f", "-", stdin=json.dumps(obj))
        until_pod_dry_run_shows(cluster, probe, "--tensor-split")
