"""The Helm chart with the real helm: lint, every certificate mode rendered and schema-checked,
every `serve` setting a value, the kustomize base rendered from it (no drift), and the pieces
the kustomize manifests also ship (NetworkPolicy, dashboard, alerts) kept the same."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from base64 import b64decode
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from tests.harness import ROOT, make_certs
from tests.helm import CHART, FIXED_BY_THE_CHART, by_kind, helm_binary, render, server_variables
from webhook.config import Config, config_from

SCHEMA_VERSION = "1.30.0"
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "Certificate", "Issuer"}  # CRDs: no schema in kubernetes-validate
EVERYTHING_ON = ["networkPolicy.enabled=true", "monitoring.serviceMonitor.enabled=true", "monitoring.dashboard.enabled=true"]
EVERYTHING_ON += ["monitoring.prometheusRule.enabled=true", "namespace.create=true"]


@pytest.fixture(scope="module")
def helm() -> str:
    found = helm_binary()
    if found is None:
        pytest.skip("no Go toolchain to build helm from the module proxy")
    return found


@pytest.fixture(scope="module")
def provided_certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    certs = make_certs(tmp_path_factory.mktemp("provided"))  # `gpu-shard-webhook certs`
    return {
        "certificates.provided.cert": certs / "tls.crt",
        "certificates.provided.key": certs / "tls.key",
        "certificates.provided.ca": certs / "ca.crt",
    }


def test_helm_lint_is_clean(helm: str) -> None:
    done = subprocess.run([helm, "lint", "--strict", str(CHART), "--kube-version", "1.30.0"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] in ("monitoring.coreos.com/v1", "cert-manager.io/v1"), doc["apiVersion"]
            continue
        kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


def webhook_entries(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kinds = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
    return [w for d in docs if d["kind"] in kinds for w in d["webhooks"]]


@pytest.mark.parametrize("mode", ["generated", "provided"])
def test_chart_made_certificates_serve_the_service_and_fill_every_ca_bundle(helm: str, mode: str, provided_certs: dict[str, Path]) -> None:
    docs = render(helm, f"certificates.mode={mode}", *EVERYTHING_ON, files=provided_certs if mode == "provided" else None)
    validate(docs)
    (secret,) = by_kind(docs, "Secret")
    data = {k: b64decode(v) for k, v in secret["data"].items()}
    entries = webhook_entries(docs)
    assert len(entries) == 6 and all(b64decode(w["clientConfig"]["caBundle"]) == data["ca.crt"] for w in entries)
    served = x509.load_pem_x509_certificate(data["tls.crt"])
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "gpu-shard-webhook.gpu-shard-system.svc" in names
    authority = x509.load_pem_x509_certificate(data["ca.crt"])
    served.verify_directly_issued_by(authority)
    if mode == "provided":
        assert data["tls.crt"] == provided_certs["certificates.provided.cert"].read_bytes()
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/certificates"], "a new certificate rolls the pods"
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "certs")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]


def test_provided_mode_without_the_files_says_what_to_pass(helm: str) -> None:
    with pytest.raises(AssertionError, match=re.escape("certificates.provided.cert")):
        render(helm, "certificates.mode=provided")


def test_cert_manager_mode_asks_cert_manager_for_the_certificate_and_the_ca(helm: str) -> None:
    docs = render(helm, "certificates.mode=cert-manager", *EVERYTHING_ON)
    validate(docs)
    assert not by_kind(docs, "Secret"), "cert-manager writes the Secret"
    (certificate,) = by_kind(docs, "Certificate")
    (issuer,) = by_kind(docs, "Issuer")
    assert certificate["spec"]["issuerRef"] == {"kind": "Issuer", "name": issuer["metadata"]["name"]}
    assert "gpu-shard-webhook.gpu-shard-system.svc" in certificate["spec"]["dnsNames"]
    for configuration in by_kind(docs, "MutatingWebhookConfiguration") + by_kind(docs, "ValidatingWebhookConfiguration"):
        assert configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
            f"gpu-shard-system/{certificate['spec']['secretName']}"
        )
    assert all("caBundle" not in w["clientConfig"] for w in webhook_entries(docs))
    own_issuer = render(helm, "certificates.mode=cert-manager", "certificates.certManager.issuerRef.kind=ClusterIssuer",
                        "certificates.certManager.issuerRef.name=corp-ca")  # fmt: skip
    assert not by_kind(own_issuer, "Issuer")
    assert by_kind(own_issuer, "Certificate")[0]["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "corp-ca"}


def test_failure_policy_timeout_exclusions_and_prefix_are_values(helm: str) -> None:
    defaults = webhook_entries(render(helm, namespace="llm-system"))
    assert {w["failurePolicy"] for w in defaults} == {"Fail"}
    excluded = defaults[0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert set(excluded) == {"kube-system", "kube-node-lease", "kube-public", "llm-system"}, "the release's namespace is always left out"
    changed = render(helm, "webhooks.failurePolicy=Ignore", "webhooks.timeoutSeconds=3", "config.prefix=llm.example.com")
    entries = webhook_entries(changed)
    assert {w["failurePolicy"] for w in entries} == {"Ignore"} and {w["timeoutSeconds"] for w in entries} == {3}
    selected = [w["objectSelector"]["matchLabels"] for w in entries if "objectSelector" in w]
    assert selected and all(s == {"llm.example.com/enabled": "true"} for s in selected)
    conditions = [c["expression"] for w in entries for c in w.get("matchConditions", [])]
    assert conditions and all("'llm.example.com/enabled'" in c for c in conditions)
    env = {e["name"]: e["value"] for e in by_kind(changed, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["GSW_PREFIX"] == "llm.example.com", "the server reads the same prefix the webhooks select"


SENTINELS: dict[str, Any] = {
    "config.prefix": "llm.example.com",
    "config.gpuResources": "{amd.com/gpu,nvidia.com/gpu}",
    "config.gpuDeviceClasses": "{gpu.amd.com}",
    "config.defaultGpuLayers": "all",
    "config.maxGpusPerNode": 4,
    "config.precedence": "annotation",
    "config.injectAffinity": "false",
    "config.affinityResources": "{amd.com/gpu}",
    "config.gpuCountLabel": "amd.com/gpu.count",
    "config.sharingStrategyLabel": "example.com/sharing",
    "config.sharedStrategies": "{mps}",
    "config.productLabel": "amd.com/gpu.product-name",
    "config.cudaDriverLabel": "nvidia.com/cuda.driver-version.major",
    "config.bodyLimit": 1048576,
    "server.workers": 3,
    "server.threads": 4,
    "server.logLevel": "warning",
    "server.keepalive": 120,
    "server.gracefulTimeout": 20,
    "server.handshakeTimeout": 3,
    "server.headerTimeout": 4,
    "server.bodyTimeout": 6,
    "server.writeTimeout": 7,
    "server.maxConnections": 500,
    "server.clusterChecks": "false",
    "server.dra": "false",
}


def test_every_setting_of_serve_is_a_value_and_reaches_the_server(helm: str) -> None:
    docs = render(helm, *(f"{key}={value}" for key, value in SENTINELS.items()))
    env = {e["name"]: e["value"] for e in by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    wanted = server_variables() - set(FIXED_BY_THE_CHART)
    assert wanted <= set(env), f"serve settings without a chart value: {sorted(wanted - set(env))}"
    config = config_from(env)  # the server's own parsing of what the chart wrote
    assert config.gpu_resources == ("amd.com/gpu", "nvidia.com/gpu") and config.max_gpus_per_node == 4
    assert config.precedence == "annotation" and config.inject_affinity is False and config.body_limit == 1048576
    assert config.default_gpu_layers == "all" and config.shared_strategies == ("mps",)
    assert env["GSW_WORKERS"] == "3" and env["GSW_HEADER_TIMEOUT"] == "4" and env["GSW_DRA"] == "false"


def test_with_defaults_the_chart_sets_only_what_the_server_would_not_default_to(helm: str) -> None:
    env = by_kind(render(helm), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    written = {e["name"]: e["value"] for e in env}
    assert config_from(written) == Config(), "the chart's defaults are the server's"


def test_the_kustomize_base_and_alerts_are_rendered_from_the_chart() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "manifests" / "render.py"), "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"run `python manifests/render.py`:\n{done.stdout}{done.stderr}"


def test_the_network_policy_matches_the_kustomize_component(helm: str) -> None:
    (policy,) = by_kind(render(helm, "networkPolicy.enabled=true"), "NetworkPolicy")
    component = yaml.safe_load((ROOT / "manifests" / "overlays" / "network-policy" / "networkpolicy.yaml").read_text())
    assert policy["spec"] == component["spec"]


def test_the_dashboard_is_the_one_the_kustomize_monitoring_ships(helm: str) -> None:
    (config_map,) = by_kind(render(helm, "monitoring.dashboard.enabled=true"), "ConfigMap")
    shipped = (ROOT / "manifests" / "monitoring" / "grafana-dashboard.json").read_text()
    assert json.loads(config_map["data"]["grafana-dashboard.json"]) == json.loads(shipped)
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_replicas_resources_and_spread_are_values(helm: str) -> None:
    docs = render(helm, "replicas=3", "resources.limits.memory=1Gi", "topologySpread.enabled=false", "podDisruptionBudget.enabled=false")
    (deployment,) = by_kind(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3 and spec["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
    assert "topologySpreadConstraints" not in spec and not by_kind(docs, "PodDisruptionBudget")
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_rpc_network_policy_fences_the_workers_of_each_listed_namespace(helm: str) -> None:
    from webhook.networkpolicy import selector_matches, snapshot_from

    docs = render(helm, "rpcNetworkPolicy.namespaces={ai,research}")
    validate(docs)
    policies = [d for d in by_kind(docs, "NetworkPolicy") if d["metadata"]["name"].endswith("-rpc-workers")]
    assert sorted(p["metadata"]["namespace"] for p in policies) == ["ai", "research"]
    worker = {"gpu-shard.io/rpc-role": "worker", "leaderworkerset.sigs.k8s.io/name": "llama-70b"}
    leader = {**worker, "gpu-shard.io/rpc-role": "leader"}
    snapshot = snapshot_from(policies)
    assert snapshot.selects("ai", worker) and snapshot.selects("research", worker) and not snapshot.selects("ai", leader)
    (rule,) = policies[0]["spec"]["ingress"]
    assert [selector_matches(f["podSelector"], leader) for f in rule["from"]] == [True]
    assert not any(selector_matches(f["podSelector"], worker) for f in rule["from"])
    assert rule["ports"] == [{"protocol": "TCP", "port": 50052}]
    assert not [d for d in by_kind(render(helm), "NetworkPolicy") if d["metadata"]["name"].endswith("-rpc-workers")], "off by default"
