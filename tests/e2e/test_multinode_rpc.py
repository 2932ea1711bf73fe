"""Proof with real processes: a LeaderWorkerSet group admitted by the real webhook serves one model
from a real llama-server whose layers live on real RPC servers (llama.cpp's ggml-rpc-server).

Each worker runs the exact command the webhook wrote into the worker template (its port
moved off 50052 so that several share this machine's loopback), and the leader the exact
argv the kubelet would build from the leader template, with LWS's DNS names swapped for
those loopback addresses: the one swap, like the model path in the other e2e tests.
"""

from __future__ import annotations

import copy
import json
import socket
import time
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import requests

from tests import kubelet
from tests.cases import LEADER_ARGS, group_template, leader, lws, worker
from tests.e2e.conftest import Webhooks
from tests.e2e.llama import http_json, llama_process, localise, wait_healthy
from tests.harness import RunningServer, background, decoded_patch, free_port
from webhook.config import Config
from webhook.multinode import RPC_PORT

pytestmark = pytest.mark.e2e


def review_body(obj: dict[str, Any]) -> str:
    request = {
        "uid": "e2e-lws",
        "kind": {"group": "leaderworkerset.x-k8s.io", "version": "v1", "kind": "LeaderWorkerSet"},
        "resource": {"group": "leaderworkerset.x-k8s.io", "version": "v1", "resource": "leaderworkersets"},
        "operation": "CREATE",
        "namespace": "ai",
        "object": obj,
        "dryRun": False,
    }
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def admit_group(server: RunningServer, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    mutated = requests.post(server.url + "/mutate", data=review_body(obj), verify=server.ca, timeout=10).json()
    admitted = jsonpatch.apply_patch(copy.deepcopy(obj), decoded_patch(mutated))
    verdict = requests.post(server.url + "/validate", data=review_body(admitted), verify=server.ca, timeout=10).json()
    assert verdict["response"]["allowed"], verdict["response"].get("status")
    return admitted, mutated["response"].get("warnings", [])


def wait_listening(port: int, process: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the RPC server exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


@pytest.mark.parametrize("workers", [2, 3])
def test_a_group_serves_one_model_over_rpc_workers(
    workers: int, webhooks: Webhooks, llama_build: Path, tiny_model: Path, tmp_path: Path
) -> None:
    rpc_server = llama_build / "bin" / "ggml-rpc-server"
    if not rpc_server.exists():
        pytest.fail(f"{rpc_server} is missing: tests/e2e/build_llama_server.sh builds it with -DGGML_RPC=ON")
    server = webhooks.for_config(Config())
    obj = lws(workers + 1, group_template(leader(args=list(LEADER_ARGS))), group_template(worker(gpus="1")))
    admitted, warnings = admit_group(server, obj)
    assert any(f"{workers} devices, RPC first" in w for w in warnings), warnings
    group = admitted["spec"]["leaderWorkerTemplate"]
    leader_container = group["leaderTemplate"]["spec"]["containers"][0]
    worker_container = group["workerTemplate"]["spec"]["containers"][0]

    ports = [free_port() for _ in range(workers)]
    path = f"{llama_build / 'bin'}:/usr/bin:/bin"
    with_workers = []
    for index, port in enumerate(ports, start=1):
        proc = kubelet.process(worker_container, fields={"status.podIP": "127.0.0.1", "metadata.name": f"llama-70b-0-{index}"})
        shell, flag, script = proc.argv
        assert (shell, flag) == ("sh", "-c") and f"-p {RPC_PORT} -c" in script
        env = {"PATH": path, **{k: str(v) for k, v in proc.env.items()}}
        env["LLAMA_CACHE"] = str(tmp_path / f"cache-{index}")  # the emptyDir
        with_workers.append(
            (background(["sh", "-c", script.replace(f"-p {RPC_PORT}", f"-p {port}")], tmp_path / f"rpc-{index}.log", env), port)
        )

    fields = {"metadata.name": "llama-70b-0", "metadata.namespace": "ai"}
    leader_process = kubelet.process(leader_container, fields=fields)
    options = [str(o) for o in leader_process.server_options or []]
    rpc = options[options.index("--rpc") + 1]
    assert rpc == ",".join(f"llama-70b-0-{i}.llama-70b.ai:{RPC_PORT}" for i in range(1, workers + 1)), "LWS's DNS names of group 0"
    options[options.index("--rpc") + 1] = ",".join(f"127.0.0.1:{port}" for port in ports)
    assert options[options.index("--tensor-split") + 1] == ",".join(["1"] * workers)

    started = [context.__enter__() for context, _ in with_workers]
    try:
        for process, (_, port) in zip(started, with_workers, strict=True):
            wait_listening(port, process)
        http_port = free_port()
        # -lv 4: the model loader's lines, which say on which device each buffer lives
        argv = [str(llama_build / "bin" / "llama-server"), *localise(options, tiny_model, http_port), "-lv", "4"]
        with llama_process(argv, {}, http_port, tmp_path / "leader.log") as running:
            assert wait_healthy(running, timeout=120), running.log()[-4000:]
            status, answer = http_json(
                running.url + "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
            )
            assert status == 200 and isinstance(answer["choices"][0]["message"]["content"], str)
            log = running.log()
        # llama.cpp names each RPC server's device RPC0[host:port]; every worker holds part of the weights
        for port in ports:
            assert any(f"RPC0[127.0.0.1:{port}] model buffer size" in line for line in log.splitlines()), log[-4000:]
        assert "offloaded" in log and "layers to GPU" in log
    finally:
        for context, _ in reversed(with_workers):
            context.__exit__(None, None, None)
