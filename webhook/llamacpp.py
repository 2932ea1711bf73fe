"""A model of how a container starts llama.cpp's ``llama-server``.

Two questions are answered here, both without guessing:

* which tokens of a container's argv are ``llama-server`` options, and which
  option each one sets: the argv is walked with the arity table copied from
  the real parser (``data/llama-server-args.tsv``), so the token after a
  value-taking option is its value even when it starts with ``-``;
* how the container launches llama.cpp: directly (``llama-server ...``, the
  official images' entrypoint, ``/app/llama serve``, ``full`` images with
  ``--server``), or through something we cannot rewrite (``sh -c "..."``, a
  wrapper script) where ``LLAMA_ARG_*`` environment variables are the only
  reliable channel.
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

Channel = Literal["args", "env"]

# Keys of the options this project reads or writes (the option's env name).
GPU_LAYERS = "LLAMA_ARG_N_GPU_LAYERS"
SPLIT_MODE = "LLAMA_ARG_SPLIT_MODE"
TENSOR_SPLIT = "LLAMA_ARG_TENSOR_SPLIT"
MAIN_GPU = "LLAMA_ARG_MAIN_GPU"
DEVICE = "LLAMA_ARG_DEVICE"
FIT = "LLAMA_ARG_FIT"
FLASH_ATTN = "LLAMA_ARG_FLASH_ATTN"

# The spelling we inject for each key: the long form every llama.cpp build knows.
INJECTED_SPELLING = {
    GPU_LAYERS: "--n-gpu-layers",
    SPLIT_MODE: "--split-mode",
    TENSOR_SPLIT: "--tensor-split",
    FIT: "--fit",
}

# Options that only mean something when the container has a GPU.
GPU_ONLY_KEYS = (GPU_LAYERS, SPLIT_MODE, TENSOR_SPLIT, MAIN_GPU, DEVICE)

SPLIT_MODES = ("none", "layer", "row", "tensor")
MAX_TENSOR_SPLIT_VALUES = 15  # llama.cpp's LLAMA_MAX_DEVICES-bound parser limit

SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh"})
SERVER_BINARIES = frozenset({"llama-server", "server"})
_IMAGE = re.compile(r"^ghcr\.io/(?:ggml-org|ggerganov)/llama\.cpp:(?P<tag>[^@]+)(?:@.*)?$")
_SHELL_SEPARATORS = frozenset({";", "&&", "||", "|", "&", ";;", "(", ")", "<", ">", ">>"})


@dataclass(frozen=True)
class OptionSpec:
    """One row of the llama-server option table."""

    spellings: tuple[str, ...]
    n_values: int
    env: str | None

    @property
    def key(self) -> str:
        """Stable identity: the env name when there is one, else the first long spelling."""
        return self.env or next((s for s in self.spellings if s.startswith("--")), self.spellings[0])


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


@dataclass(frozen=True)
class Option:
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
    table = table or option_table()
    options: list[Option] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if not token.startswith("-"):
            continue
        spec = table.lookup(token)
        if spec is not None:
            values = tuple(tokens[index : index + spec.n_values])
            index += spec.n_values
            options.append(Option(spec.key, token, values, inline=False, complete=len(values) == spec.n_values))
            continue
        name, equals, value = token.partition("=")
        spec = table.lookup(name) if equals else None
        if spec is not None:
            options.append(Option(spec.key, name, (value,), inline=True))
    return options


def last_option(options: Sequence[Option], key: str) -> Option | None:
    """llama-server keeps the last of repeated options."""
    for option in reversed(options):
        if option.key == key:
            return option
    return None


@dataclass(frozen=True)
class Launch:
    """How a container starts llama.cpp.

    ``option_tokens`` are the llama-server options visible in the container spec
    (for a shell script, those after the ``llama-server`` word, read-only).
    ``channel`` says where injected settings go: ``args`` (appended tokens) or
    ``env`` (``LLAMA_ARG_*`` variables), the latter whenever the argv cannot be
    rewritten safely.
    """

    channel: Channel
    option_tokens: tuple[str, ...]
    recognised: bool  # False: only named by annotation, argv not understood


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value


def image_flavour(image: Any) -> str | None:
    """'server' or 'full' for the official llama.cpp images, else None."""
    if not isinstance(image, str):
        return None
    match = _IMAGE.match(image)
    if match is None:
        return None
    tag = match.group("tag")
    for flavour in ("server", "full"):
        if tag.startswith(flavour):
            return flavour
    return None


def _basename(token: str) -> str:
    return token.rsplit("/", 1)[-1]


def _direct_options(argv: Sequence[str]) -> list[str] | None:
    """The option tokens when ``argv`` itself runs llama-server, else None."""
    if not argv:
        return None
    program = _basename(argv[0])
    if program == "llama-server":
        return list(argv[1:])
    if program == "llama" and len(argv) > 1 and argv[1] == "serve":
        return list(argv[2:])
    if program == "tools.sh" and len(argv) > 1 and argv[1] in ("--server", "-s"):
        return list(argv[2:])
    return None


def _shell_script(argv: Sequence[str]) -> str | None:
    if len(argv) >= 3 and _basename(argv[0]) in SHELLS and argv[1].startswith("-") and "c" in argv[1]:
        return argv[2]
    return None


def _script_options(script: str) -> list[str] | None:
    """Options after the first llama-server word of a shell script, best effort."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError:
        return None
    for position in range(len(words)):
        options = _direct_options(words[position:])
        if options is not None:
            end = next((i for i, w in enumerate(options) if w in _SHELL_SEPARATORS), len(options))
            return options[:end]
    return None


def detect_launch(container: Any, named: bool = False) -> Launch | None:
    """How this container runs llama.cpp, or None when it does not seem to.

    ``named``: the pod's container annotation points at this container, so an
    argv we do not understand still counts (settings then go through env).
    """
    if not isinstance(container, dict):
        return None
    command = _strings(container.get("command"))
    args = _strings(container.get("args"))
    flavour = image_flavour(container.get("image"))
    if command is None or args is None:
        return Launch("env", (), recognised=False) if named or flavour == "server" else None

    if command:
        argv = command + args
        options = _direct_options(argv)
        if options is not None:
            return Launch("args", tuple(options), recognised=True)
        script = _shell_script(argv)
        if script is not None:
            script_options = _script_options(script)
            if script_options is not None:
                return Launch("env", tuple(script_options), recognised=True)
    else:
        if flavour == "server":
            return Launch("args", tuple(args), recognised=True)
        if flavour == "full" and args[:1] in (["--server"], ["-s"]):
            return Launch("args", tuple(args[1:]), recognised=True)
        if named:
            # An image we do not know, started by its own entrypoint: assume that
            # entrypoint is llama-server (the usual custom-image layout).
            return Launch("args", tuple(args), recognised=True)
    if named or flavour == "server":
        return Launch("env", (), recognised=False)
    return None


@dataclass(frozen=True)
class Setting:
    """An option's value as the container sets it, and where."""

    key: str
    value: str | None  # None: an env var from valueFrom, unknown at admission
    source: Literal["args", "env"]
    spelling: str  # the flag as written, or the env var name
    inline: bool = False


@dataclass(frozen=True)
class ContainerSettings:
    """The options a container sets on its command line and through LLAMA_ARG_* env."""

    argv: dict[str, Setting]
    env: dict[str, Setting]
    inline: tuple[Setting, ...]
    incomplete: tuple[Setting, ...]  # options missing their value at the end of argv

    def effective(self, key: str) -> Setting | None:
        """llama.cpp's precedence: command line over env."""
        return self.argv.get(key) or self.env.get(key)


def read_settings(launch: Launch, env: Any, table: OptionTable | None = None) -> ContainerSettings:
    table = table or option_table()
    argv: dict[str, Setting] = {}
    inline: list[Setting] = []
    incomplete: list[Setting] = []
    for option in parse_options(launch.option_tokens, table):
        value = option.values[0] if option.values else None
        setting = Setting(option.key, value, "args", option.spelling, option.inline)
        if not option.complete:
            incomplete.append(setting)
            continue
        argv[option.key] = setting  # the last one wins, as in llama-server
        if option.inline:
            inline.append(setting)
    by_env = table.env_names()
    from_env: dict[str, Setting] = {}
    for variable in env if isinstance(env, list) else ():
        if not isinstance(variable, dict) or not isinstance(variable.get("name"), str):
            continue
        spec = by_env.get(variable["name"])
        if spec is None:
            continue
        value = variable.get("value")
        known = None if "valueFrom" in variable else ("" if value is None else str(value))
        from_env[spec.key] = Setting(spec.key, known, "env", variable["name"])
    return ContainerSettings(argv, from_env, tuple(inline), tuple(incomplete))


def env_value(env: Any, name: str) -> str | None:
    """The literal value of an env var (the last one wins, as in the kubelet); None when unset or valueFrom."""
    found: str | None = None
    for variable in env if isinstance(env, list) else ():
        if isinstance(variable, dict) and variable.get("name") == name:
            value = variable.get("value")
            found = None if "valueFrom" in variable else ("" if value is None else str(value))
    return found
