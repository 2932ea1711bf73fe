"""manifests/monitoring: the dashboard loads and every webhook metric it queries exists."""

from __future__ import annotations

import json

import kubernetes_validate
import yaml

from tests.cases import by_name
from tests.harness import ROOT, admission_review
from tests.kubectl import kustomize
from tests.monitoring import DASHBOARD, dashboard_metrics, exposed_names
from webhook.config import Config
from webhook.server import create_app


def test_dashboard_is_valid_json_with_queries() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(target["expr"] for target in panel["targets"])
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for topic in ("Admissions", "latency", "Rejections", "GPU count", "tokens/s"):
        assert topic in titles


def test_every_webhook_metric_the_dashboard_queries_is_exposed() -> None:
    client = create_app(Config()).test_client()
    client.post("/mutate", json=admission_review(by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod()))
    client.post("/validate", json=admission_review(by_name("user's -ts with 3 values on 2 GPUs is refused").fresh_pod()))
    exposed = exposed_names(client.get("/metrics").get_data(as_text=True))
    wanted = {name for name in dashboard_metrics() if name.startswith("gpu_shard_")}
    assert wanted and wanted <= exposed, wanted - exposed


def test_monitoring_kustomization_builds() -> None:
    docs = [d for d in yaml.safe_load_all(kustomize(ROOT / "manifests" / "monitoring")) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", "PrometheusRule", "ServiceMonitor", "ServiceMonitor"]
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    assert json.loads(config_map["data"]["grafana-dashboard.json"]) == json.loads(DASHBOARD.read_text())
    kubernetes_validate.validate(config_map, "1.30.0", strict=True)
    webhook_monitor = next(d for d in docs if d["kind"] == "ServiceMonitor" and d["metadata"]["name"] == "gpu-shard-webhook")
    assert webhook_monitor["spec"]["endpoints"][0]["path"] == "/metrics"
