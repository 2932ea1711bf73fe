"""Fixtures of the e2e tier: the real llama-server (built once per machine), a tiny model,
and webhooks configured like each scenario needs."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.e2e.llama import build_llama_server
from tests.e2e.tiny_model import write_tiny_model
from tests.harness import RunningServer, running_server
from webhook.config import SETTINGS, Config


@pytest.fixture(scope="session")
def llama_build() -> Path:
    return build_llama_server()


@pytest.fixture(scope="session")
def llama_binary(llama_build: Path) -> Path:
    return llama_build / "bin" / "llama-server"


@pytest.fixture(scope="session")
def tiny_model(llama_build: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(llama_build / "models" / "ggml-vocab-llama-spm.gguf", tmp_path_factory.mktemp("model") / "tiny.gguf")


def config_env(config: Config) -> dict[str, str]:
    """GSW_* variables that make a server decide like ``config``."""
    env = {}
    for setting in SETTINGS:
        value = getattr(config, setting.name)
        if value == getattr(Config(), setting.name):
            continue
        env[setting.env] = ",".join(value) if isinstance(value, tuple) else str(value).lower() if isinstance(value, bool) else str(value)
    return env


class Webhooks:
    """One running webhook per distinct Config, started on first use."""

    def __init__(self, stack: ExitStack, root: Path) -> None:
        self.stack, self.root, self.servers = stack, root, {}

    def for_config(self, config: Config) -> RunningServer:
        key = tuple(sorted(dataclasses.asdict(config).items()))
        if key not in self.servers:
            directory = self.root / f"webhook-{len(self.servers)}"
            directory.mkdir()
            self.servers[key] = self.stack.enter_context(running_server(directory, env=config_env(config)))
        return self.servers[key]


@pytest.fixture(scope="session")
def webhooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhooks]:
    with ExitStack() as stack:
        yield Webhooks(stack, tmp_path_factory.mktemp("webhooks"))
