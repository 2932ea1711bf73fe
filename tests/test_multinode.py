"""LeaderWorkerSets through the pure core: the group plan, the mutation, the rules, the report."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonpatch
import kubernetes_validate
import pytest

from tests.cases import ENABLED, GROUP_CASES, GroupCase, group_case, lws
from tests.expectations import contains_run
from webhook import admission
from webhook.config import Config
from webhook.multinode import GATE_CONTAINER, gate_script, review_group, worker_script
from webhook.reading import group_member
from webhook.review import review_pod
from webhook.violation import CODES

EXAMPLES = Path(__file__).resolve().parents[1] / "manifests" / "examples" / "multinode"
ADMITTED = [c for c in GROUP_CASES if not c.expect.denied]
DENIED = [c for c in GROUP_CASES if c.expect.denied]


def templates(obj: dict) -> tuple[dict, dict]:
    group = obj["spec"]["leaderWorkerTemplate"]
    return group["leaderTemplate"], group["workerTemplate"]


def as_pod(template: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "llama-70b-0", **template["metadata"]}, "spec": template["spec"]}


def env_of(container: dict) -> dict[str, dict]:
    return {v["name"]: v for v in container.get("env", [])}


@pytest.mark.parametrize("case", GROUP_CASES, ids=lambda c: c.name)
def test_group_scenario(case: GroupCase) -> None:
    original = case.fresh()
    review = review_group(original, case.config, "ai", case.cluster())
    assert original == case.lws, "the input object must not be modified"
    assert {v.code for v in review.violations} == set(case.expect.denied), [v.render() for v in review.violations]
    for violation in review.violations:
        assert violation.code in CODES
    if case.expect.denied:
        return
    applied = jsonpatch.apply_patch(copy.deepcopy(case.lws), review.patch)
    assert applied == review.obj, "the patch must turn the original into the admitted object"
    again = review_group(applied, case.config, "ai", case.cluster())
    assert again.patch == [], "mutating twice must give the same object"
    assert again.violations == [] and again.report is not None and review.report is not None
    assert again.report.status() == review.report.status(), "the report must not change when the webhook sees its own work"


@pytest.mark.parametrize("case", ADMITTED, ids=lambda c: c.name)
def test_leader_runs_llama_server_over_every_worker(case: GroupCase) -> None:
    review = review_group(case.fresh(), case.config, "ai", case.cluster())
    leader_template, _ = templates(review.obj)
    kubernetes_validate.validate(as_pod(leader_template), "1.30.0", strict=True)
    container = leader_template["spec"]["containers"][0]
    size = case.lws["spec"]["leaderWorkerTemplate"]["size"]
    names = [f"$(GPU_SHARD_POD_NAME)-{i}.{case.expect.rpc_host}.$(GPU_SHARD_POD_NAMESPACE):{case.expect.rpc_port}" for i in range(1, size)]
    env = env_of(container)
    assert env["GPU_SHARD_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["GPU_SHARD_POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    argv = [*container.get("command", []), *container.get("args", [])]
    if case.expect.leader_env:
        assert env["LLAMA_ARG_RPC"]["value"] == ",".join(names)
        for name, value in case.expect.leader_env:
            assert env[name]["value"] == value
    else:
        assert contains_run(argv, ("--rpc", ",".join(names)))
        assert contains_run(argv, ("--split-mode", "layer"))
        assert case.expect.tensor_split is not None and contains_run(argv, ("--tensor-split", case.expect.tensor_split))
        for run in case.expect.leader_args:
            assert contains_run(argv, run)
    # the names come before their use: the kubelet expands $(VAR) from variables defined earlier
    names_in_env = [v["name"] for v in container["env"]]
    if "LLAMA_ARG_RPC" in names_in_env:
        assert names_in_env.index("GPU_SHARD_POD_NAME") < names_in_env.index("LLAMA_ARG_RPC")
    gate = next(c for c in leader_template["spec"]["initContainers"] if c["name"] == GATE_CONTAINER)
    assert gate["image"] == container["image"]
    assert f"{case.expect.rpc_port}" in gate["command"][2]
    labels = leader_template["metadata"]["labels"]
    assert labels["gpu-shard.io/rpc-role"] == "leader"
    spec = leader_template["spec"]
    assert ("podAntiAffinity" in spec.get("affinity", {})) is case.expect.leader_placed
    assert bool(spec.get("tolerations")) is case.expect.leader_placed


@pytest.mark.parametrize("case", ADMITTED, ids=lambda c: c.name)
def test_workers_run_the_rpc_server_one_per_node(case: GroupCase) -> None:
    review = review_group(case.fresh(), case.config, "ai", case.cluster())
    _, worker_template = templates(review.obj)
    kubernetes_validate.validate(as_pod(worker_template), "1.30.0", strict=True)
    spec = worker_template["spec"]
    container = spec["containers"][0]
    argv = [*container.get("command", []), *container.get("args", [])]
    if case.expect.worker_argv is None:
        assert argv[:2] == ["sh", "-c"] and '-H "$GPU_SHARD_POD_IP"' in argv[2] and f"-p {case.expect.rpc_port} -c" in argv[2]
    else:
        assert tuple(argv) == case.expect.worker_argv
    env = env_of(container)
    assert env["GPU_SHARD_POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["LLAMA_CACHE"]["value"] == "/var/cache/gpu-shard-rpc"
    assert {"name": "gpu-shard-rpc-cache", "emptyDir": {}} in spec["volumes"]
    assert {"name": "rpc", "containerPort": case.expect.rpc_port, "protocol": "TCP"} in container["ports"]
    assert not any(probe in container for probe in ("livenessProbe", "readinessProbe", "startupProbe"))
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["matchLabelKeys"] == ["leaderworkerset.sigs.k8s.io/group-key"]
    roles = term["labelSelector"]["matchExpressions"][0]["values"]
    assert roles == (["leader", "worker"] if case.expect.leader_placed else ["worker"])
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    expressions = (
        spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
        if gpus > 1
        else []
    )
    assert ({"key": "nvidia.com/gpu.count", "operator": "Gt", "values": [str(gpus - 1)]} in expressions) is (gpus > 1)


@pytest.mark.parametrize("case", ADMITTED, ids=lambda c: c.name)
def test_status_states_the_group_as_it_will_run(case: GroupCase) -> None:
    review = review_group(case.fresh(), case.config, "ai", case.cluster())
    leader_template, worker_template = templates(review.obj)
    status = json.loads(review.obj["metadata"]["annotations"]["gpu-shard.io/status"])
    assert leader_template["metadata"]["annotations"]["gpu-shard.io/status"] == review.obj["metadata"]["annotations"]["gpu-shard.io/status"]
    assert status["devices"] == case.expect.devices
    size = case.lws["spec"]["leaderWorkerTemplate"]["size"]
    assert status["workers"]["count"] == size - 1
    assert status["workers"]["port"] == case.expect.rpc_port
    assert status["splitMode"] == "layer"
    container = leader_template["spec"]["containers"][0]
    argv = [*container.get("command", []), *container.get("args", [])]
    env = env_of(container)
    # each reported value is what the container sets, where the report says
    for name, flag in (("rpc", "--rpc"), ("tensorSplit", "--tensor-split"), ("splitMode", "--split-mode")):
        origin = status["origin"][name]
        if origin.startswith("webhook:--") or origin.startswith("user:-"):
            spelling = origin.split(":", 1)[1]
            assert contains_run(argv, (spelling, status[name])), (name, origin)
        else:
            assert env[origin.split(":", 1)[1]]["value"] == status[name], (name, origin)
        assert flag
    for run in case.expect.leader_args:
        assert status["origin"]["gpuLayers"] == f"user:{run[0]}" and status["gpuLayers"] == run[1]
    worker_status = json.loads(worker_template["metadata"]["annotations"]["gpu-shard.io/status"])
    assert worker_status == {
        "role": "worker",
        "container": "llama",
        "gpus": int(worker_template["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]),
        "port": case.expect.rpc_port,
    }
    for text in case.expect.warnings:
        assert any(text in w for w in review.warnings), review.warnings
    if not case.expect.warnings:
        assert not any("NetworkPolicy" in w for w in review.warnings)


@pytest.mark.parametrize("case", DENIED, ids=lambda c: c.name)
def test_rejections_say_where_and_how_to_fix(case: GroupCase) -> None:
    review = review_group(case.fresh(), case.config, "ai", case.cluster())
    for violation in review.violations:
        assert violation.field.startswith("spec."), violation
        assert any(word in violation.message for word in ("use", "remove", "add", "set", "give", "ask")), violation.message


def test_pods_lws_creates_from_a_planned_template_are_left_alone() -> None:
    review = review_group(
        lws(3), Config(), "ai", group_case("LWS: 3 pods, GPU-less leader, 2 GPUs per worker: 4 devices over RPC").cluster()
    )
    leader_template, worker_template = templates(review.obj)
    for template in (leader_template, worker_template):
        pod = as_pod(template)
        pod["metadata"]["labels"] = {**pod["metadata"]["labels"], **ENABLED, "leaderworkerset.sigs.k8s.io/name": "llama-70b"}
        assert group_member(pod["metadata"]["labels"], Config())
        result = review_pod(pod, Config())
        assert result.patch == [] and result.violations == []
    # without LWS's label the role label alone does not exempt a pod
    pod = as_pod(worker_template)
    pod["metadata"]["labels"] = {**pod["metadata"]["labels"], **ENABLED}
    assert not group_member(pod["metadata"]["labels"], Config())
    assert review_pod(pod, Config()).violations


def test_a_leaderworkerset_without_the_label_is_not_touched() -> None:
    obj = lws(3, labels={})
    assert review_group(obj, Config(), "ai").report is not None  # the core plans anything it is given
    request = admission.Request("u1", "LeaderWorkerSet", "CREATE", "ai", "llama-70b", obj, None, False)
    decision = admission.mutate(request, Config())
    assert decision.result == "allowed" and decision.response.patch is None


def test_a_label_on_a_template_opts_the_leaderworkerset_in_as_on_a_deployment() -> None:
    for template in ("workerTemplate", "leaderTemplate"):
        obj = lws(3, labels={})
        obj["spec"]["leaderWorkerTemplate"][template]["metadata"]["labels"]["gpu-shard.io/enabled"] = "true"
        request = admission.Request("u1", "LeaderWorkerSet", "CREATE", "ai", "llama-70b", obj, None, False)
        decision = admission.mutate(request, Config())
        assert decision.result == "patched", template
        admitted = jsonpatch.apply_patch(copy.deepcopy(obj), decision.response.patch)
        for planned in templates(admitted):  # the pods LWS makes carry the label and a role: the pod webhook skips them
            pod = as_pod(planned)
            pod["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/name"] = "llama-70b"
            if planned["metadata"]["labels"].get("gpu-shard.io/enabled") == "true":
                assert group_member(pod["metadata"]["labels"], Config()) and review_pod(pod, Config()).patch == []


def test_the_mutating_webhook_patches_and_the_validating_webhook_denies() -> None:
    case = group_case("LWS: 3 pods, GPU-less leader, 2 GPUs per worker: 4 devices over RPC")
    request = admission.Request("u1", "LeaderWorkerSet", "CREATE", "ai", "llama-70b", case.fresh(), None, True)
    decision = admission.mutate(request, Config(), case.cluster())
    assert decision.result == "patched" and decision.gpus == 4 and decision.sharded
    assert any("4 devices, RPC first" in w for w in decision.response.warnings)
    admitted = jsonpatch.apply_patch(case.fresh(), decision.response.patch)
    validated = admission.validate(
        admission.Request("u2", "LeaderWorkerSet", "CREATE", "ai", "llama-70b", admitted, None, True), Config(), case.cluster()
    )
    assert validated.result == "allowed"
    bad = group_case("LWS: startupPolicy LeaderReady deadlocks")
    denied = admission.validate(
        admission.Request("u3", "LeaderWorkerSet", "CREATE", "ai", "llama-70b", bad.fresh(), None, False), Config(), bad.cluster()
    )
    assert denied.result == "denied" and "lws-startup-deadlock" in (denied.response.message or "")
    # an update that keeps an old problem is not refused for it (LWS's own scale-ups must go through)
    update = admission.Request("u4", "LeaderWorkerSet", "UPDATE", "ai", "llama-70b", bad.fresh(), bad.fresh(), False)
    assert admission.validate(update, Config(), bad.cluster()).result == "allowed"


def test_the_scripts_never_use_kubelet_expansion_by_accident() -> None:
    """$(NAME) in a command is the kubelet's; the scripts use the shell's ${NAME} only."""
    for script in (gate_script(2, "llama-70b", 50052), gate_script(3, "$(GPU_SHARD_POD_NAME)", 50052), worker_script(50052)):
        assert "$(GPU_SHARD" not in script
        assert "exit 1" not in script or script.startswith("# gpu-shard-webhook: llama.cpp RPC worker")


def test_the_network_policy_warning_follows_the_watched_policies(tmp_path: Path) -> None:
    from tests.cases import RPC_POLICY
    from tests.fake_apiserver import NETWORK_POLICIES, FakeCluster, gpu_node
    from tests.test_inventory import eventually
    from webhook.cluster import Cluster
    from webhook.watch import ClusterWatch, load_api_client

    fake = FakeCluster().start()
    try:
        for name in ("gpu-a", "gpu-b", "gpu-c"):
            fake.add(gpu_node(name, 2))
        watcher = ClusterWatch(load_api_client(fake.kubeconfig(tmp_path)), Config(), nodes=True, dra=False, max_backoff=0.2)
        watcher.start()
        try:
            cluster = Cluster(nodes=watcher.nodes, network_policies=watcher.network_policies)
            eventually(lambda: watcher.network_policies().synced and watcher.nodes().synced)

            def warned() -> bool:
                return any("no NetworkPolicy" in w for w in review_group(lws(3), Config(), "ai", cluster).warnings)

            assert warned()
            fake.add(RPC_POLICY, NETWORK_POLICIES)
            eventually(lambda: not warned())
            egress_only = {**RPC_POLICY, "spec": {**RPC_POLICY["spec"], "policyTypes": ["Egress"]}}
            fake.modify(egress_only, NETWORK_POLICIES)
            eventually(warned)  # a policy that does not restrict ingress does not fence the RPC port
            elsewhere = {**RPC_POLICY, "metadata": {"name": "other", "namespace": "other-team"}}
            fake.add(elsewhere, NETWORK_POLICIES)
            fake.delete("ai/llama-rpc-workers", NETWORK_POLICIES)
            eventually(lambda: ("other-team", "other") in watcher.watches["networkpolicies"].snapshot().items)
            assert warned(), "a policy in another namespace does not select these workers"
        finally:
            watcher.stop()
    finally:
        fake.close()


def test_the_shipped_policies_select_the_workers_and_admit_only_leaders() -> None:
    import yaml

    from tests.cases import RPC_POLICY
    from webhook.networkpolicy import selector_matches, snapshot_from

    example = next(yaml.safe_load_all((EXAMPLES / "llama-70b-lws.yaml").read_text()))
    policy = next(yaml.safe_load_all((EXAMPLES / "networkpolicy.yaml").read_text()))
    review = review_group(example, Config(), "ai")
    assert review.allowed and review.report is not None and review.report.plan.devices == 6
    leader_template, worker_template = templates(review.obj)
    lws_labels = {"leaderworkerset.sigs.k8s.io/name": "llama-70b"}
    worker_labels = {**worker_template["metadata"]["labels"], **lws_labels}
    leader_labels = {**leader_template["metadata"]["labels"], **lws_labels}
    for shipped in (policy, RPC_POLICY):
        snapshot = snapshot_from([{**shipped, "metadata": {**shipped["metadata"], "namespace": "ai"}}])
        assert snapshot.selects("ai", worker_labels) and not snapshot.selects("ai", leader_labels)
    (rule,) = policy["spec"]["ingress"]
    (source,) = rule["from"]
    assert selector_matches(source["podSelector"], leader_labels) and not selector_matches(source["podSelector"], worker_labels)
    assert rule["ports"] == [{"protocol": "TCP", "port": 50052}]


def test_preview_shows_the_group_plan_and_prints_the_leaderworkerset_as_stored(tmp_path: Path) -> None:
    import yaml

    from tests.test_cli import run_preview

    example = next(yaml.safe_load_all((EXAMPLES / "llama-70b-lws.yaml").read_text()))
    shown = run_preview(tmp_path, [example])
    assert shown.returncode == 0, shown.stderr
    assert "--- # LeaderWorkerSet llama-70b: admitted" in shown.stdout
    assert "# gpu-shard: 3 pods per group: leader (2 local GPUs) + 2 RPC workers x 2 nvidia.com/gpu" in shown.stdout
    stored = run_preview(tmp_path, [example], "-o", "yaml")
    (lws_object,) = [d for d in yaml.safe_load_all(stored.stdout) if d]
    assert lws_object == review_group(example, Config(), "default").obj
    denied = run_preview(tmp_path, [lws(3, startup_policy="LeaderReady")])
    assert denied.returncode == 1 and "[lws-startup-deadlock]" in denied.stdout


def test_the_dry_run_lines_of_the_example_are_shown_whole() -> None:
    """kubectl shows each warning on a line; the webhook cuts longer ones, so the plan must fit."""
    import yaml

    example = next(yaml.safe_load_all((EXAMPLES / "llama-70b-lws.yaml").read_text()))
    decision = admission.validate(admission.Request("u", "LeaderWorkerSet", "CREATE", "ai", "llama-70b", example, None, True), Config())
    assert decision.result == "allowed"
    assert all(len(w) < admission.MAX_WARNING_LENGTH and not w.endswith("…") for w in decision.response.warnings)
    assert "gpu-shard: --rpc llama-70b-<group>-1.llama-70b.<namespace>:50052,llama-70b-<group>-2.llama-70b.<namespace>:50052" in (
        decision.response.warnings
    )
    readme = (EXAMPLES.parents[2] / "README.md").read_text()
    for warning in decision.response.warnings:
        assert f"Warning: {warning}" in readme, "the README shows what the webhook prints"


# --- the real world: LeaderWorkerSet's own llama.cpp example (tests/realworld/multinode/) -----------

REAL_LWS = Path(__file__).resolve().parent / "realworld" / "multinode" / "kubernetes-sigs--lws--llamacpp.yaml"


def real_lws() -> dict:
    import yaml

    return next(d for d in yaml.safe_load_all(REAL_LWS.read_text()) if d)


def with_gpus(obj: dict, count: str = "1") -> dict:
    for template in templates(obj):
        template["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": count}}
    return obj


def test_lws_llamacpp_example_as_written_names_the_fix() -> None:
    """The leader is a wrapper the webhook cannot read, and the workers hold no GPU: said, one fix at a time."""
    review = review_group(real_lws(), Config(), "default")
    assert [v.code for v in review.violations] == ["no-llama-container"]
    assert "gpu-shard.io/container" in review.violations[0].message


def test_lws_llamacpp_example_with_gpus_is_refused_for_its_two_images() -> None:
    obj = with_gpus(real_lws())
    obj["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["metadata"]["annotations"] = {"gpu-shard.io/container": "llamacpp-leader"}
    review = review_group(obj, Config(), "default")
    assert [v.code for v in review.violations] == ["rpc-image-mismatch"]


def test_lws_llamacpp_example_with_one_image_keeps_its_rpc_server_entrypoint() -> None:
    """The worker image's entrypoint is /rpc-server (distroless: no shell): its args are the RPC server's, kept."""
    obj = with_gpus(real_lws())
    group = obj["spec"]["leaderWorkerTemplate"]
    group["leaderTemplate"]["metadata"]["annotations"] = {"gpu-shard.io/container": "llamacpp-leader"}
    group["workerTemplate"]["spec"]["containers"][0]["image"] = group["leaderTemplate"]["spec"]["containers"][0]["image"]
    review = review_group(obj, Config(), "default")
    assert review.violations == [], [v.render() for v in review.violations]
    _, worker_template = templates(review.obj)
    container = worker_template["spec"]["containers"][0]
    assert "command" not in container and container["args"] == ["--host", "0.0.0.0", "--mem", "4192"]
    assert review.report is not None and review.report.plan.devices == 4 + 1
    leader_container = templates(review.obj)[0]["spec"]["containers"][0]
    env = env_of(leader_container)
    assert env["LLAMA_ARG_RPC"]["value"].count(":50052") == 4, "the wrapper is opaque: settings go through LLAMA_ARG_*"
    assert any("must pass LLAMA_ARG_* on and set no --rpc" in line for line in review.report.lines())


def test_the_start_up_gate_waits_for_every_worker_and_never_fails(tmp_path: Path) -> None:
    """The gate script run by a real sh, its bash /dev/tcp probes pointed at loopback (the one swap: no DNS here)."""
    import shutil
    import socket
    import subprocess
    import time

    from tests.harness import free_port

    real_bash = shutil.which("bash")
    assert real_bash is not None
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "bash").write_text(f'#!/bin/sh\nexec {real_bash} -c "$(printf %s "$2" | sed -E "s#/dev/tcp/[^/]+/#/dev/tcp/127.0.0.1/#")"\n')
    (shim / "bash").chmod(0o755)
    port = free_port()
    env = {"PATH": f"{shim}:/usr/bin:/bin", "GPU_SHARD_POD_NAME": "llama-70b-0", "GPU_SHARD_POD_NAMESPACE": "ai"}
    gate = subprocess.Popen(["sh", "-c", gate_script(2, "llama-70b", port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(2.5)
        assert gate.poll() is None, "no worker listens yet: the gate keeps waiting instead of failing"
        listener = socket.create_server(("127.0.0.1", port))
        try:
            assert gate.wait(timeout=10) == 0
        finally:
            listener.close()
        out = gate.stdout.read().decode() if gate.stdout else ""
    finally:
        gate.kill()
    assert "waiting for RPC worker llama-70b-0-1.llama-70b.ai:" in out
    assert "RPC worker llama-70b-0-1.llama-70b.ai is up" in out and "RPC worker llama-70b-0-2.llama-70b.ai is up" in out
