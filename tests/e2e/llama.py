"""Run a pod's llama.cpp container, as the webhook admitted it, with a real llama-server here."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.harness import ROOT, background, free_port
from webhook.llamacpp import SHELLS, image_flavour, option_table

BUILD_SCRIPT = ROOT / "tests" / "e2e" / "build_llama_server.sh"


def build_llama_server() -> Path:
    """The cached build directory (bin/llama-server, models/), building it when missing."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600)
    if result.returncode != 0:
        raise RuntimeError(f"llama-server build failed:\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _spellings(key: str) -> set[str]:
    return set(option_table().by_key(key).spellings)


MODEL, PORT, HOST = _spellings("LLAMA_ARG_MODEL"), _spellings("LLAMA_ARG_PORT"), _spellings("LLAMA_ARG_HOST")


def localise(options: Sequence[str], model: Path, port: int) -> list[str]:
    """The same options with the model, host and port pointed at this machine."""
    out = list(options)
    seen = set()
    for index, token in enumerate(out[:-1]):
        for spellings, value, name in ((MODEL, str(model), "model"), (PORT, str(port), "port"), (HOST, "127.0.0.1", "host")):
            if token in spellings:
                out[index + 1] = value
                seen.add(name)
    if "model" not in seen:
        out += ["-m", str(model)]
    if "port" not in seen:
        out += ["--port", str(port)]
    if "host" not in seen:
        out += ["--host", "127.0.0.1"]
    return out


class NotRunnableHere(Exception):
    """The container starts something this machine does not have (a wrapper script, the unified binary)."""


def local_launch(container: dict[str, Any], binary: Path, model: Path, port: int) -> tuple[list[str], dict[str, str]]:
    """The container's final argv and env, made to run here: image entrypoint, env vars included."""
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or [] if "valueFrom" not in e}
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if not command:
        flavour = image_flavour(container.get("image"))
        command = ["/app/tools.sh"] if flavour == "full" else ["/app/llama-server"]
    argv = command + args
    program = argv[0].rsplit("/", 1)[-1]
    if program in SHELLS:
        words = shlex.split(argv[2])
        start = next(i for i, w in enumerate(words) if w.rsplit("/", 1)[-1] == "llama-server")
        end = next((i for i, w in enumerate(words) if w in ("&&", "||", ";", "|") and i > start), len(words))
        server = [str(binary), *localise(words[start + 1 : end], model, port)]
        script = shlex.join([*words[:start], *server, *words[end:]])
        return [argv[0], argv[1], script], env
    if program == "tools.sh":
        return [str(binary), *localise(argv[2:], model, port)], env
    if program == "llama-server":
        return [str(binary), *localise(argv[1:], model, port)], env
    raise NotRunnableHere(" ".join(argv[:2]))


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


def wait_healthy(server: RunningLlama, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if http_json(server.url + "/health", timeout=2)[0] == 200:
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


def start_container(container: dict[str, Any], binary: Path, model: Path, log_path: Path) -> Any:
    port = free_port()
    argv, env = local_launch(container, binary, model, port)
    return llama_process(argv, env, port, log_path)
