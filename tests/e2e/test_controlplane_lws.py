"""Multi-node llama.cpp through a real API server and the real LeaderWorkerSet controller:
a labelled LeaderWorkerSet applied with kubectl comes back planned, the leader and worker
Pods LWS creates carry the plan (and LWS's own labels and env, its webhook having run too),
`--dry-run=server` prints the plan, and the rejections come back as kubectl errors.

Its own control plane (not test_controlplane.py's): LWS's pod webhook matches every pod.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.cases import lws
from tests.e2e.cluster import Cluster, build_control_plane, control_plane, webhook_overlay
from tests.e2e.lws import build_lws, lws_controller
from tests.e2e.test_controlplane import Webhook, namespace
from tests.harness import ROOT, free_port, make_certs
from webhook.multinode import GATE_CONTAINER, RPC_PORT

pytestmark = pytest.mark.controlplane

EXAMPLE = ROOT / "manifests" / "examples" / "multinode" / "llama-70b-lws.yaml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binaries = build_control_plane()
    build = build_lws()
    workdir = tmp_path_factory.mktemp("controlplane-lws")
    with control_plane(binaries, workdir) as running, lws_controller(running, build, workdir):
        yield running


@pytest.fixture(scope="module")
def webhook(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    directory = tmp_path_factory.mktemp("webhook-lws")
    make_certs(directory / "certs")
    handle = Webhook(directory, free_port(), cluster.kubeconfig)
    handle.start()
    overlay = webhook_overlay(cluster.workdir, f"https://127.0.0.1:{handle.port}", (directory / "certs" / "ca.crt").read_bytes())
    rendered = cluster.kubectl("kustomize", str(overlay)).stdout
    configurations = [d for d in yaml.safe_load_all(rendered) if d and d["kind"].endswith("WebhookConfiguration")]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(configurations))
    yield handle
    handle.stop()


def dry_run_until_planned(cluster: Cluster, ns: str, manifest: str, timeout: float = 90) -> tuple[dict, str]:
    """A server-side dry run, once both LWS's and our webhooks answer (their informers are asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-o", "json", "-f", "-", stdin=manifest, check=False)
        if result.returncode == 0:
            obj = json.loads(result.stdout)
            if "gpu-shard.io/status" in obj["metadata"].get("annotations", {}):
                return obj, result.stderr
        if time.monotonic() > deadline:
            raise AssertionError(f"no plan from a dry run within {timeout}s:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        time.sleep(0.5)


def test_dry_run_server_prints_the_plan_and_creates_nothing(cluster: Cluster, webhook: Webhook) -> None:
    ns = namespace(cluster, "lws-dry-run")
    obj, stderr = dry_run_until_planned(cluster, ns, EXAMPLE.read_text())
    assert "Warning: gpu-shard: 3 pods per group: leader (2 local GPUs) + 2 RPC workers x 2 nvidia.com/gpu" in stderr, stderr
    assert "Warning: gpu-shard: 6 devices, RPC first: --n-gpu-layers 999 --split-mode layer --tensor-split 1,1,1,1,1,1" in stderr
    assert "no NetworkPolicy" in stderr, "the namespace has none: the webhook says so"
    leader = obj["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert "--rpc" in leader["args"]
    assert cluster.kubectl("get", "leaderworkersets", "-n", ns, "-o", "name").stdout.strip() == ""


def test_a_labelled_leaderworkerset_makes_pods_that_carry_the_plan(cluster: Cluster, webhook: Webhook) -> None:
    ns = namespace(cluster, "lws-apply")
    cluster.kubectl("apply", "-n", ns, "-f", str(ROOT / "manifests" / "examples" / "multinode" / "networkpolicy.yaml"))
    dry_run_until_planned(cluster, ns, EXAMPLE.read_text())
    applied = cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLE))
    assert "no NetworkPolicy" not in applied.stderr, "the example's policy selects the workers"
    stored = cluster.get_json("leaderworkerset", "llama-70b", "-n", ns)
    status = json.loads(stored["metadata"]["annotations"]["gpu-shard.io/status"])
    assert status["devices"] == 6 and status["workers"] == {
        "container": "llama",
        "count": 2,
        "gpusEach": 2,
        "port": RPC_PORT,
        "resource": "nvidia.com/gpu",
    }

    leader = cluster.wait_for("pod", "llama-70b-0", "-n", ns, timeout=90)
    workers = [cluster.wait_for("pod", f"llama-70b-0-{i}", "-n", ns, timeout=90) for i in (1, 2)]
    # LWS's own webhook ran on them too: its labels, and the env it gives every container.
    assert leader["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/name"] == "llama-70b"
    assert leader["metadata"]["labels"]["gpu-shard.io/rpc-role"] == "leader"
    group_key = leader["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/group-key"]
    container = leader["spec"]["containers"][0]
    rpc = container["args"][container["args"].index("--rpc") + 1]
    # Expanded with the pod's own name, as the kubelet will: each worker of group 0, by a name its Service gives it.
    expanded = rpc.replace("$(GPU_SHARD_POD_NAME)", leader["metadata"]["name"]).replace("$(GPU_SHARD_POD_NAMESPACE)", ns)
    assert expanded == f"llama-70b-0-1.llama-70b.{ns}:{RPC_PORT},llama-70b-0-2.llama-70b.{ns}:{RPC_PORT}"
    service = cluster.get_json("service", "llama-70b", "-n", ns)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    for worker in workers:
        assert worker["spec"]["subdomain"] == "llama-70b" and worker["spec"]["hostname"] == worker["metadata"]["name"]
        assert worker["metadata"]["labels"]["gpu-shard.io/rpc-role"] == "worker"
        assert worker["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/group-key"] == group_key
        (term,) = worker["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        # matchLabelKeys is merged into the selector by the API server: this group only
        assert {"key": "leaderworkerset.sigs.k8s.io/group-key", "operator": "In", "values": [group_key]} in term["labelSelector"][
            "matchExpressions"
        ]
        command = worker["spec"]["containers"][0]["command"]
        assert command[:2] == ["sh", "-c"] and f"-p {RPC_PORT} -c" in command[2]
    assert any(c["name"] == GATE_CONTAINER for c in leader["spec"]["initContainers"])
    assert "LWS_LEADER_ADDRESS" in {e["name"] for e in container["env"]}

    # the pod webhook saw them and left them alone: no second set of flags
    assert container["args"].count("--rpc") == 1 and container["args"].count("--tensor-split") == 1


def test_rejections_come_back_as_kubectl_errors(cluster: Cluster, webhook: Webhook) -> None:
    ns = namespace(cluster, "lws-denied")
    dry_run_until_planned(cluster, ns, EXAMPLE.read_text())
    bad = lws(3, startup_policy="LeaderReady")
    bad["metadata"]["namespace"] = ns
    result = cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=json.dumps(bad), check=False)
    assert result.returncode != 0 and "[lws-startup-deadlock]" in result.stderr, result.stderr
    official = lws(3)
    for template in ("leaderTemplate", "workerTemplate"):
        official["spec"]["leaderWorkerTemplate"][template]["spec"]["containers"][0]["image"] = "ghcr.io/ggml-org/llama.cpp:server-cuda"
    official["metadata"]["namespace"] = ns
    result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-f", "-", stdin=json.dumps(official), check=False)
    assert result.returncode != 0 and re.search(r"\[rpc-image-without-rpc\].*GGML_RPC=ON", result.stderr), result.stderr


def test_a_reapply_that_rewrites_the_leader_args_is_planned_again(cluster: Cluster, webhook: Webhook, tmp_path: Path) -> None:
    ns = namespace(cluster, "lws-update")
    dry_run_until_planned(cluster, ns, EXAMPLE.read_text())
    cluster.kubectl("apply", "-n", ns, "-f", str(EXAMPLE))
    changed = EXAMPLE.read_text().replace('"-c", "8192"', '"-c", "16384"')
    assert changed != EXAMPLE.read_text()
    cluster.kubectl("apply", "-n", ns, "-f", "-", stdin=changed)
    stored = cluster.get_json("leaderworkerset", "llama-70b", "-n", ns)
    args = stored["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]["args"]
    assert "16384" in args and args.count("--rpc") == 1 and args.count("--tensor-split") == 1


def test_a_leaderworkerset_labelled_on_its_templates_is_planned_too(cluster: Cluster, webhook: Webhook) -> None:
    """The opt-in where a Deployment carries it (the pod template): the shipped CEL matchConditions let it through."""
    ns = namespace(cluster, "lws-template-label")
    obj = yaml.safe_load(EXAMPLE.read_text())
    del obj["metadata"]["labels"]["gpu-shard.io/enabled"]
    obj["spec"]["leaderWorkerTemplate"]["workerTemplate"]["metadata"]["labels"]["gpu-shard.io/enabled"] = "true"
    planned, _ = dry_run_until_planned(cluster, ns, yaml.safe_dump(obj))
    assert "--rpc" in planned["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]["args"]
    plain = yaml.safe_load(EXAMPLE.read_text())
    del plain["metadata"]["labels"]["gpu-shard.io/enabled"]
    plain["metadata"]["name"] = "not-opted-in"
    before = webhook.settled_admissions()
    result = cluster.kubectl("apply", "--dry-run=server", "-n", ns, "-o", "json", "-f", "-", stdin=yaml.safe_dump(plain))
    assert "gpu-shard.io/status" not in json.loads(result.stdout)["metadata"].get("annotations", {})
    assert webhook.settled_admissions() == before, "a LeaderWorkerSet that did not opt in never reaches the webhook"
