"""Build the project's image with podman, without a registry, and run it the way the Deployment does.

No image registry is reachable here, so the Dockerfile's base (``debian:bookworm-slim``) is made
from Debian's packages with mmdebstrap -- the same minbase, merged /usr and path exclusions as
the official slim image -- cached as a tarball under ``~/.cache/gsw-image/`` (keyed by the
options) and imported under the name the Dockerfile's ``FROM`` uses, so ``podman build`` never
pulls. RUN steps use ``--isolation=chroot``: it needs no OCI runtime, so the build works where
containers cannot be started.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from tests.harness import ROOT

BASE = "docker.io/library/debian:bookworm-slim"
IMAGE = "localhost/gpu-shard-webhook:test"
CACHE = Path.home() / ".cache" / "gsw-image"
MMDEBSTRAP = [
    "mmdebstrap",
    "--variant=minbase",
    "--mode=root",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/info/*",
    '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/*',
    "--format=tar",
    "bookworm",
]
MIRROR = os.environ.get("GSW_DEBIAN_MIRROR", "http://deb.debian.org/debian")
TOOLS = ("podman", "mmdebstrap")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def podman(*args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=timeout)


def ensure_base() -> str:
    """The base image, imported from a cached mmdebstrap tarball (built when missing)."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return BASE
    key = hashlib.sha256("\0".join([*MMDEBSTRAP, MIRROR]).encode()).hexdigest()[:12]
    tarball = CACHE / f"debian-bookworm-slim-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial")
        subprocess.run([*MMDEBSTRAP, str(partial), MIRROR], check=True, capture_output=True, timeout=1800)
        partial.rename(tarball)
    podman("import", "-q", str(tarball), BASE)
    return BASE


def pip_certificate() -> str | None:
    """The CA bundle the host's pip is configured with, when it is not pip's own (a TLS-intercepting proxy)."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name) and Path(os.environ[name]).exists():
            return os.environ[name]
    found = subprocess.run(["python3", "-m", "pip", "config", "get", "global.cert"], capture_output=True, text=True, check=False)
    path = found.stdout.strip()
    return path if found.returncode == 0 and path and Path(path).exists() else None


def build_image() -> subprocess.CompletedProcess[str]:
    ensure_base()
    args = ["build", "--pull=never", "--isolation=chroot", "-t", IMAGE]
    certificate = pip_certificate()
    if certificate:
        args += ["-v", f"{certificate}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    return podman(*args, str(ROOT))


def run_flags() -> list[str]:
    """How a container is started here. runc where it is installed (crun refuses hybrid cgroups),
    and limits no higher than this machine's (a sandbox without CAP_SYS_RESOURCE cannot raise them)."""
    flags = ["--runtime", "runc"] if shutil.which("runc") else []
    return [*flags, "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096"]
