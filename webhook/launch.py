"""How a container gets to ``llama-server``: what the kubelet execs, and where settings can go.

The kubelet execs ``command`` + ``args`` when ``command`` is set, else the image's
entrypoint + ``args`` (known for the official images, :mod:`webhook.images`), both
``$(VAR)``-expanded (:mod:`webhook.expansion`). From that argv:

* ``llama-server ...`` (any path), ``llama serve ...`` (the unified binary) and the
  ``full`` images' ``tools.sh --server ...`` run llama-server directly: settings are
  appended to ``args`` as separate tokens;
* ``sh -c "... llama-server ..."`` and a wrapper whose own arguments include
  ``llama-server ...`` (``ramalama-serve-core``, ``tini --``, ``env X=1``) run it
  through something the webhook does not rewrite: the options after the
  ``llama-server`` word are read, and settings go through ``LLAMA_ARG_*`` variables,
  which every wrapper passes on;
* anything else is llama.cpp only when the ``container`` annotation says so. An image
  whose entrypoint is unknown, started with option-only ``args``, is then taken to
  have llama-server as its entrypoint (the usual custom-image layout); a command the
  webhook cannot read (``/start.sh``) gets its settings through ``LLAMA_ARG_*``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from webhook.expansion import Environment, expand_all, expand_shell_word
from webhook.images import Image

Channel = Literal["args", "env"]
How = Literal["direct", "shell", "wrapper", "assumed", "opaque"]

SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh"})
_SHELL_SEPARATORS = frozenset({";", "&&", "||", "|", "&", ";;", "(", ")", "<", ">", ">>", "\n"})


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Launch:
    """How a container starts llama.cpp.

    ``option_tokens`` are the llama-server options visible in the container spec,
    expanded as the process receives them (for a shell script or a wrapper, those
    after the ``llama-server`` word, read-only). ``channel`` says where injected
    settings go. ``argv`` is what the kubelet execs, when it is known.
    """

    channel: Channel
    option_tokens: tuple[str, ...]
    how: How
    argv: tuple[str, ...] | None = None
    repeated_entrypoint: str | None = None  # args start with the program the image's entrypoint already is

    @property
    def recognised(self) -> bool:
        """False: only the annotation says this is llama.cpp; the command is not understood."""
        return self.how != "opaque"


def _basename(token: str) -> str:
    return token.rsplit("/", 1)[-1]


def direct_options(argv: Sequence[str]) -> list[str] | None:
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


def shell_script(argv: Sequence[str]) -> str | None:
    """The script of ``sh -c SCRIPT`` (also ``bash -ec``, ``sh -e -c``), else None."""
    if not argv or _basename(argv[0]) not in SHELLS:
        return None
    reads_command = False
    for index in range(1, len(argv)):
        token = argv[index]
        if token.startswith("-") and not token.startswith("--"):
            reads_command = reads_command or "c" in token
            continue
        return token if reads_command else None
    return None


def script_options(script: str, environment: Environment) -> list[str] | None:
    """The options after the first llama-server word of a shell script, best effort."""
    lexer = shlex.shlex(script.replace("\\\n", " "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        words = list(lexer)
    except ValueError:
        return None
    for position in range(len(words)):
        options = direct_options(words[position:])
        if options is not None:
            end = next((i for i, w in enumerate(options) if w in _SHELL_SEPARATORS), len(options))
            return [expand_shell_word(word, environment) for word in options[:end]]
    return None


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value


def exec_argv(container: Mapping[str, Any], image: Image, environment: Environment) -> tuple[list[str] | None, str | None]:
    """(what the kubelet execs, the program ``args`` needlessly repeat) -- argv None when unknowable."""
    command = _strings(container.get("command"))
    args = _strings(container.get("args"))
    if command is None or args is None:
        return None, None
    expanded_command = expand_all(command, environment) or []
    expanded_args = expand_all(args, environment) or []
    if expanded_command:
        return expanded_command + expanded_args, None
    entrypoint = image.entrypoint
    if entrypoint is not None:
        repeated = None
        if expanded_args and not expanded_args[0].startswith("-") and _basename(expanded_args[0]) == _basename(entrypoint[0]):
            repeated = expanded_args[0]
        return [*entrypoint, *expanded_args], repeated
    if expanded_args and not expanded_args[0].startswith("-"):
        first = _basename(expanded_args[0])
        if first in ("llama-server", "llama") or first in SHELLS or "/" in expanded_args[0]:
            return expanded_args, None  # an image without ENTRYPOINT: args replace its CMD
    return None, None


def detect_launch(container: Mapping[str, Any], image: Image, environment: Environment, named: bool = False) -> Launch | None:
    """How this container runs llama.cpp, or None when it does not seem to.

    ``named``: the pod's container annotation points at this container, so an
    argv the webhook does not understand still counts.
    """
    argv, repeated = exec_argv(container, image, environment)
    if argv is not None:
        options = direct_options(argv)
        if options is not None:
            return Launch("args", tuple(options), "direct", tuple(argv), repeated)
        script = shell_script(argv)
        if script is not None:
            script_opts = script_options(script, environment)
            if script_opts is not None:
                return Launch("env", tuple(script_opts), "shell", tuple(argv))
        else:
            for position in range(1, len(argv)):
                wrapped = direct_options(argv[position:])
                if wrapped is not None:
                    return Launch("env", tuple(wrapped), "wrapper", tuple(argv))
    if not named:
        return None
    args = _strings(container.get("args"))
    if argv is None and not _strings(container.get("command")) and args is not None:
        # The annotation names a container whose image's entrypoint is unknown, started
        # with options alone: the usual custom-image layout has llama-server as entrypoint.
        return Launch("args", tuple(expand_all(args, environment) or ()), "assumed")
    return Launch("env", (), "opaque", tuple(argv) if argv is not None else None)
