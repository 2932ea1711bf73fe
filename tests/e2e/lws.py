"""The real LeaderWorkerSet controller (kubernetes-sigs/lws, built by controlplane/lws/build.sh)
against the control-plane tier's API server: its CRD, its webhooks (at a loopback URL with
certificates made by this project, instead of its in-cluster certificate rotation), and its
manager with leader election off."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from tests.e2e.cluster import Cluster
from tests.harness import ROOT, background, free_port
from webhook.certs import make_bundle, write_bundle

BUILD_SCRIPT = ROOT / "tests" / "e2e" / "controlplane" / "lws" / "build.sh"


def build_lws() -> Path:
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"LeaderWorkerSet controller build failed:\n{result.stderr[-6000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _webhook_configurations(manifests: Path, url: str, ca: bytes) -> list[dict]:
    """LWS's own webhook configurations, clientConfig.service swapped for a loopback URL (as envtest does)."""
    documents = [d for d in yaml.safe_load_all(manifests.read_text()) if d]
    for document in documents:
        document["metadata"]["name"] = "lws-" + document["metadata"]["name"]
        for hook in document["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": url + path, "caBundle": base64.b64encode(ca).decode()}
    return documents


@contextmanager
def lws_controller(cluster: Cluster, build: Path, workdir: Path) -> Iterator[None]:
    cluster.kubectl("apply", "--server-side", "-f", str(build / "crd.yaml"), timeout=120)
    deadline = time.monotonic() + 60
    while cluster.kubectl("get", "leaderworkersets", "-A", check=False).returncode != 0:  # until the new API is served
        assert time.monotonic() < deadline, "the LeaderWorkerSet CRD was not served within 60 s"
        time.sleep(0.3)
    certs = workdir / "lws-certs"
    write_bundle(make_bundle(["localhost"], ["127.0.0.1"]), certs)
    port = free_port()
    config = workdir / "lws-config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "config.lws.x-k8s.io/v1alpha1",
                "kind": "Configuration",
                "leaderElection": {"leaderElect": False},
                "internalCertManagement": {"enable": False},
                "webhook": {"port": port, "host": "127.0.0.1", "certDir": str(certs)},
                "metrics": {"bindAddress": "0"},
                "health": {"healthProbeBindAddress": f"127.0.0.1:{free_port()}"},
            }
        )
    )
    argv = [str(build / "lws-controller"), f"--config={config}", f"--kubeconfig={cluster.kubeconfig}"]
    configurations = _webhook_configurations(build / "webhooks.yaml", f"https://127.0.0.1:{port}", (certs / "ca.crt").read_bytes())
    with background(argv, workdir / "lws-controller.log"):
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(configurations))
        try:
            yield
        finally:
            # LWS's pod webhook matches every pod: never leave it behind a stopped controller.
            for document in configurations:
                cluster.kubectl("delete", document["kind"].lower(), document["metadata"]["name"], check=False)
