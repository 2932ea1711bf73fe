"""llama-server's options: which tokens of an argv set which option, and to what.

The argv is walked with the arity table copied from the real parser
(``data/llama-server-args.tsv``), so the token after a value-taking option is its
value even when it starts with ``-``; every ``LLAMA_ARG_*`` variable is matched to
the option it sets. How a container gets to ``llama-server`` in the first place is
:mod:`webhook.launch`'s business.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal, NamedTuple

from webhook.expansion import Environment, Opaque

Channel = Literal["args", "env"]

# Keys of the options this project reads or writes (the option's env name).
GPU_LAYERS = "LLAMA_ARG_N_GPU_LAYERS"
SPLIT_MODE = "LLAMA_ARG_SPLIT_MODE"
TENSOR_SPLIT = "LLAMA_ARG_TENSOR_SPLIT"
MAIN_GPU = "LLAMA_ARG_MAIN_GPU"
DEVICE = "LLAMA_ARG_DEVICE"
FIT = "LLAMA_ARG_FIT"
FLASH_ATTN = "LLAMA_ARG_FLASH_ATTN"
RPC = "LLAMA_ARG_RPC"
MODEL = "LLAMA_ARG_MODEL"
MODEL_URL = "LLAMA_ARG_MODEL_URL"
HF_REPO = "LLAMA_ARG_HF_REPO"
DOCKER_REPO = "LLAMA_ARG_DOCKER_REPO"
MODELS_DIR = "LLAMA_ARG_MODELS_DIR"
MODELS_PRESET = "LLAMA_ARG_MODELS_PRESET"

# Any of these names the one model a single-model server loads; without any of
# them llama-server starts as a router (tools/server/README.md, "Using multiple models").
MODEL_KEYS = (MODEL, MODEL_URL, HF_REPO, DOCKER_REPO)

# The spelling we inject for each key: the long form every llama.cpp build knows.
INJECTED_SPELLING = {
    GPU_LAYERS: "--n-gpu-layers",
    SPLIT_MODE: "--split-mode",
    TENSOR_SPLIT: "--tensor-split",
    FIT: "--fit",
    RPC: "--rpc",  # a multi-node group's leader (webhook.multinode)
}

# Options that only mean something when the container has a GPU.
GPU_ONLY_KEYS = (GPU_LAYERS, SPLIT_MODE, TENSOR_SPLIT, MAIN_GPU, DEVICE)

SPLIT_MODES = ("none", "layer", "row", "tensor")
MAX_TENSOR_SPLIT_VALUES = 15  # llama.cpp's LLAMA_MAX_DEVICES-bound parser limit


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One row of the llama-server option table."""

    spellings: tuple[str, ...]
    n_values: int
    env: str | None
    # Stable identity: the env name when there is one, else the first long spelling.
    key: str = field(init=False)

    def __post_init__(self) -> None:
        key = self.env or next((s for s in self.spellings if s.startswith("--")), self.spellings[0])
        object.__setattr__(self, "key", key)  # computed once: read for every option of every admission


class OptionTable:
    """Lookup of every llama-server spelling, including ``--x_y`` underscore forms."""

    def __init__(self, specs: Iterable[OptionSpec]) -> None:
        self.specs = tuple(specs)
        self._by_spelling: dict[str, OptionSpec] = {}
        self._by_key: dict[str, OptionSpec] = {}
        self._by_env = {spec.env: spec for spec in self.specs if spec.env}
        for spec in self.specs:
            self._by_key.setdefault(spec.key, spec)
            for spelling in spec.spellings:
                self._by_spelling.setdefault(spelling, spec)

    def lookup(self, token: str) -> OptionSpec | None:
        spec = self._by_spelling.get(token)
        if spec is None and token.startswith("--") and "_" in token:
            spec = self._by_spelling.get("--" + token[2:].replace("_", "-"))
        return spec

    def by_key(self, key: str) -> OptionSpec:
        return self._by_key[key]

    def env_names(self) -> dict[str, OptionSpec]:
        return self._by_env


def parse_option_table(text: str) -> OptionTable:
    """Read the TSV table (section, flags, n_values, value_hint, env)."""
    specs = []
    for line in text.splitlines()[1:]:
        columns = line.split("\t")
        if len(columns) < 5:
            continue
        spellings = tuple(s.strip() for s in columns[1].split(",") if s.strip().startswith("-"))
        if not spellings or not columns[2].strip().isdigit():
            continue  # rows the README scraper took from prose, not options
        specs.append(OptionSpec(spellings, int(columns[2]), columns[4].strip() or None))
    return OptionTable(specs)


@functools.cache
def option_table() -> OptionTable:
    """The table shipped in the package (a copy of shared/llama-server/args.tsv)."""
    text = resources.files("webhook").joinpath("data/llama-server-args.tsv").read_text(encoding="utf-8")
    return parse_option_table(text)


class Option(NamedTuple):  # a tuple: built for every option of every admission
    """One option as written in an argv."""

    key: str
    spelling: str
    values: tuple[str, ...]
    inline: bool  # written ``--flag=value``, which llama-server refuses
    complete: bool = True  # False: the argv ended before the option's value


def parse_options(tokens: Sequence[str], table: OptionTable | None = None) -> list[Option]:
    """Walk llama-server's argv (without the program name) the way its parser does.

    Unknown tokens are skipped rather than rejected: llama-server reports those
    itself, and this project only judges the GPU options.
    """
    return [Option(*found) for found in _walk(tokens, table or option_table())]


def _walk(tokens: Sequence[str], table: OptionTable) -> Iterator[tuple[str, str, tuple[str, ...], bool, bool]]:
    """:func:`parse_options` as plain tuples (key, spelling, values, inline, complete): read_settings's hot path."""
    index = 0
    count = len(tokens)
    while index < count:
        token = tokens[index]
        index += 1
        if not token or token[0] != "-":
            continue
        spec = table.lookup(token)
        if spec is not None:
            n_values = spec.n_values
            values = tuple(tokens[index : index + n_values])
            index += n_values
            yield spec.key, token, values, False, len(values) == n_values
            continue
        name, equals, value = token.partition("=")
        spec = table.lookup(name) if equals else None
        if spec is not None:
            if isinstance(token, Opaque):  # the value part is what the kubelet fills in
                value = Opaque(value, token.source)
            yield spec.key, name, (value,), True, True


class Setting(NamedTuple):
    """An option's value as the container sets it, and where."""

    key: str
    value: str | None  # None: filled in by the kubelet from something admission cannot see
    source: Literal["args", "env"]
    spelling: str  # the flag as written, or the env var name
    inline: bool = False
    hidden_in: str | None = None  # where the value comes from when it is None (a Secret, a ConfigMap)


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class ContainerSettings:
    """The options a container sets on its command line and through LLAMA_ARG_* env."""

    argv: dict[str, Setting]
    env: dict[str, Setting]
    inline: tuple[Setting, ...] = ()
    incomplete: tuple[Setting, ...] = ()  # options missing their value at the end of argv

    def effective(self, key: str) -> Setting | None:
        """llama.cpp's precedence: command line over env."""
        return self.argv.get(key) or self.env.get(key)


def _setting(key: str, value: str | None, source: Literal["args", "env"], spelling: str, inline: bool = False) -> Setting:
    if isinstance(value, Opaque):
        return Setting(key, None, source, spelling, inline, value.source)
    return Setting(key, value, source, spelling, inline)


def read_settings(option_tokens: Sequence[str], environment: Environment, table: OptionTable | None = None) -> ContainerSettings:
    """Every option the argv sets (the last of repeated ones wins, as in llama-server) and every LLAMA_ARG_* variable."""
    table = table or option_table()
    argv: dict[str, Setting] = {}
    inline: list[Setting] = []
    incomplete: list[Setting] = []
    for key, spelling, values, is_inline, complete in _walk(option_tokens, table):
        value = values[0] if values else None
        if isinstance(value, Opaque):
            setting = Setting(key, None, "args", spelling, is_inline, value.source)
        else:
            setting = Setting(key, value, "args", spelling, is_inline)
        if not complete:
            incomplete.append(setting)
            continue
        argv[key] = setting
        if is_inline:
            inline.append(setting)
    by_env = table.env_names()
    from_env: dict[str, Setting] = {}
    for name in environment.names():
        spec = by_env.get(name)
        if spec is not None:
            from_env[spec.key] = _setting(spec.key, environment.values[name], "env", name)
    return ContainerSettings(argv, from_env, tuple(inline), tuple(incomplete))
