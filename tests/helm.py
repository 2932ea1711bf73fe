"""The real helm CLI (built from the Go module proxy by tests/helm/build.sh) and the chart's renders."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.harness import ROOT

CHART = ROOT / "charts" / "gpu-shard-webhook"
BUILD = ROOT / "tests" / "helm" / "build.sh"
KUBE_VERSION = "1.37.2"  # the control-plane tier's


def helm_binary() -> str | None:
    """The cached helm, built when missing; None without a Go toolchain to build it."""
    if shutil.which("go") is None and not any((Path.home() / ".cache" / "gsw-helm").glob("*/helm")):
        return None
    built = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, check=True, timeout=1800)
    return built.stdout.strip().splitlines()[-1]


def render(helm: str, *values: str, namespace: str = "gpu-shard-system", files: dict[str, Path] | None = None) -> list[dict[str, Any]]:
    argv = [helm, "template", "gpu-shard-webhook", str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
    for value in values:
        argv += ["--set", value]
    for key, path in (files or {}).items():
        argv += ["--set-file", f"{key}={path}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"helm template failed: {done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


# Every GSW_* variable the server reads, from its source, and the ones the chart fixes itself.
SERVER_SOURCES = [ROOT / "webhook" / "cli.py", ROOT / "webhook" / "config.py"]
FIXED_BY_THE_CHART = {
    "GSW_HOST": "the container listens on every address",
    "GSW_PORT": "8443, the container port the Service targets",
    "GSW_CERT_DIR": "where the Secret is mounted",
    "GSW_KUBECONFIG": "in a pod the in-cluster config is used",
    "GSW_IO_TIMEOUT": "an alias of body and write timeouts, which are values",
}


def server_variables() -> set[str]:
    return {name for path in SERVER_SOURCES for name in re.findall(r'"(GSW_[A-Z_]+)"', path.read_text())}
