"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and
kube-controller-manager built from the Go module proxy (controlplane/build.sh),
the way controller-runtime's envtest runs one. No kubelet and no scheduler:
Deployments make ReplicaSets, ReplicaSets make Pods, and the Pods stay Pending,
which is all these tests need -- the pod spec the API server stored.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness import ROOT, background, free_port
from webhook.certs import make_bundle, write_bundle

BUILD_SCRIPT = ROOT / "tests" / "e2e" / "controlplane" / "build.sh"
TOKEN = "gsw-admin-token"


def build_control_plane() -> Path:
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=5400)
    if result.returncode != 0:
        raise RuntimeError(f"control-plane build failed:\n{result.stderr[-6000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


@dataclass
class Cluster:
    binaries: Path
    workdir: Path
    kubeconfig: Path
    server: str

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [str(self.binaries / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def get_json(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def wait_for(self, *args: str, timeout: float = 60) -> dict[str, Any]:
        """The first object `kubectl get ARGS` lists, once there is one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.kubectl("get", *args, "-o", "json", check=False)
            if result.returncode == 0:
                body = json.loads(result.stdout)
                items = body.get("items", [body] if body.get("kind") != "List" else [])
                if items:
                    return items[0]
            time.sleep(0.2)
        raise AssertionError(f"nothing for kubectl get {' '.join(args)} after {timeout}s")


def _wait_ready(cluster: Cluster, apiserver: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if apiserver.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited:\n{log.read_text()[-4000:]}")
        result = cluster.kubectl("get", "--raw", "/readyz", check=False, timeout=10)
        if result.returncode == 0 and result.stdout.strip() == "ok":
            return
        time.sleep(0.5)
    raise TimeoutError(f"kube-apiserver not ready:\n{log.read_text()[-4000:]}")


@contextmanager
def control_plane(binaries: Path, workdir: Path) -> Iterator[Cluster]:
    """etcd + kube-apiserver + kube-controller-manager on loopback, with an admin kubeconfig."""
    workdir.mkdir(parents=True, exist_ok=True)
    pki = workdir / "pki"
    write_bundle(make_bundle(["localhost", "kubernetes", "kubernetes.default.svc"], ["127.0.0.1"]), pki)
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (pki / "sa.key").write_bytes(
        signing.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (pki / "sa.pub").write_bytes(
        signing.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (pki / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n")

    etcd_client, etcd_peer, secure_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{secure_port}"
    kubeconfig = workdir / "admin.kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "e2e",
                        "cluster": {
                            "server": server,
                            "certificate-authority-data": base64.b64encode((pki / "ca.crt").read_bytes()).decode(),
                        },
                    }
                ],
                "users": [{"name": "admin", "user": {"token": TOKEN}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin", "namespace": "default"}}],
                "current-context": "e2e",
            }
        )
    )
    cluster = Cluster(binaries, workdir, kubeconfig, server)
    with ExitStack() as stack:
        stack.enter_context(
            background(
                [
                    str(binaries / "etcd"),
                    "-data-dir",
                    str(workdir / "etcd"),
                    "-client-url",
                    f"http://127.0.0.1:{etcd_client}",
                    "-peer-url",
                    f"http://127.0.0.1:{etcd_peer}",
                ],
                workdir / "etcd.log",
            )
        )
        apiserver_log = workdir / "kube-apiserver.log"
        apiserver = stack.enter_context(
            background(
                [
                    str(binaries / "kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    "--endpoint-reconciler-type=none",  # no Endpoints for a loopback address (as envtest)
                    f"--secure-port={secure_port}",
                    f"--tls-cert-file={pki / 'tls.crt'}",
                    f"--tls-private-key-file={pki / 'tls.key'}",
                    f"--client-ca-file={pki / 'ca.crt'}",
                    f"--token-auth-file={pki / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={pki / 'sa.pub'}",
                    f"--service-account-signing-key-file={pki / 'sa.key'}",
                    "--service-cluster-ip-range=10.96.0.0/24",
                    f"--cert-dir={workdir / 'apiserver-certs'}",
                ],
                apiserver_log,
            )
        )
        _wait_ready(cluster, apiserver, apiserver_log)
        stack.enter_context(
            background(
                [
                    str(binaries / "kube-controller-manager"),
                    f"--kubeconfig={kubeconfig}",
                    f"--authentication-kubeconfig={kubeconfig}",
                    f"--authorization-kubeconfig={kubeconfig}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--leader-elect=false",
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                ],
                workdir / "kube-controller-manager.log",
            )
        )
        cluster.wait_for("serviceaccount", "default", "-n", "default", timeout=120)
        yield cluster


def webhook_overlay(workdir: Path, webhook_url: str, ca_bundle: bytes) -> Path:
    """A kustomize overlay over the shipped base that swaps only clientConfig.service for
    clientConfig.url (and sets caBundle), as envtest does; every other field ships unchanged."""
    copy = workdir / "manifests"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(ROOT / "manifests", copy, ignore=shutil.ignore_patterns("certs", "examples"))
    base = yaml.safe_load_all((copy / "base" / "mutatingwebhookconfiguration.yaml").read_text())
    mutating = next(d for d in base if d)
    validating = next(d for d in yaml.safe_load_all((copy / "base" / "validatingwebhookconfiguration.yaml").read_text()) if d)
    patches = []
    for kind, document in (("MutatingWebhookConfiguration", mutating), ("ValidatingWebhookConfiguration", validating)):
        operations = [
            {
                "op": "replace",
                "path": f"/webhooks/{index}/clientConfig",
                "value": {"url": webhook_url + hook["clientConfig"]["service"]["path"], "caBundle": base64.b64encode(ca_bundle).decode()},
            }
            for index, hook in enumerate(document["webhooks"])
        ]
        patches.append({"target": {"kind": kind, "name": document["metadata"]["name"]}, "patch": yaml.safe_dump(operations)})
    overlay = copy / "overlays" / "e2e"
    overlay.mkdir(parents=True, exist_ok=True)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": ["../../base"], "patches": patches}
        )
    )
    return overlay
