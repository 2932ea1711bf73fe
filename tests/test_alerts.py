"""The alerts (manifests/monitoring/prometheusrule.yaml, rendered from the chart) query what the
server really exports: a running server with its watches is scraped, and every metric and label
an alert expression names must be in that scrape."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.cases import container, pod
from tests.fake_apiserver import FakeCluster, gpu_node
from tests.harness import ROOT, RunningServer, admission_review, eventually, running_server

pytestmark = pytest.mark.server

RULES = ROOT / "manifests" / "monitoring" / "prometheusrule.yaml"
# Added by Prometheus when it scrapes a Service's endpoints; never in the exposition itself.
TARGET_LABELS = {"namespace", "job", "pod", "instance", "service", "endpoint", "container"}
SELECTOR = re.compile(r"\b(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<matchers>[^}]*)\}")
NAME = re.compile(r"\b(gpu_shard_[a-z0-9_]+)")


def alert_rules() -> list[dict[str, Any]]:
    (rule_object,) = [d for d in yaml.safe_load_all(RULES.read_text()) if d]
    return [rule for group in rule_object["spec"]["groups"] for rule in group["rules"]]


def exposed(text: str) -> dict[str, set[str]]:
    """sample name -> the label names it carries in the exposition."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{")
        labels = set(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', rest.split("}")[0])) if rest else set()
        found.setdefault(name.split(" ")[0], set()).update(labels)
    return found


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    tmp = tmp_path_factory.mktemp("alerts")
    cluster = FakeCluster().start()
    cluster.add(gpu_node("pair", 2))
    try:
        with running_server(tmp, ["--kubeconfig", str(cluster.kubeconfig(tmp))]) as server:
            exercise(server)
            yield eventually_exposed(server)
    finally:
        cluster.close()


def exercise(server: RunningServer) -> None:
    """Every kind of admission the alerts count: patched, denied, a claim not yet known, a malformed body."""
    session = server.session()
    session.post(server.url + "/mutate", data=json.dumps(admission_review(pod(container(args=["-m", "/m.gguf"], gpus="2")))), timeout=5)
    claims = [{"name": "gpu", "resourceClaimTemplateName": "absent"}]
    claimed = pod(container(args=["-m", "/m.gguf"], claims=[{"name": "gpu"}]), resource_claims=claims)
    session.post(server.url + "/mutate", data=json.dumps(admission_review(claimed)), timeout=5)
    denied = pod(container(args=["-m", "/m.gguf", "-ts", "1,1,1"], gpus="2"))
    session.post(server.url + "/validate", data=json.dumps(admission_review(denied)), timeout=5)
    session.post(server.url + "/validate", data=b"not json", timeout=5)
    for _ in range(4):  # readiness on both workers
        session.get(server.url + "/readyz", timeout=5)
        session.close()


def eventually_exposed(server: RunningServer) -> dict[str, set[str]]:
    wanted = {"gpu_shard_watch_synced", "gpu_shard_certificate_expiry_timestamp_seconds", "gpu_shard_ready"}
    wanted |= {"gpu_shard_claim_lookups_total"}
    found: dict[str, set[str]] = {}

    def complete() -> bool:
        nonlocal found
        found = exposed(requests.get(server.url + "/metrics", verify=server.ca, timeout=5).text)
        return wanted <= set(found)

    eventually(complete, timeout=15)
    time.sleep(1.1)  # one more flush of every worker's counts
    return exposed(requests.get(server.url + "/metrics", verify=server.ca, timeout=5).text)


def test_every_alert_names_metrics_and_labels_the_server_exports(scraped: dict[str, set[str]]) -> None:
    rules = alert_rules()
    assert rules, "the rendered PrometheusRule has alerts"
    for rule in rules:
        expression = rule["expr"]
        names = set(NAME.findall(expression))
        assert names or "up{" in expression, rule["alert"]
        for name in names:
            assert name in scraped, f"{rule['alert']}: {name} is not exported"
        for selector in SELECTOR.finditer(expression):
            if not selector["name"].startswith("gpu_shard_"):
                continue
            labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector["matchers"]))
            unknown = labels - scraped[selector["name"]] - TARGET_LABELS
            assert not unknown, f"{rule['alert']}: {selector['name']} has no label {unknown}"


def test_every_alert_says_what_to_do(scraped: dict[str, set[str]]) -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_the_down_alert_watches_the_scrape_job_the_service_monitor_makes(scraped: dict[str, set[str]]) -> None:
    """A ServiceMonitor's targets get job=<Service name>: the alert must use that name."""
    down = next(rule for rule in alert_rules() if rule["alert"] == "GpuShardWebhookDown")
    service = yaml.safe_load((ROOT / "manifests" / "base" / "service.yaml").read_text())
    assert f'job="{service["metadata"]["name"]}"' in down["expr"]


def test_the_certificate_expiry_the_server_exports_is_the_served_certificates(tmp_path: Path) -> None:
    from cryptography import x509

    with running_server(tmp_path) as server:
        served = x509.load_pem_x509_certificate((server.cert_dir / "tls.crt").read_bytes()).not_valid_after_utc.timestamp()

        def exported() -> float | None:
            text = requests.get(server.url + "/metrics", verify=server.ca, timeout=5).text
            expiry = "gpu_shard_certificate_expiry_timestamp_seconds"
            values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(expiry)]
            return min(values) if values else None

        eventually(lambda: exported() is not None, timeout=10)
        assert exported() == pytest.approx(served), "the worst live worker's value: never the master's initial 0"
        ready = requests.get(server.url + "/readyz", verify=server.ca, timeout=5)
        text = requests.get(server.url + "/metrics", verify=server.ca, timeout=5).text
        readiness = [line for line in text.splitlines() if line.startswith("gpu_shard_ready")]
        assert ready.status_code == 200 and readiness == ["gpu_shard_ready 1.0"], readiness
