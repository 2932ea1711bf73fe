"""Proof against the real llama.cpp server: every pod the webhook admits starts llama-server
with the arguments it was given, and every argument rule exists because llama-server
itself would refuse the argument.

The llama-server here is a CPU build, so GPU options only warn: an argument error is
a failure, a warning is expected.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import requests
import yaml

from tests.cases import CASES, Case, container, pod
from tests.e2e.conftest import Webhooks
from tests.e2e.llama import NotRunnableHere, http_json, llama_process, local_launch, localise, start_container, wait_healthy
from tests.examples import EXAMPLE_EXPECTATIONS, PRECEDENCE_ANNOTATION, example_files
from tests.expectations import llama_container
from tests.harness import RunningServer, admission_review, decoded_patch, free_port
from webhook.config import Config
from webhook.review import as_pod, review_pod

pytestmark = pytest.mark.e2e


def admit(server: RunningServer, pod_object: dict[str, Any]) -> dict[str, Any]:
    """What the API server would store: /mutate's patch applied, then /validate's verdict."""
    mutated = requests.post(server.url + "/mutate", data=json.dumps(admission_review(pod_object)), verify=server.ca, timeout=10).json()
    admitted = jsonpatch.apply_patch(copy.deepcopy(pod_object), decoded_patch(mutated))
    verdict = requests.post(server.url + "/validate", data=json.dumps(admission_review(admitted)), verify=server.ca, timeout=10).json()
    assert verdict["response"]["allowed"], verdict["response"].get("status")
    return admitted


def serve_and_chat(target: dict[str, Any], binary: Path, model: Path, log_path: Path, config_maps: dict | None = None) -> None:
    try:
        running, launch = start_container(target, binary, model, log_path, config_maps)
    except NotRunnableHere as reason:
        pytest.skip(f"not runnable here: {reason}")
    with running as server:
        healthy = wait_healthy(server, model=launch.router_model)
        log = server.log()
        assert "invalid argument" not in log and "error: " not in log, log[-3000:]
        if not healthy and "LLAMA_SPLIT_MODE_TENSOR needs >= 1 devices" in log:
            # The argv parsed; tensor parallelism needs GPU devices, which a CPU build has none of.
            pytest.skip("split mode tensor needs GPU devices to load a model: proven on a GPU build only")
        assert healthy, f"llama-server did not become healthy:\n{log[-3000:]}"
        request: dict[str, Any] = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8}
        if launch.router_model:
            request["model"] = launch.router_model
        status, answer = http_json(server.url + "/v1/chat/completions", request)
        assert status == 200, server.log()[-2000:]
        assert isinstance(answer["choices"][0]["message"]["content"], str)
        assert answer["usage"]["completion_tokens"] >= 1


RUNNABLE = [c for c in CASES if not c.expect.denied]


@pytest.mark.parametrize("case", RUNNABLE, ids=lambda c: c.name)
def test_admitted_scenario_starts_the_real_llama_server(
    case: Case, webhooks: Webhooks, llama_binary: Path, tiny_model: Path, tmp_path: Path
) -> None:
    if case.objects:  # DRA claims: the server tier has no API server to read them from; admitted in-process
        review = review_pod(case.fresh_pod(), case.config, case.cluster())
        assert review.allowed, review.violations
        admitted = review.pod
    else:
        admitted = admit(webhooks.for_config(case.config), case.fresh_pod())
    serve_and_chat(llama_container(admitted, case), llama_binary, tiny_model, tmp_path / "llama.log")


def example_pods() -> list[tuple[str, str, Config]]:
    rows = []
    for path in example_files():
        for expect in EXAMPLE_EXPECTATIONS[path.name]:
            if not expect.denied:
                rows.append((path.name, expect.name, Config()))
    rows.append(("precedence-4c-both.yaml", PRECEDENCE_ANNOTATION.name, Config(precedence="annotation")))
    return rows


@pytest.mark.parametrize(("filename", "name", "config"), example_pods(), ids=lambda v: v if isinstance(v, str) else "")
def test_example_starts_the_real_llama_server(
    filename: str, name: str, config: Config, webhooks: Webhooks, llama_binary: Path, tiny_model: Path, tmp_path: Path
) -> None:
    documents = [d for d in yaml.safe_load_all((example_files()[0].parent / filename).read_text()) if d]
    workload = next(d for d in documents if d["metadata"]["name"] == name and d["kind"] != "Service")
    template_pod = as_pod(workload, workload["kind"], "default")
    assert template_pod is not None
    admitted = admit(webhooks.for_config(config), template_pod)
    serve_and_chat(admitted["spec"]["containers"][0], llama_binary, tiny_model, tmp_path / "llama.log")


REFUSED_BY_BOTH = [
    (["-ts", ",".join(["1"] * 16)], 16, "tensor-split-too-long"),
    (["--tensor-split=1,1"], 2, "inline-value"),
    (["--n-gpu-layers=99"], 2, "inline-value"),
    (["-sm", "diagonal"], 2, "split-mode-unknown"),
    (["-ts", "a,b"], 2, "tensor-split-invalid"),
    (["--split-mode"], 2, "missing-value"),
]


@pytest.mark.parametrize(("extra", "gpus", "code"), REFUSED_BY_BOTH, ids=lambda v: v if isinstance(v, str) else "")
def test_rules_track_the_real_parser(extra: list[str], gpus: int, code: str, llama_binary: Path, tiny_model: Path, tmp_path: Path) -> None:
    candidate = pod(container(args=["-m", "/models/m.gguf", *extra], gpus=str(gpus)))
    review = review_pod(candidate, Config(max_gpus_per_node=16))
    assert code in {v.code for v in review.violations}

    port = free_port()
    options = localise(["-m", "/models/m.gguf"], tiny_model, port) + extra
    with llama_process([str(llama_binary), *options], {}, port, tmp_path / "refused.log") as server:
        server.process.wait(timeout=60)
        assert server.process.returncode != 0, f"llama-server accepted {extra}:\n{server.log()[-2000:]}"


def test_local_launch_reads_env_and_shell_scripts(tmp_path: Path) -> None:
    target = {
        "name": "llama",
        "command": ["sh", "-c", "exec /app/llama-server -m /x.gguf --port 80 -c $(CTX) && true"],
        "env": [{"name": "LLAMA_ARG_N_GPU_LAYERS", "value": "99"}, {"name": "CTX", "value": "512"}],
    }
    launch = local_launch(target, Path("/bin/llama-server"), Path("/tiny.gguf"), 9999, tmp_path)
    assert launch.argv == ["/bin/llama-server", "-m", "/tiny.gguf", "--port", "9999", "-c", "512", "--host", "127.0.0.1"]
    assert launch.env == {"LLAMA_ARG_N_GPU_LAYERS": "99", "CTX": "512"} and launch.router_model is None


def test_local_launch_of_a_router_writes_a_preset_for_the_tiny_model(tmp_path: Path) -> None:
    target = {"name": "llama", "image": "ghcr.io/ggml-org/llama.cpp:server-cuda", "args": ["--models-preset", "/config/presets.ini"]}
    launch = local_launch(target, Path("/bin/llama-server"), Path("/tiny.gguf"), 9999, tmp_path)
    assert launch.argv[1:3] == ["--models-preset", str(tmp_path / "presets.ini")] and launch.router_model == "tiny"
    assert "model = /tiny.gguf" in (tmp_path / "presets.ini").read_text()
