"""The deployment: kustomize base and overlays built by a real kubectl, checked against the
Kubernetes 1.30 schema and against what the operator's guide promises; the Dockerfile."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.harness import ROOT
from tests.kubectl import kustomize
from webhook.claims import GROUP
from webhook.watch import DRA_RESOURCES

SCHEMA_VERSION = "1.30.0"
EXCLUDED_NAMESPACES = {"kube-system", "kube-node-lease", "kube-public", "gpu-shard-system"}


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return objects(kustomize(ROOT / "manifests" / "base"))


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    copy = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(ROOT / "manifests", copy, ignore=shutil.ignore_patterns("certs"))
    certs = copy / "overlays" / "self-signed" / "certs"
    subprocess.run([sys.executable, "-m", "webhook", "certs", "--out", str(certs)], check=True, cwd=ROOT, capture_output=True)
    return objects(kustomize(copy / "overlays" / "self-signed")), certs


def test_the_manifests_folder_itself_builds(base: list[dict[str, Any]]) -> None:
    assert objects(kustomize(ROOT / "manifests")) == base


def test_base_objects_are_valid_kubernetes_1_30(base: list[dict[str, Any]]) -> None:
    kinds = sorted(d["kind"] for d in base)
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "MutatingWebhookConfiguration",
            "ValidatingWebhookConfiguration",
        ]
    )
    for doc in base:
        kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


def webhooks(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [hook for d in docs if d["kind"].endswith("WebhookConfiguration") for hook in d["webhooks"]]


def test_webhook_configurations_follow_the_guide(base: list[dict[str, Any]]) -> None:
    hooks = webhooks(base)
    assert len(hooks) == 6
    for hook in hooks:
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None", "dry-run=server needs sideEffects None"
        assert hook["failurePolicy"] == "Fail"
        assert hook["matchPolicy"] == "Equivalent"
        assert 1 <= hook["timeoutSeconds"] <= 10
        service = hook["clientConfig"]["service"]
        assert (service["name"], service["namespace"], service["port"]) == ("gpu-shard-webhook", "gpu-shard-system", 443)
        (excluded,) = hook["namespaceSelector"]["matchExpressions"]
        assert excluded["key"] == "kubernetes.io/metadata.name" and excluded["operator"] == "NotIn"
        assert set(excluded["values"]) == EXCLUDED_NAMESPACES
        resources = {r for rule in hook["rules"] for r in rule["resources"]}
        if resources == {"pods"}:
            assert hook["objectSelector"] == {"matchLabels": {"gpu-shard.io/enabled": "true"}}
        else:
            assert "objectSelector" not in hook
            (condition,) = hook["matchConditions"]
            assert "gpu-shard.io/enabled" in condition["expression"]
    mutating = by_kind(base, "MutatingWebhookConfiguration")["webhooks"][0]
    assert mutating["reinvocationPolicy"] == "IfNeeded"
    assert mutating["clientConfig"]["service"]["path"] == "/mutate"
    assert mutating["rules"][0]["operations"] == ["CREATE"]
    group = by_kind(base, "MutatingWebhookConfiguration")["webhooks"][1]
    assert group["rules"][0]["resources"] == ["leaderworkersets"] and group["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    assert group["clientConfig"]["service"]["path"] == "/mutate" and group["reinvocationPolicy"] == "IfNeeded"
    validating = by_kind(base, "ValidatingWebhookConfiguration")["webhooks"]
    assert {h["clientConfig"]["service"]["path"] for h in validating} == {"/validate"}
    covered = {r for h in validating for rule in h["rules"] for r in rule["resources"]}
    assert covered == {"pods", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs", "leaderworkersets"}


def test_deployment_is_hardened_and_highly_available(base: list[dict[str, Any]]) -> None:
    deployment = by_kind(base, "Deployment")
    assert deployment["metadata"]["namespace"] == "gpu-shard-system"
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert container["image"] == "ghcr.io/gpu-shard-webhook/gpu-shard-webhook:0.1.0"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/gpu-shard-webhook/certs"]["readOnly"] is True
    assert "/tmp" in mounts, "gunicorn and the metrics need a writable /tmp on a read-only root"
    assert pod["terminationGracePeriodSeconds"] > 25 + 5
    assert by_kind(base, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    service = by_kind(base, "Service")
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https"}]


def test_rbac_reads_what_the_watches_read_and_nothing_else(base: list[dict[str, Any]]) -> None:
    role = by_kind(base, "ClusterRole")
    read = ["get", "list", "watch"]
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": read},
        {"apiGroups": [GROUP], "resources": list(DRA_RESOURCES), "verbs": read},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": read},
    ]
    binding = by_kind(base, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "gpu-shard-webhook", "namespace": "gpu-shard-system"}]


def test_self_signed_overlay_fills_every_ca_bundle_from_the_generated_certs(self_signed: tuple[list[dict[str, Any]], Path]) -> None:
    docs, certs = self_signed
    ca = (certs / "ca.crt").read_bytes()
    for hook in webhooks(docs):
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca
    secret = by_kind(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert base64.b64decode(secret["data"]["tls.crt"]) == (certs / "tls.crt").read_bytes()
    volumes = by_kind(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "certs", "secret": {"secretName": secret["metadata"]["name"]}} in volumes
    for doc in docs:
        kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


def test_cert_manager_overlay_injects_the_ca() -> None:
    docs = objects(kustomize(ROOT / "manifests" / "overlays" / "cert-manager"))
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = by_kind(docs, kind)["metadata"]["annotations"]
        assert annotations["cert-manager.io/inject-ca-from"] == "gpu-shard-system/gpu-shard-webhook-tls"
    certificate = by_kind(docs, "Certificate")
    assert certificate["spec"]["secretName"] == "gpu-shard-webhook-tls"
    assert "gpu-shard-webhook.gpu-shard-system.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["name"] == by_kind(docs, "Issuer")["metadata"]["name"]


def test_dockerfile_is_two_stages_on_debian_slim_and_non_root() -> None:
    """What can be read off the Dockerfile itself; tests/test_image.py builds and runs it."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip() and not line.startswith("#")]
    base = next(line for line in lines if line.startswith("ARG BASE=")).split("=", 1)[1]
    assert base.startswith("debian:") and base.endswith("-slim"), base
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms == ["FROM ${BASE} AS build", "FROM ${BASE}"], "build stage + final stage, both on the base"
    final = lines[lines.index(froms[1]) :]
    assert not any(word in " ".join(final) for word in ("gcc", "build-essential", "pip install", "python3-venv"))
    user = next(line for line in final if line.startswith("USER "))
    assert user.split()[1].split(":")[0].isdigit() and user.split()[1] != "0"
    assert final[-1] == 'ENTRYPOINT ["gpu-shard-webhook", "serve"]'


def with_network_policy(self_signed_dir: Path) -> list[dict[str, Any]]:
    kustomization = self_signed_dir / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text() + "components:\n  - ../network-policy\n")
    return objects(kustomize(self_signed_dir))


def test_the_network_policy_component_admits_port_8443_from_outside_the_pod_network(tmp_path: Path) -> None:
    copy = tmp_path / "manifests"
    shutil.copytree(ROOT / "manifests", copy, ignore=shutil.ignore_patterns("certs"))
    subprocess.run(
        [sys.executable, "-m", "webhook", "certs", "--out", str(copy / "overlays" / "self-signed" / "certs")],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    without = objects(kustomize(copy / "overlays" / "self-signed"))
    docs = with_network_policy(copy / "overlays" / "self-signed")
    policy = by_kind(docs, "NetworkPolicy")
    assert [d for d in docs if d["kind"] != "NetworkPolicy"] == without, "the component adds the policy and changes nothing else"
    kubernetes_validate.validate(policy, SCHEMA_VERSION, strict=True)

    deployment = by_kind(docs, "Deployment")
    template = deployment["spec"]["template"]
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= template["metadata"]["labels"].items(), "the policy selects the webhook's pods"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (port,) = [p for c in template["spec"]["containers"] for p in c["ports"] if p["name"] == "https"]
    rules = policy["spec"]["ingress"]
    assert rules and all(rule["ports"] == [{"protocol": "TCP", "port": port["containerPort"]}] for rule in rules)
    api_server = rules[0]["from"][0]["ipBlock"]
    assert api_server["cidr"] == "0.0.0.0/0" and api_server["except"], "everything but the pod network"
    service = by_kind(docs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
