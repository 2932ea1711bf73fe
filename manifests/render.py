"""Render the kustomize base (and the monitoring alerts) from the Helm chart: one source of truth.

The chart (``charts/gpu-shard-webhook``) is what is edited; ``manifests/base/*.yaml`` other than
``kustomization.yaml``, and ``manifests/monitoring/prometheusrule.yaml``, are written by this
script with ``certificates.mode=none`` (the overlays add the Secret and the caBundle) and without
Helm's own labels. ``tests/test_chart.py`` renders again and fails when a committed file differs.

    python manifests/render.py            # rewrite the files
    python manifests/render.py --check    # exit 1 and name the files that differ
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "gpu-shard-webhook"
BASE = ROOT / "manifests" / "base"
MONITORING = ROOT / "manifests" / "monitoring"
NAMESPACE = "gpu-shard-system"
KUBE_VERSION = "1.30.0"  # the oldest the chart supports: what renders here renders everywhere
HEADER = "# Rendered from charts/gpu-shard-webhook by `python manifests/render.py`: edit the chart, then run it.\n"
BASE_VALUES = ["certificates.mode=none", "helmLabels=false", "namespace.create=true"]
SOURCE = re.compile(r"^# Source: gpu-shard-webhook/templates/(?P<file>[^\n]+)\n", re.MULTILINE)


def helm() -> str:
    built = subprocess.run(["bash", str(ROOT / "tests" / "helm" / "build.sh")], capture_output=True, text=True, check=True)
    return built.stdout.strip().splitlines()[-1]


def template(binary: str, values: list[str], show_only: str | None = None) -> str:
    argv = [binary, "template", "gpu-shard-webhook", str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    for value in values:
        argv += ["--set", value]
    if show_only:
        argv += ["--show-only", show_only]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def split_by_template(rendered: str) -> dict[str, str]:
    """file name -> its documents, in the order helm wrote them, without helm's Source lines."""
    files: dict[str, list[str]] = {}
    for document in rendered.split("\n---\n"):
        document = document.removeprefix("---\n")
        match = SOURCE.search(document)
        if match is None:
            continue
        body = SOURCE.sub("", document).strip("\n")
        files.setdefault(match["file"], []).append(body)
    return {name: HEADER + "\n---\n".join(bodies) + "\n" for name, bodies in files.items()}


def rendered_files(binary: str) -> dict[Path, str]:
    files = {BASE / name: text for name, text in split_by_template(template(binary, BASE_VALUES)).items()}
    rules = template(binary, [*BASE_VALUES, "monitoring.prometheusRule.enabled=true"], "templates/prometheusrule.yaml")
    files.update({MONITORING / "prometheusrule.yaml": text for text in split_by_template(rules).values()})
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare only")
    args = parser.parse_args(argv)
    files = rendered_files(helm())
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    rendered_here = {path.name for path in files if path.parent == BASE} | {"kustomization.yaml"}
    orphans = [path for path in BASE.glob("*.yaml") if path.name not in rendered_here]
    if args.check:
        for path in [*stale, *orphans]:
            print(f"differs from the chart: {path.relative_to(ROOT)}")
        return 1 if stale or orphans else 0
    for path in stale:
        path.write_text(files[path])
        print(f"wrote {path.relative_to(ROOT)}")
    for path in orphans:
        path.unlink()
        print(f"removed {path.relative_to(ROOT)} (no template renders it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
