"""The offline preview (``gpu-shard-webhook preview``) and the CLI's configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.cases import CASES, by_name
from tests.harness import ROOT
from webhook.config import SETTINGS, Config, config_from


def run_preview(tmp_path: Path, documents: list[dict], *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "in.yaml"
    manifest.write_text(yaml.safe_dump_all(documents))
    return subprocess.run(
        [sys.executable, "-m", "webhook", "preview", "-f", str(manifest), *flags], cwd=ROOT, capture_output=True, text=True, env=env
    )


def test_preview_prints_the_admitted_pod_and_exits_0(tmp_path: Path) -> None:
    result = run_preview(tmp_path, [by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod()])
    assert result.returncode == 0, result.stderr
    (admitted,) = [d for d in yaml.safe_load_all(result.stdout) if d]
    args = admitted["spec"]["containers"][0]["args"]
    assert args[-6:] == ["--n-gpu-layers", "999", "--split-mode", "layer", "--tensor-split", "1,1"]
    assert "1 admitted, 0 denied" in result.stderr


def test_preview_of_a_denied_object_exits_1_with_the_violations(tmp_path: Path) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "llama"}, "spec": {"ports": [{"port": 8080}]}}
    documents = [by_name("user's -ts with 3 values on 2 GPUs is refused").fresh_pod(), service]
    result = run_preview(tmp_path, documents)
    assert result.returncode == 1
    assert "DENIED" in result.stdout and "[tensor-split-arity]" in result.stdout
    assert "Service llama: carries no pod, passed through" in result.stdout
    assert "0 admitted, 1 denied, 1 passed through" in result.stderr


def test_preview_output_yaml_prints_the_objects_as_stored(tmp_path: Path) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "llama"}, "spec": {"ports": [{"port": 8080}]}}
    sharded = by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod()
    denied = by_name("user's -ts with 3 values on 2 GPUs is refused").fresh_pod()
    denied["metadata"]["generateName"] = "broken-"
    result = run_preview(tmp_path, [service, sharded, denied], "-o", "yaml")
    assert result.returncode == 1
    stored = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [d["kind"] for d in stored] == ["Service", "Pod"], "the denied pod is not stored"
    assert stored[0] == service
    assert stored[1]["spec"]["containers"][0]["args"][-2:] == ["--tensor-split", "1,1"]
    assert "gpu-shard.io/status" in stored[1]["metadata"]["annotations"]
    assert "[tensor-split-arity]" in result.stderr and "1 admitted, 1 denied, 1 passed through" in result.stderr


def test_preview_output_json_of_a_workload_is_the_workload_unchanged(tmp_path: Path) -> None:
    import json

    documents = [d for d in yaml.safe_load_all((ROOT / "manifests" / "examples" / "llama-13b-2gpu.yaml").read_text()) if d]
    result = run_preview(tmp_path, documents, "-o", "json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["kind"] == "List" and listing["items"] == documents, "templates are validated, never mutated"


def test_preview_reads_stdin_and_lists(tmp_path: Path) -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [by_name("plan test 3: 4-GPU 70B").fresh_pod()]}
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "preview", "-f", "-"], input=yaml.safe_dump(listing), cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "--tensor-split" in result.stdout and "1,1,1,1" in result.stdout


def test_preview_takes_config_flags_and_env(tmp_path: Path) -> None:
    case = by_name("plan test 4c: annotation 2, limit 1, default precedence rejects")
    assert run_preview(tmp_path, [case.fresh_pod()]).returncode == 1
    assert run_preview(tmp_path, [case.fresh_pod()], "--precedence", "annotation").returncode == 0
    import os

    assert run_preview(tmp_path, [case.fresh_pod()], env={**os.environ, "GSW_PRECEDENCE": "annotation"}).returncode == 0


def test_preview_of_unreadable_yaml_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    result = subprocess.run([sys.executable, "-m", "webhook", "preview", "-f", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and "cannot read" in result.stderr


def test_every_setting_reads_its_env_variable() -> None:
    environ = {
        "GSW_PREFIX": "shard.example.com",
        "GSW_GPU_RESOURCES": "amd.com/gpu, nvidia.com/gpu",
        "GSW_GPU_DEVICE_CLASSES": "gpu.example.com",
        "GSW_CUDA_DRIVER_LABEL": "a/driver",
        "GSW_DEFAULT_GPU_LAYERS": "all",
        "GSW_MAX_GPUS_PER_NODE": "16",
        "GSW_PRECEDENCE": "annotation",
        "GSW_INJECT_AFFINITY": "false",
        "GSW_AFFINITY_RESOURCES": "amd.com/gpu",
        "GSW_GPU_COUNT_LABEL": "a/count",
        "GSW_SHARING_STRATEGY_LABEL": "a/sharing",
        "GSW_SHARED_STRATEGIES": "mps",
        "GSW_PRODUCT_LABEL": "a/product",
        "GSW_BODY_LIMIT": "1024",
    }
    assert {s.env for s in SETTINGS} == set(environ)
    config = config_from(environ)
    assert config == Config(
        prefix="shard.example.com",
        gpu_resources=("amd.com/gpu", "nvidia.com/gpu"),
        gpu_device_classes=("gpu.example.com",),
        cuda_driver_label="a/driver",
        default_gpu_layers="all",
        max_gpus_per_node=16,
        precedence="annotation",
        inject_affinity=False,
        affinity_resources=("amd.com/gpu",),
        gpu_count_label="a/count",
        sharing_strategy_label="a/sharing",
        shared_strategies=("mps",),
        product_label="a/product",
        body_limit=1024,
    )


@pytest.mark.parametrize(
    ("name", "value"), [("GSW_PRECEDENCE", "sometimes"), ("GSW_MAX_GPUS_PER_NODE", "0"), ("GSW_INJECT_AFFINITY", "maybe")]
)
def test_bad_settings_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        config_from({name: value})


def test_a_custom_prefix_changes_label_and_annotations() -> None:
    config = Config(prefix="shard.example.com")
    case = by_name("plan test 4a: annotation says 2, no limit")
    pod = case.fresh_pod()
    pod["metadata"]["labels"] = {"shard.example.com/enabled": "true"}
    pod["metadata"]["annotations"] = {"shard.example.com/gpu-count": "2"}
    from webhook.review import review_pod

    review = review_pod(pod, config)
    assert review.plan is not None and review.plan.gpus.count == 2
    assert "shard.example.com/status" in review.pod["metadata"]["annotations"]
    assert review_pod(case.fresh_pod(), config).patch == [], "the default label no longer opts in"


def test_readme_documents_every_setting_and_violation_code() -> None:
    readme = (ROOT / "README.md").read_text()
    from webhook.violation import CODES

    for setting in SETTINGS:
        assert setting.env in readme and setting.flag in readme, setting.env
    for code in CODES:
        assert f"`{code}`" in readme, code


def test_every_emitted_code_is_catalogued() -> None:
    from webhook.review import review_pod
    from webhook.violation import CODES

    for case in CASES:
        for violation in review_pod(case.fresh_pod(), case.config).violations:
            assert violation.code in CODES
