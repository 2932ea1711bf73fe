"""Run a pod's llama.cpp container, as the webhook admitted it, with a real llama-server here."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests import kubelet
from tests.harness import ROOT, background, free_port
from webhook.llamacpp import option_table

BUILD_SCRIPT = ROOT / "tests" / "e2e" / "build_llama_server.sh"


def build_llama_server() -> Path:
    """The cached build directory (bin/llama-server, models/), building it when missing."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"llama-server build failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _spellings(*keys: str) -> set[str]:
    return {spelling for key in keys for spelling in option_table().by_key(key).spellings}


MODEL, PORT, HOST = _spellings("LLAMA_ARG_MODEL"), _spellings("LLAMA_ARG_PORT"), _spellings("LLAMA_ARG_HOST")
# Where the model comes from: all of them become the tiny model here.
MODEL_SOURCES = _spellings("LLAMA_ARG_MODEL", "LLAMA_ARG_HF_REPO", "LLAMA_ARG_MODEL_URL", "LLAMA_ARG_DOCKER_REPO")
# Options naming files this machine does not have (a projector, adapters, a draft model, a
# chat template file, a Hugging Face file inside a repo): dropped with their value.
DROPPED = _spellings(
    "LLAMA_ARG_HF_FILE",
    "LLAMA_ARG_MMPROJ",
    "LLAMA_ARG_MMPROJ_URL",
    "LLAMA_ARG_SPEC_DRAFT_MODEL",
    "LLAMA_ARG_SPEC_DRAFT_HF_REPO",
    "LLAMA_ARG_CHAT_TEMPLATE_FILE",
    "LLAMA_ARG_SPEC_TYPE",
) | {"--lora", "--lora-scaled", "--mmproj-auto", "--no-mmproj"}
ROUTER_SOURCES = _spellings("LLAMA_ARG_MODELS_PRESET", "LLAMA_ARG_MODELS_DIR")
DROPPED_ENV = ("LLAMA_ARG_HF_REPO", "LLAMA_ARG_HF_FILE", "LLAMA_ARG_MODEL_URL", "LLAMA_ARG_MMPROJ", "LLAMA_API_KEY")


def localise(options: Sequence[str], model: Path, port: int, router_preset: Path | None = None) -> list[str]:
    """The same options with the model, host and port pointed at this machine: the one swap
    both sides of a comparison make (files this machine lacks are dropped with their value)."""
    table = option_table()
    out: list[str] = []
    index = 0
    seen = set()
    while index < len(options):
        token = options[index]
        spec = table.lookup(token)
        width = spec.n_values if spec else 0
        values = list(options[index + 1 : index + 1 + width])
        index += 1 + width
        if token in DROPPED:
            continue
        if token in MODEL_SOURCES:
            if "model" not in seen:
                out += ["-m", str(model)]
            seen.add("model")
            continue
        if token in ROUTER_SOURCES:
            assert router_preset is not None, "a router needs a preset here"
            out += ["--models-preset", str(router_preset)]
            seen.add("router")
            continue
        for spellings, value, name in ((PORT, str(port), "port"), (HOST, "127.0.0.1", "host")):
            if token in spellings:
                values = [value]
                seen.add(name)
        out += [token, *values]
    if "model" not in seen and "router" not in seen and router_preset is None:
        out += ["-m", str(model)]
    if router_preset is not None and "router" not in seen:
        out += ["--models-preset", str(router_preset)]
    if "port" not in seen:
        out += ["--port", str(port)]
    if "host" not in seen:
        out += ["--host", "127.0.0.1"]
    return out


class NotRunnableHere(Exception):
    """The container starts something this machine does not have (a wrapper script, the unified binary, a fork)."""


def unknown_options(options: Sequence[str]) -> list[str]:
    table, unknown, index = option_table(), [], 0
    while index < len(options):
        token = options[index]
        spec = table.lookup(token.split("=")[0]) if token.startswith("-") else None
        if token.startswith("-") and spec is None:
            unknown.append(token)
        index += 1 + (spec.n_values if spec and "=" not in token else 0)
    return unknown


@dataclass(frozen=True)
class LocalLaunch:
    argv: list[str]
    env: dict[str, str]
    router_model: str | None  # the model name to ask a router for


ROUTER_MODEL = "tiny"


def local_launch(
    container: dict[str, Any],
    binary: Path,
    model: Path,
    port: int,
    workdir: Path | None = None,
    config_maps: dict[str, dict[str, str]] | None = None,
) -> LocalLaunch:
    """The container's process as the kubelet would start it (tests/kubelet.py), made to run here."""
    process = kubelet.process(container, config_maps)
    env = {k: str(v) for k, v in process.env.items() if v is not kubelet.HIDDEN and k not in DROPPED_ENV}
    env.pop("LLAMA_ARG_PORT", None), env.pop("LLAMA_ARG_HOST", None)
    options = process.server_options
    if options is None:
        raise NotRunnableHere(" ".join(str(t) for t in process.argv[:2]))
    if any(o is kubelet.HIDDEN for o in options):
        raise NotRunnableHere("an argument comes from a Secret or ConfigMap this test does not have")
    unknown = unknown_options([str(o) for o in options])
    if unknown:
        raise NotRunnableHere(f"options this llama-server build does not know (a fork, or an older pinned build): {' '.join(unknown)}")
    names_model = any(o in MODEL_SOURCES for o in options) or any(k in env for k in ("LLAMA_ARG_MODEL",))
    router = not names_model and not any(k in process.env for k in ("LLAMA_ARG_HF_REPO", "LLAMA_ARG_MODEL_URL"))
    preset = None
    if router:
        assert workdir is not None
        preset = workdir / "presets.ini"
        preset.write_text(f"version = 1\n\n[{ROUTER_MODEL}]\nmodel = {model}\nload-on-startup = true\n")
    if not router and "LLAMA_ARG_MODEL" not in env and any(k in process.env for k in ("LLAMA_ARG_HF_REPO", "LLAMA_ARG_MODEL_URL")):
        env["LLAMA_ARG_MODEL"] = str(model)
    local = localise([str(o) for o in options], model, port, preset)
    if "LLAMA_ARG_MODEL" in env and "-m" in local and not names_model:
        local = [t for i, t in enumerate(local) if not (t == "-m" or (i and local[i - 1] == "-m"))]
    return LocalLaunch([str(binary), *local], env, ROUTER_MODEL if router else None)


@dataclass
class RunningLlama:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, {}


def wait_healthy(server: RunningLlama, timeout: float = 60, model: str | None = None) -> bool:
    """Until the server (for a router: the model it loads on startup) answers /health."""
    deadline = time.monotonic() + timeout
    health = server.url + "/health" + (f"?model={model}" if model else "")
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if http_json(health, timeout=2)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


@contextmanager
def llama_process(argv: list[str], env: dict[str, str], port: int, log_path: Path) -> Iterator[RunningLlama]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    with background(argv, log_path, {**clean, **env}, grace=10) as process:
        yield RunningLlama(process, port, log_path)


def start_container(
    container: dict[str, Any], binary: Path, model: Path, log_path: Path, config_maps: dict[str, dict[str, str]] | None = None
) -> tuple[Any, LocalLaunch]:
    port = free_port()
    launch = local_launch(container, binary, model, port, log_path.parent, config_maps)
    return llama_process(launch.argv, launch.env, port, log_path), launch
