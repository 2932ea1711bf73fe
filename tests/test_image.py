"""The image, built from the Dockerfile with podman and run as the Deployment runs it.

Built without a registry (``tests/image.py``), then started as a numeric non-root user with a
read-only root filesystem, every capability dropped, no privilege escalation, ``/tmp`` an empty
tmpfs (the Deployment's emptyDir) and the certificates mounted read-only where the Secret goes,
with the Secret volume's default file mode. The watches run against a fake API server, so the
container's ``kubernetes`` client is exercised too. Figures (image size, start-up, stop) are
printed, never asserted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import jsonpatch
import pytest
import requests

from tests.cases import by_name
from tests.fake_apiserver import FakeCluster, gpu_node
from tests.harness import admission_review, decoded_patch, eventually, free_port, make_certs
from tests.image import IMAGE, build_image, missing_tools, podman, run_flags

pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(bool(missing_tools()), reason=f"needs {', '.join(missing_tools())} (apt-get install podman mmdebstrap)"),
]

CERT_DIR = "/etc/gpu-shard-webhook/certs"


@pytest.fixture(scope="module")
def built(figures: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    started = time.monotonic()
    build_image()
    inspected = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    size_mb = round(inspected["Size"] / 1e6, 1)
    layers = len(inspected["RootFS"]["Layers"])
    figures.append(("image", {"size_mb": size_mb, "build_s": round(time.monotonic() - started, 1), "layers": layers}))
    return inspected


def test_the_image_runs_a_numeric_non_root_user_and_serve(built: dict[str, Any]) -> None:
    config = built["Config"]
    user, _, group = config["User"].partition(":")
    assert user.isdigit() and int(user) != 0 and group.isdigit()
    assert config["Entrypoint"] == ["gpu-shard-webhook", "serve"]
    assert "8443/tcp" in config.get("ExposedPorts", {})


def test_the_image_holds_no_compiler_pip_or_caches(built: dict[str, Any]) -> None:
    probe = podman(
        "run", "--rm", *run_flags(), "--entrypoint", "sh", IMAGE, "-c",
        "for tool in gcc cc g++ make pip pip3 apt-get; do command -v $tool; done; "
        "find /root/.cache /var/lib/apt/lists /var/cache/apt -mindepth 1 -type f -not -name lock 2>/dev/null; "
        "ls /opt/gpu-shard-webhook/lib/python3.11/site-packages | grep -iE '^(pip|setuptools|aiohttp)'; true",
        check=False,
    )  # fmt: skip
    if probe.returncode != 0:
        pytest.fail(f"the container did not start: {probe.stderr.strip()}")
    found = probe.stdout.split()
    assert found == ["/usr/bin/apt-get"], found  # apt-get comes with Debian's base; nothing else does


@pytest.fixture(scope="module")
def cluster() -> Iterator[FakeCluster]:
    fake = FakeCluster().start()
    fake.add(gpu_node("pair-a", 2))
    fake.add(gpu_node("pair-b", 2))
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def container(built: dict[str, Any], cluster: FakeCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("container")
    certs = make_certs(workdir / "made")
    secret = workdir / "secret"  # as the kubelet projects a Secret: root-owned files, mode 0644
    secret.mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        shutil.copy(certs / name, secret / name)
        (secret / name).chmod(0o644)
    kubeconfig = cluster.kubeconfig(workdir)
    kubeconfig.chmod(0o644)
    port = free_port()
    name = f"gsw-test-{port}"
    started = time.monotonic()
    podman(
        "run", "-d", "--name", name, *run_flags(),
        "--network", "host", "--read-only", "--tmpfs", "/tmp:rw,size=64m", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--user", "10001:10001",
        "-v", f"{secret}:{CERT_DIR}:ro", "-v", f"{kubeconfig}:/etc/kube/config:ro",
        "-e", "PROMETHEUS_MULTIPROC_DIR=/tmp/metrics",
        IMAGE, "--cert-dir", CERT_DIR, "--port", str(port), "--host", "127.0.0.1", "--kubeconfig", "/etc/kube/config",
        check=False,
    )  # fmt: skip
    url = f"https://localhost:{port}"
    ca = str(certs / "ca.crt")

    def ready() -> bool:
        state = podman("inspect", "-f", "{{.State.Status}}", name, check=False).stdout.strip()
        if state not in ("running", "created", "configured"):
            logs = podman("logs", name, check=False)
            raise AssertionError(f"the container is {state or 'gone'}: {logs.stdout[-2000:]}{logs.stderr[-2000:]}")
        try:
            return requests.get(url + "/readyz", verify=ca, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    try:
        ready_after = eventually(ready, timeout=60, poll=0.2)
        yield {"name": name, "url": url, "ca": ca, "ready_after_s": round(time.monotonic() - started, 2), "waited": ready_after}
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def test_healthz_and_readyz_over_tls_with_the_mounted_certificate(container: dict[str, Any]) -> None:
    assert requests.get(container["url"] + "/healthz", verify=container["ca"], timeout=5).text.strip() == "ok"
    ready = requests.get(container["url"] + "/readyz", verify=container["ca"], timeout=5)
    assert ready.status_code == 200 and "serving certificate sha256:" in ready.text


def test_a_two_gpu_pod_is_sharded_by_the_container(container: dict[str, Any]) -> None:
    pod = by_name("plan test 1: 2-GPU Llama-2-13B Deployment pod").fresh_pod()
    answer = requests.post(container["url"] + "/mutate", data=json.dumps(admission_review(pod)), verify=container["ca"], timeout=5)
    assert answer.status_code == 200
    admitted = jsonpatch.apply_patch(pod, decoded_patch(answer.json()))
    args = admitted["spec"]["containers"][0]["args"]
    assert args[-6:] == ["--n-gpu-layers", "999", "--split-mode", "layer", "--tensor-split", "1,1"], args


def test_the_containers_watches_read_the_cluster(container: dict[str, Any]) -> None:
    """A pod asking for more GPUs than the fake cluster's nodes have is denied: the Node watch ran in the container."""
    review = admission_review(by_name("plan test 3: 4-GPU 70B").fresh_pod())

    def denied_for_capacity() -> bool:
        answer = requests.post(container["url"] + "/validate", data=json.dumps(review), verify=container["ca"], timeout=5).json()
        return not answer["response"]["allowed"] and "exceeds-cluster-capacity" in answer["response"]["status"]["message"]

    eventually(denied_for_capacity, timeout=30)


def test_sigterm_stops_the_container_inside_the_grace_period(container: dict[str, Any], figures: list[tuple[str, dict[str, Any]]]) -> None:
    name = container["name"]
    stopping = time.monotonic()
    podman("kill", "--signal", "TERM", name)
    exit_code = subprocess.run(["podman", "wait", name], capture_output=True, text=True, timeout=60).stdout.strip()
    stopped_s = time.monotonic() - stopping
    logs = podman("logs", name, check=False)
    figures.append(("container", {"ready_after_start_s": container["ready_after_s"], "stopped_after_sigterm_s": round(stopped_s, 2)}))
    assert exit_code == "0", logs.stderr[-2000:]
    assert stopped_s < 25, "inside gunicorn's graceful timeout (the pod's grace period is 35 s)"
