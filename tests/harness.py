"""Start the real webhook (``gpu-shard-webhook serve``: gunicorn over TLS) for tests and benchmarks."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_certs(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "webhook", "certs", "--out", str(directory)], check=True, cwd=ROOT, capture_output=True)
    return directory


@dataclass
class RunningServer:
    process: subprocess.Popen[bytes]
    port: int
    cert_dir: Path
    log_path: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.cert_dir / "ca.crt")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def session(self) -> requests.Session:
        return verifying_session(self.ca)

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]


def eventually(condition: Callable[[], bool], timeout: float = 30.0, poll: float = 0.02) -> float:
    """Seconds until ``condition()`` held; AssertionError after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(poll)
    raise AssertionError(f"condition not reached in {timeout} s")


def verifying_session(ca: str) -> requests.Session:
    """A keep-alive session that trusts only ``ca``.

    trust_env is off: requests lets REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE from the
    environment override a session's ``verify``.
    """
    session = requests.Session()
    session.trust_env = False
    session.verify = ca
    return session


def wait_ready(url: str, ca: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if requests.get(f"{url}/readyz", verify=ca, timeout=2).status_code == 200:
                return
        except OSError:  # requests' errors, or the CA file not written yet
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


@contextmanager
def background(
    argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None, grace: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """A child in its own process group, output to ``log_path``; SIGTERM then SIGKILL on exit."""
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            list(argv), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env or dict(os.environ), start_new_session=True
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


@contextmanager
def running_server(
    tmp: Path, extra_args: Sequence[str] = (), env: dict[str, str] | None = None, cert_dir: Path | None = None, port: int | None = None
) -> Iterator[RunningServer]:
    cert_dir = cert_dir or make_certs(tmp / "certs")
    port = port or free_port()
    log_path = tmp / f"server-{port}.log"
    # Cluster checks only where a test brings its own (fake) API server: never a real ~/.kube/config.
    checks = [] if "--kubeconfig" in extra_args else ["--cluster-checks", "false"]
    serve = ["serve", "--host", "127.0.0.1", "--port", str(port), "--cert-dir", str(cert_dir), *checks, *extra_args]
    command = [sys.executable, "-m", "webhook", *serve]
    with background(command, log_path, {**os.environ, **(env or {})}) as process:
        server = RunningServer(process, port, cert_dir, log_path)
        wait_ready(server.url, server.ca, process)
        yield server


def admission_review(
    obj: dict[str, Any], kind: str = "Pod", operation: str = "CREATE", namespace: str = "default", **extra: Any
) -> dict[str, Any]:
    group, version = {"Pod": ("", "v1"), "CronJob": ("batch", "v1"), "Job": ("batch", "v1")}.get(kind, ("apps", "v1"))
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": kind.lower() + "s"},
        "operation": operation,
        "namespace": namespace,
        "object": obj,
        "userInfo": {"username": "kubernetes-admin"},
        "dryRun": False,
        **extra,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def decoded_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    body = response["response"]
    if "patch" not in body:
        return []
    assert body["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(body["patch"]))
